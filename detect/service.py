"""The detection service (`parceltrack detect`): follows new scans, ticks every
second, persists alert changes, keeps `parcel_eta` and the learned transit times
current, and publishes alerts on MQTT.

For the API it keeps the table `parcel_eta` (one row per active parcel, upserted
for the parcels that moved): `site_id`, `read_point_id`, `stage`, `entered_at`
(where and since when), `next_stage` and `next_due` (the stage expected next and
the delay deadline), `eta` and `eta_p90` (arrival at the site's last stage, from
the median and 90th percentile of stage transit times learned per site, stage and
class in `stage_transit_stats`; the stage standards where fewer than 30 samples
exist), `delivery_due` (accepted + the delivery standard) and `updated_at`.

On start the state is rebuilt by replaying the scans of the last `rebuild_s`
through the same engine, then the alerts live in the database are adopted (marked
open in the state, or resolved if what they were about is over), so a restart
neither loses, duplicates nor re-opens an alert.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import stamina

from detect import store
from detect.core import inactive, refresh
from detect.engine import AlertChange, Engine, ScanBatch
from detect.publish import AlertPublisher
from detect.reference import DetectConfig, Reference
from parceltrack.config import BrokerAddress

log = logging.getLogger(__name__)

# Migration 80's trigger notifies here when any reference table changes.
REFERENCE_CHANNEL = "parceltrack_reference"


@dataclass(frozen=True, slots=True)
class DetectSettings:
    dsn: str
    broker: BrokerAddress | None = None
    tick_s: float = 1.0
    config: DetectConfig = field(default_factory=DetectConfig)
    # Rows commit out of ingested_at order; re-reading this much overlap catches them.
    overlap_s: float = 5.0
    rebuild_s: float = 24 * 3600.0  # how far back a restart replays scans
    eta_flush_s: float = 2.0
    learn_every_s: float = 300.0
    # Changes arrive by LISTEN/NOTIFY within a tick; this poll only picks up what no
    # trigger reports (destinations of new parcels).
    reload_every_s: float = 30.0
    compact_every_s: float = 600.0
    done_after_s: float = 3600.0  # at the last stage this long: no longer active
    idle_after_s: float = 24 * 3600.0  # unseen this long: no longer active


class Detector:
    def __init__(self, settings: DetectSettings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self._watermark = datetime.fromtimestamp(0, UTC)
        self._health_mark = datetime.fromtimestamp(0, UTC)
        self._recent: dict[str, datetime] = {}
        self._layout: tuple[object, ...] = ()
        self.alerts_opened = 0
        self.alerts_resolved = 0
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        publisher = None
        if self.settings.broker is not None:
            publisher = AlertPublisher(self.settings.dsn, self.settings.broker)
            threading.Thread(target=publisher.run, args=(stop,), daemon=True).start()
        self._run(stop)

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def _run(self, stop: threading.Event) -> None:
        with (
            psycopg.connect(self.settings.dsn, autocommit=True) as conn,
            psycopg.connect(self.settings.dsn, autocommit=True) as listen,
        ):
            # Before the state is built: a change made while it is built is not missed.
            listen.execute(f"LISTEN {REFERENCE_CHANNEL}")
            self.start(conn, time.time())
            mono = time.monotonic()
            last = {"eta": 0.0, "learn": mono, "reload": mono, "compact": mono}
            while not stop.is_set():
                started = time.monotonic()
                if _notified(listen):  # standards, windows, plans ... changed: this tick
                    self.reload(conn, time.time())
                    last["reload"] = started
                self.step(conn, time.time())
                if started - last["eta"] >= self.settings.eta_flush_s:
                    self.flush_eta(conn)
                    last["eta"] = started
                if started - last["learn"] >= self.settings.learn_every_s:
                    store.learn_transits(conn)
                    last["learn"] = started
                if started - last["reload"] >= self.settings.reload_every_s:
                    self.reload(conn, time.time())
                    last["reload"] = started
                if started - last["compact"] >= self.settings.compact_every_s:
                    self.compact(time.time())
                    last["compact"] = started
                stop.wait(max(0.0, self.settings.tick_s - (time.monotonic() - started)))

    def _new_engine(self, conn: psycopg.Connection[Any]) -> Engine:
        ref = store.load_reference(conn, self.settings.config)
        self._layout = (ref.sites, ref.read_points, ref.stages, ref.classes, ref.destinations)
        return Engine(
            ref,
            lambda ids: store.manifest_lookup(conn, ids),
            store.load_thresholds(conn),
            site_thresholds=store.load_site_thresholds(conn),
        )

    def start(
        self, conn: psycopg.Connection[Any], now: float, until: datetime | None = None
    ) -> None:
        """Rebuild the state from the scans and adopt the live alerts. With `until`,
        only scans stored by then are replayed: the later ones are new, and the next
        step takes them with every alert they raise (a replay raises none)."""
        engine = self.engine = self._new_engine(conn)
        since = datetime.fromtimestamp(now - self.settings.rebuild_s, UTC)
        replayed = 0
        for rows in store.replay_scans(conn, since):
            if until is not None:
                keep = [i for i, at in enumerate(rows.ingested_at) if at <= until]
                rows = store.ScanRows(
                    _take(rows.batch, keep),
                    [rows.event_ids[i] for i in keep],
                    [rows.ingested_at[i] for i in keep],
                )
            engine.ingest(rows.batch)  # no alert is live in the state yet: nothing resolves
            replayed += len(rows.batch)
            if rows.ingested_at:
                self._watermark = max(self._watermark, max(rows.ingested_at))
        self._heard(conn)
        self.compact(now)
        changes = engine.adopt_live(store.live_alerts(conn), now)
        self._persist(conn, changes)
        log.info("rebuilt state of %d parcels from %d scans", len(engine.state), replayed)
        self.ready.set()

    def reload(self, conn: psycopg.Connection[Any], now: float) -> None:
        """Pick up changed standards, windows and plans; a changed layout rebuilds."""
        assert self.engine is not None
        ref = store.load_reference(conn, self.settings.config)
        layout = (ref.sites, ref.read_points, ref.stages, ref.classes, ref.destinations)
        if layout != self._layout:
            log.info("layout changed: rebuilding the detection state")
            # Replays what was taken so far; scans stored since come in by the next step.
            self.start(conn, now, until=self._watermark)
            return
        self.engine.devices.set_limits(store.load_site_thresholds(conn))
        if _same_numbers(self.engine.ref, ref):
            return  # nothing changed: no need to recompute (and re-publish) every ETA
        self.engine.ref = ref
        state = self.engine.state
        refresh(state, ref, np.arange(state.n, dtype=np.int64))

    def step(self, conn: psycopg.Connection[Any], now: float) -> list[AlertChange]:
        """One tick: new scans in, then every check over every parcel and device."""
        assert self.engine is not None
        changes: list[AlertChange] = []
        since = self._watermark - timedelta(seconds=self.settings.overlap_s)
        rows = store.scans_since(conn, since)
        if rows.event_ids:
            fresh = [i for i, e in enumerate(rows.event_ids) if e not in self._recent]
            for e, at in zip(rows.event_ids, rows.ingested_at, strict=True):
                self._recent[e] = at
            self._watermark = max(self._watermark, max(rows.ingested_at))
            horizon = self._watermark - timedelta(seconds=2 * self.settings.overlap_s)
            self._recent = {e: at for e, at in self._recent.items() if at > horizon}
            if fresh:
                changes += self.engine.ingest(_take(rows.batch, fresh))
                if self.engine.new_ids:  # back after a long absence: adopt its alerts
                    live = store.live_alerts(conn, self.engine.new_ids)
                    changes += self.engine.adopt_live(live, now)
        changes += self._heard(conn)
        changes += self.engine.tick(now)
        self._persist(conn, changes)
        return changes

    def _heard(self, conn: psycopg.Connection[Any]) -> list[AlertChange]:
        assert self.engine is not None
        health = store.device_health_since(conn, self._health_mark)
        if not health:
            return []
        self._health_mark = max(h[3] for h in health)
        return self.engine.heard_from(
            [h[0] for h in health], [h[1] for h in health], np.array([h[2] for h in health])
        )

    def _persist(self, conn: psycopg.Connection[Any], changes: list[AlertChange]) -> None:
        if not changes:
            return
        opened, resolved = store.persist(conn, changes)
        self.alerts_opened += opened
        self.alerts_resolved += resolved
        if opened or resolved:
            log.info("alerts: %d opened, %d resolved", opened, resolved)

    def compact(self, now: float) -> int:
        """Drop parcels that are no longer active from the state; returns how many."""
        assert self.engine is not None
        st = self.engine.state
        gone = inactive(st, self.engine.ref, now, self.settings.done_after_s,
                        self.settings.idle_after_s)  # fmt: skip
        dropped = int(gone.sum())
        if dropped:
            st.compact(~gone)
            log.info("%d parcels no longer active; %d remain", dropped, st.n)
        return dropped

    def flush_eta(self, conn: psycopg.Connection[Any]) -> int:
        assert self.engine is not None
        state = self.engine.state
        slots = np.flatnonzero(state.dirty[: state.n] & (state.rp[: state.n] >= 0))
        tracking = [self.engine.tracking_id(s) for s in slots.tolist()]
        return store.flush_eta(conn, state, self.engine.ref, tracking)


def _notified(listen: psycopg.Connection[Any]) -> bool:
    """Whether the reference data changed since the last call (drains what is queued)."""
    return sum(1 for _ in listen.notifies(timeout=0)) > 0


def _same_numbers(a: Reference, b: Reference) -> bool:
    fields = ("stage_s", "grace_s", "missing_s", "delivery_s", "eta_in_s", "eta_in_p90_s",
              "plan_key", "plan_chute", "plan_door", "skew_s", "gap_s")  # fmt: skip
    return all(
        getattr(a, f).shape == getattr(b, f).shape and np.array_equal(getattr(a, f), getattr(b, f))
        for f in fields
    )


def _take(batch: ScanBatch, rows: list[int]) -> ScanBatch:
    idx = np.array(rows, dtype=np.int64)
    return ScanBatch(
        tracking_id=[batch.tracking_id[i] for i in rows],
        read_point=[batch.read_point[i] for i in rows],
        device=[batch.device[i] for i in rows],
        site=[batch.site[i] for i in rows],
        ts=batch.ts[idx],
        noread=batch.noread[idx],
    )
