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

New scans come from the commit-ordered feed (storage/feed.py): every committed
scan once, however long its transaction stayed open.

On start the state is rebuilt by replaying the scans of the last `rebuild_s`
through the same engine, then the alerts live in the database are adopted (marked
open in the state, or resolved if what they were about is over), so a restart
neither loses, duplicates nor re-opens an alert. The replay reads one snapshot and
the feed follows from that same snapshot: no scan is missed or seen twice between.

A shard (`sites`) owns the parcels whose latest read is at one of its sites and
the devices of its sites. A parcel read at another shard's site is let go (that
shard adopts its live alerts when it first sees it, and once more `settle_s`
later, for an alert this shard opened before it learned of the move). Each site
is claimed with an advisory lock, so two detectors never own one site.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
import stamina

from detect import checkpoint, eta, store
from detect.background import Background
from detect.core import inactive, refresh
from detect.engine import AlertChange, Engine
from detect.publish import AlertPublisher
from detect.reference import DetectConfig
from parceltrack.config import BrokerAddress
from storage import feed

log = logging.getLogger(__name__)

T = TypeVar("T")

# Migration 80's trigger notifies here when any reference table changes.
REFERENCE_CHANNEL = "parceltrack_reference"


@dataclass(frozen=True, slots=True)
class DetectSettings:
    dsn: str
    broker: BrokerAddress | None = None
    tick_s: float = 1.0
    config: DetectConfig = field(default_factory=DetectConfig)
    sites: tuple[str, ...] | None = None  # a shard's sites; None: every site
    settle_s: float = 5.0  # a shard adopts the alerts of a parcel that moved in again after
    prune_feed_after_s: float = 3600.0  # scan_commits older than this are deleted
    rebuild_s: float = 24 * 3600.0  # how far back a restart replays scans
    eta_flush_s: float = 2.0
    # The ETA rows written on the tick thread between ticks, as before issue 17 (for
    # `bench alerts` to compare); by default a thread of their own writes them.
    eta_inline: bool = False
    checkpoint_dir: Path | None = None  # None: no checkpoints, a restart replays
    checkpoint_every_s: float = 60.0
    learn_every_s: float = 300.0
    reload_every_s: float = 30.0
    report_every_s: float = 60.0  # how often the tick thread's busy figures are logged
    compact_every_s: float = 600.0
    done_after_s: float = 3600.0  # at the last stage this long: no longer active
    idle_after_s: float = 24 * 3600.0  # unseen this long: no longer active


@dataclass(frozen=True, slots=True)
class StartFigures:
    """What a start took: the checkpoint's load (0 without one), the scans read (the
    replay, or the catch-up after the checkpoint), and the adoption of live alerts."""

    parcels: int
    scans: int
    load_s: float
    scans_s: float
    adopt_s: float

    def __str__(self) -> str:
        return (
            f"checkpoint load {self.load_s:.2f} s, scans {self.scans_s:.2f} s, "
            f"adoption {self.adopt_s:.2f} s"
        )


class Detector:
    def __init__(self, settings: DetectSettings) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self._position: feed.FeedPosition | None = None
        self._xmins: deque[tuple[float, int]] = deque()  # (monotonic time, snapshot xmin)
        self._settle: deque[tuple[float, list[str]]] = deque()  # (due, parcels to adopt)
        self._health_mark = datetime.fromtimestamp(0, UTC)
        self._layout: tuple[object, ...] = ()
        self.alerts_opened = 0
        self.alerts_resolved = 0
        self.ready = threading.Event()
        self.resumed: checkpoint.Checkpoint | None = None  # what the last start loaded
        self.last_start: StartFigures | None = None
        self._fit: checkpoint.Fit | None = None
        # A capture travels with the fit it was taken under (a layout change may rebuild
        # the engine while the writer still holds an older capture).
        self._checkpoints: Background[tuple[checkpoint.Checkpoint, checkpoint.Fit]] | None = None
        self._etas: Background[list[eta.EtaRows]] | None = None
        self._learner: Background[None] | None = None

    def run(self, stop: threading.Event) -> None:
        publisher = None
        if self.settings.broker is not None:
            publisher = AlertPublisher(
                self.settings.dsn, self.settings.broker, sites=self.settings.sites
            )
            threading.Thread(target=publisher.run, args=(stop,), daemon=True).start()
        self._run(stop)

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def _run(self, stop: threading.Event) -> None:
        with (
            psycopg.connect(self.settings.dsn, autocommit=True) as conn,
            psycopg.connect(self.settings.dsn, autocommit=True) as listen,
        ):
            if not self._claim(conn, stop):
                return
            # Before the state is built: a change made while it is built is not missed.
            listen.execute(f"LISTEN {REFERENCE_CHANNEL}")
            self._start_writers()
            try:
                self._loop(conn, listen, stop)
            finally:
                self._stop_writers(stop.is_set())

    def _loop(
        self, conn: psycopg.Connection[Any], listen: psycopg.Connection[Any], stop: threading.Event
    ) -> None:
        self.start(conn, time.time())
        mono = time.monotonic()
        last = {"eta": 0.0, "learn": mono, "reload": mono, "compact": mono, "checkpoint": mono,
                "report": mono}  # fmt: skip
        busy: list[float] = []  # seconds each turn of the loop worked (the rest it waits)
        while not stop.is_set():
            started = time.monotonic()
            if _notified(listen):  # standards, windows, plans ... changed: this tick
                self.reload(conn, time.time())
                last["reload"] = started
            self.step(conn, time.time())
            if started - last["eta"] >= self.settings.eta_flush_s:
                if self._etas is None:
                    self.flush_eta(conn)
                elif rows := self._take_eta():
                    self._etas.submit([rows])
                last["eta"] = started
            if started - last["checkpoint"] >= self.settings.checkpoint_every_s:
                self.save_checkpoint(time.time())
                last["checkpoint"] = started
            if started - last["learn"] >= self.settings.learn_every_s:
                if self._learner is None:
                    store.learn_transits(conn)
                else:
                    self._learner.submit(None)
                last["learn"] = started
            if started - last["reload"] >= self.settings.reload_every_s:
                self.reload(conn, time.time())
                last["reload"] = started
            if started - last["compact"] >= self.settings.compact_every_s:
                self.compact(time.time())
                self._prune_feed(conn, started)
                last["compact"] = started
            worked = time.monotonic() - started
            busy.append(worked)
            if started - last["report"] >= self.settings.report_every_s:
                _report_busy(busy, self.settings.tick_s)
                busy, last["report"] = [], started
            stop.wait(max(0.0, self.settings.tick_s - worked))
        _report_busy(busy, self.settings.tick_s)
        self.save_checkpoint(time.time())  # a stop asked for: the next start resumes from here

    def _start_writers(self) -> None:
        if not self.settings.eta_inline:
            write_eta = _on_own_connection(self.settings.dsn, eta.write)
            self._etas = Background("eta writer", write_eta, lambda a, b: a + b)
            # Learning reads a week of scans: seconds on a large database, off the ticks.
            learn = _on_own_connection(self.settings.dsn, lambda c, _: store.learn_transits(c))
            self._learner = Background("transit learner", learn, lambda _a, b: b, retry=False)
        if self.settings.checkpoint_dir is not None:
            self._checkpoints = Background(
                "checkpoint writer", self._write_checkpoint, lambda _old, new: new, retry=False
            )

    def _stop_writers(self, finish: bool) -> None:
        """Finish (or, after a failure, abandon) what the writers hold."""
        for writer in (self._etas, self._checkpoints, self._learner):
            if writer is not None:
                writer.close(30.0 if finish else 0.0)
        self._etas = self._checkpoints = self._learner = None

    def _take_eta(self) -> eta.EtaRows | None:
        assert self.engine is not None
        return eta.take(self.engine.state, self.engine.ref, self.engine.codec)

    def save_checkpoint(self, now: float) -> bool:
        """Capture the state at the current feed position (call between ticks) and hand
        it to the writer thread, or write it at once outside the run loop; False when
        checkpoints are off."""
        if (
            self.settings.checkpoint_dir is None
            or self.engine is None
            or self._position is None
            or self._fit is None
        ):
            return False
        cp = checkpoint.capture(
            self.engine, self._position, now, self._health_mark.isoformat(), list(self._settle)
        )
        if self._checkpoints is None:
            self._write_checkpoint((cp, self._fit))
        else:
            self._checkpoints.submit((cp, self._fit))
        return True

    def _write_checkpoint(self, item: tuple[checkpoint.Checkpoint, checkpoint.Fit]) -> None:
        cp, fit = item
        assert self.settings.checkpoint_dir is not None
        path = checkpoint.file_for(self.settings.checkpoint_dir, self.settings.sites)
        started = time.perf_counter()
        size = checkpoint.write(path, cp, fit)
        log.info(
            "checkpoint of %d parcels written to %s (%.1f MB, %.2f s)",
            len(cp.parcels["key"]), path, size / 1e6, time.perf_counter() - started,
        )  # fmt: skip

    def _claim(self, conn: psycopg.Connection[Any], stop: threading.Event) -> bool:
        """Take this detector's sites (all of them, unsharded); waits while another
        detector holds one. The locks go with the connection, however it ends."""
        sites = self.settings.sites
        while not stop.is_set():
            held = store.claim_sites(conn, sites)
            if not held:
                log.info("detecting for %s", "every site" if sites is None else ", ".join(sites))
                return True
            log.warning("waiting: another detector owns %s", ", ".join(held))
            stop.wait(1.0)
        return False

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
        self, conn: psycopg.Connection[Any], now: float, seen: feed.FeedPosition | None = None
    ) -> None:
        """Rebuild the state (from a checkpoint and the scans committed since, or from
        the scans of the replay window) and adopt the live alerts. With `seen` (a
        rebuild while following, after a layout change), no checkpoint is loaded and
        only scans the feed had delivered are replayed: the later ones are new, and
        the next step takes them with every alert they raise."""
        engine = self.engine = self._new_engine(conn)
        sites = self.settings.sites
        if unknown := sorted(set(sites or ()) - set(engine.ref.sites)):
            # Not fatal: a site being set up may own a shard before its layout is loaded.
            log.warning("--sites names sites with no read points (yet): %s", ", ".join(unknown))
        self._fit = checkpoint.Fit(
            store.database_identity(conn), store.schema_version(conn),
            None if sites is None else tuple(sorted(sites)), self.settings.config,
            checkpoint.layout_of(engine.ref),
        )  # fmt: skip
        began = time.perf_counter()
        self.resumed = self._resume(conn, now) if seen is None else None
        loaded = time.perf_counter()
        engine = self.engine
        changes: list[AlertChange] = []
        replayed = 0
        # One snapshot for the replay and the feed's first position.
        with feed.snapshot(conn) as position:
            if self.resumed is not None:
                # Every commit since the checkpoint's position, once: its alerts count
                # (a late arrival the stopped detector never saw is alerted now).
                commits = feed.commits_after(conn, self.resumed.position)
                for rows in store.replay_commits(conn, commits, sites):
                    changes += engine.ingest(rows.batch)
                    replayed += len(rows.batch)
                gone = store.departures(conn, sites, commits) if sites is not None else None
            else:
                since = datetime.fromtimestamp(now - self.settings.rebuild_s, UTC)
                for rows in store.replay_scans(conn, since, sites=sites, visible_at=seen):
                    engine.ingest(rows.batch)  # no alert is live in the state yet
                    replayed += len(rows.batch)
                gone = store.departures(conn, sites, None, since) if sites is not None else None
        self._position = seen or position
        scanned = time.perf_counter()
        if gone is not None:
            self._let_go(*gone)
        changes += self._heard(conn)
        self.compact(now)
        changes += engine.adopt_live(store.live_alerts(conn, sites=sites), now)
        self._persist(conn, changes)
        self.last_start = StartFigures(
            len(engine.state), replayed, loaded - began, scanned - loaded,
            time.perf_counter() - scanned,
        )  # fmt: skip
        if self.resumed is not None:
            log.info(
                "rebuilt state of %d parcels from a checkpoint of %.0f s ago and %d scans "
                "committed since (%s)", len(engine.state), now - self.resumed.written_at,
                replayed, self.last_start,
            )  # fmt: skip
        else:
            log.info(
                "rebuilt state of %d parcels from %d scans (%s)", len(engine.state), replayed,
                self.last_start,
            )  # fmt: skip
        self.ready.set()
        if self._checkpoints is not None:  # in the run loop: written by its thread
            self.save_checkpoint(now)  # the replay is not repeated after a crash soon after

    def _resume(self, conn: psycopg.Connection[Any], now: float) -> checkpoint.Checkpoint | None:
        """Load this detector's checkpoint into the (fresh) engine, or say why not and
        leave a fresh engine for the full replay."""
        folder = self.settings.checkpoint_dir
        if folder is None:
            return None
        assert self.engine is not None and self._fit is not None
        path = checkpoint.file_for(folder, self.settings.sites)
        if not path.exists():
            log.info("no checkpoint at %s: replaying the scans", path)
            return None
        try:
            cp = checkpoint.read(path, self._fit)
            if now - cp.written_at > self.settings.rebuild_s:
                raise checkpoint.Refused(
                    f"written {now - cp.written_at:.0f} s ago, before the replay window"
                )
            if not feed.can_follow(conn, cp.position):
                raise checkpoint.Refused("the scan feed's log was pruned past its position")
            recompute = checkpoint.restore(self.engine, cp)
        except checkpoint.Refused as exc:
            log.warning("checkpoint refused, replaying the scans instead: %s", exc)
            self.engine = self._new_engine(conn)  # a refused restore may have half-filled it
            return None
        state = self.engine.state
        if recompute:  # standards or learned times changed meanwhile: as a reload does
            refresh(state, self.engine.ref, np.arange(state.n, dtype=np.int64))
        # ETA rows taken before the checkpoint may not have reached the table.
        state.dirty[: state.n] = True
        self._health_mark = datetime.fromisoformat(cp.health_mark)
        self._settle = deque(cp.settle)
        return cp

    def reload(self, conn: psycopg.Connection[Any], now: float) -> None:
        """Pick up changed standards, windows and plans; a changed layout rebuilds."""
        assert self.engine is not None
        ref = store.load_reference(conn, self.settings.config)
        layout = (ref.sites, ref.read_points, ref.stages, ref.classes, ref.destinations)
        if layout != self._layout:
            log.info("layout changed: rebuilding the detection state")
            # Replays what the feed delivered so far; later scans come in by the next step.
            self.start(conn, now, seen=self._position)
            return
        self.engine.devices.set_limits(store.load_site_thresholds(conn))
        if checkpoint.same_numbers(checkpoint.numbers(self.engine.ref), checkpoint.numbers(ref)):
            return  # nothing changed: no need to recompute (and re-publish) every ETA
        self.engine.ref = ref
        state = self.engine.state
        refresh(state, ref, np.arange(state.n, dtype=np.int64))

    def step(self, conn: psycopg.Connection[Any], now: float) -> list[AlertChange]:
        """One tick: new scans in, then every check over every parcel and device."""
        assert self.engine is not None
        changes: list[AlertChange] = []
        sites = self.settings.sites
        assert self._position is not None
        with feed.snapshot(conn) as position:
            commits = feed.commits_after(conn, self._position)
            rows = store.scans_of_commits(conn, commits, sites)
            gone = store.departures(conn, sites, commits) if sites is not None else None
        self._position = position
        self._xmins.append((time.monotonic(), position.xmin))
        if rows.event_ids:
            changes += self.engine.ingest(rows.batch)
            if self.engine.new_ids:  # back after a long absence: adopt its alerts
                changes += self._adopt(conn, self.engine.new_ids, now)
                if sites is not None:
                    self._settle.append((now + self.settings.settle_s, self.engine.new_ids))
        while self._settle and self._settle[0][0] <= now:
            changes += self._adopt(conn, self._settle.popleft()[1], now)
        if gone is not None:
            self._let_go(*gone)
        changes += self._heard(conn)
        changes += self.engine.tick(now)
        self._persist(conn, changes)
        return changes

    def _adopt(
        self, conn: psycopg.Connection[Any], tracking_ids: list[str], now: float
    ) -> list[AlertChange]:
        assert self.engine is not None
        live = store.live_alerts(conn, tracking_ids, self.settings.sites)
        return self.engine.adopt_live(live, now)

    def _let_go(self, tracking_ids: Sequence[str], read_at: np.ndarray) -> int:
        """Drop the parcels read at another shard's site after their last read here."""
        assert self.engine is not None
        st = self.engine.state
        slots = st.find(self.engine.codec.encode(list(tracking_ids)))
        mine = slots >= 0
        left = slots[mine][read_at[mine] > st.last_seen[slots[mine]]]
        if len(left):
            keep = np.ones(st.n, dtype=np.bool_)
            keep[left] = False
            st.compact(keep)
            log.info("%d parcels moved to another shard's sites", len(left))
        return len(left)

    def _prune_feed(self, conn: psycopg.Connection[Any], mono: float) -> None:
        """Forget scan_commits below an xmin seen `prune_feed_after_s` ago."""
        horizon = None
        while self._xmins and self._xmins[0][0] <= mono - self.settings.prune_feed_after_s:
            horizon = self._xmins.popleft()[1]
        if horizon is not None:
            feed.prune(conn, horizon)

    def _heard(self, conn: psycopg.Connection[Any]) -> list[AlertChange]:
        assert self.engine is not None
        health = store.device_health_since(conn, self._health_mark, self.settings.sites)
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
        """Write the changed parcels' ETA rows on `conn`, now; returns how many."""
        if self.settings.eta_inline:  # the path before issue 17, for comparisons
            assert self.engine is not None
            state = self.engine.state
            slots = np.flatnonzero(state.dirty[: state.n] & (state.rp[: state.n] >= 0))
            tracking = [self.engine.tracking_id(s) for s in slots.tolist()]
            return store.flush_eta(conn, state, self.engine.ref, tracking)
        rows = self._take_eta()
        return 0 if rows is None else eta.write(conn, [rows])


def _notified(listen: psycopg.Connection[Any]) -> bool:
    """Whether the reference data changed since the last call (drains what is queued)."""
    return sum(1 for _ in listen.notifies(timeout=0)) > 0


def _on_own_connection(
    dsn: str, work: Callable[[psycopg.Connection[Any], T], object]
) -> Callable[[T], None]:
    """`work` for a writer thread, on a connection of its own, opened again after a
    failure (the writer retries)."""
    conn: psycopg.Connection[Any] | None = None

    def run(item: T) -> None:
        nonlocal conn
        if conn is None or conn.closed:
            conn = psycopg.connect(dsn, autocommit=True)
        try:
            work(conn, item)
        except psycopg.OperationalError:
            conn.close()
            raise

    return run


def _report_busy(busy: list[float], tick_s: float) -> None:
    """How long the tick thread worked per turn: past the tick, alerts wait longer."""
    if not busy:
        return
    ms = np.sort(np.array(busy)) * 1000.0
    log.info(
        "tick thread: %d turns, busy p50 %.0f ms, p99 %.0f ms, max %.0f ms (tick %.0f ms)",
        len(ms), np.percentile(ms, 50), np.percentile(ms, 99), ms[-1], tick_s * 1000.0,
    )  # fmt: skip
