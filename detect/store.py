"""PostgreSQL side of detection: configuration in, scans in, alerts and ETAs out.

Thin on purpose: every decision is in detect/engine.py and detect/core.py.
Alerts are written only with INSERT and UPDATE on `alerts`; the trigger of
migration 4 logs each change in `alert_events` (the API's live stream and the
MQTT publisher read from there).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from detect.core import ParcelState
from detect.devices import DeviceThresholds
from detect.engine import AlertChange, ManifestFacts, ScanBatch

__all__ = ["ScanBatch", "ScanRows"]
from detect.reference import (
    DetectConfig,
    ReadPointRow,
    Reference,
    SortPlanRow,
    ToleranceRow,
    TransitRow,
    build_reference,
)
from storage import feed
from storage.feed import FeedPosition

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


def load_reference(conn: Conn, config: DetectConfig) -> Reference:
    """Layout, standards, windows, sort plans and learned transit times, as arrays."""
    rps = [
        ReadPointRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]))
        for r in conn.execute(
            "SELECT read_point_id, site_id, zone, stage, position FROM read_points "
            "ORDER BY site_id, position, read_point_id"
        )
    ]
    classes = [
        (str(c), int(d))
        for c, d in conn.execute(
            "SELECT service_class, delivery_days FROM service_classes ORDER BY service_class"
        )
    ]
    # Parcels may name classes nobody configured yet: they get the fallbacks.
    for (c,) in conn.execute(
        "SELECT DISTINCT service_class FROM parcels WHERE service_class NOT IN "
        "(SELECT service_class FROM service_classes) ORDER BY 1"
    ):
        classes.append((str(c), config.default_delivery_days))
    standards = [
        (str(a), str(b), str(c), float(d))
        for a, b, c, d in conn.execute(
            "SELECT site_id, stage, service_class, max_seconds FROM stage_standards"
        )
    ]
    windows = [
        (str(a), None if b is None else str(b), None if c is None else str(c), float(d))
        for a, b, c, d in conn.execute(
            "SELECT site_id, service_class, stage, window_s FROM missing_windows"
        )
    ]
    plans: dict[int, tuple[str, int, float, list[tuple[str, str, str | None]]]] = {}
    for pid, site, version, eff in conn.execute(
        "SELECT sort_plan_id, site_id, version, extract(epoch FROM effective_from) FROM sort_plans"
    ):
        plans[int(pid)] = (str(site), int(version), float(eff), [])
    for pid, dest, chute, door in conn.execute(
        "SELECT sort_plan_id, destination, chute_read_point_id, door_read_point_id "
        "FROM sort_plan_entries"
    ):
        plans[int(pid)][3].append((str(dest), str(chute), None if door is None else str(door)))
    transits = [
        TransitRow(str(a), str(b), str(c), int(d), float(e), float(f))
        for a, b, c, d, e, f in conn.execute(
            "SELECT site_id, stage, service_class, samples, p50_s, p90_s FROM stage_transit_stats"
        )
    ]
    tolerances = [
        ToleranceRow(str(a), float(b), float(c))
        for a, b, c in conn.execute(
            "SELECT site_id, skew_tolerance_s, duplicate_gap_s FROM site_tolerances"
        )
    ]
    return build_reference(
        rps,
        classes,
        standards,
        windows,
        [SortPlanRow(s, v, e, tuple(entries)) for s, v, e, entries in plans.values()],
        transits,
        # Destinations come from the sort plans only (sorted: the layout compares equal
        # from one reload to the next): a parcel bound elsewhere has no planned chute
        # to be judged by (index -1, as before), and reading the manifest's DISTINCT
        # destinations cost a scan of every parcel on each reload.
        sorted({dest for *_, entries in plans.values() for dest, _, _ in entries}),
        config,
        tolerances,
    )


_THRESHOLD_COLUMNS = (
    "silence_s, bin_s, window_bins, bins, open_rate, close_rate, jump, min_reads, min_noreads"
)


def _thresholds(row: Sequence[Any]) -> DeviceThresholds:
    return DeviceThresholds(
        float(row[0]), float(row[1]), int(row[2]), int(row[3]), float(row[4]),
        float(row[5]), float(row[6]), int(row[7]), int(row[8]),
    )  # fmt: skip


def load_site_thresholds(conn: Conn) -> dict[str, DeviceThresholds]:
    """Device silence and no-read spike limits per site."""
    return {
        str(r[0]): _thresholds(r[1:])
        for r in conn.execute(f"SELECT site_id, {_THRESHOLD_COLUMNS} FROM device_thresholds")
    }


def load_thresholds(conn: Conn) -> DeviceThresholds:
    """The defaults for sites without a row; the ring geometry (bin_s, window_bins, bins)
    is one for all devices: the finest bins and longest windows any site asks for."""
    row = conn.execute(
        "SELECT min(bin_s), max(window_bins), max(bins) FROM device_thresholds"
    ).fetchone()
    if row is None or row[0] is None:
        return DeviceThresholds()
    return DeviceThresholds(bin_s=float(row[0]), window_bins=int(row[1]), bins=int(row[2]))


def manifest_lookup(conn: Conn, tracking_ids: list[str]) -> dict[str, ManifestFacts]:
    rows = conn.execute(
        "SELECT tracking_id, service_class, destination, origin_site, destination_site, "
        "extract(epoch FROM accepted_at) FROM parcels WHERE tracking_id = ANY(%s)",
        (tracking_ids,),
    ).fetchall()
    return {str(r[0]): ManifestFacts(str(r[1]), str(r[2]), r[3], r[4], float(r[5])) for r in rows}


# RFID reads name the tag (EPC); the manifest says whose it is.
_SCAN_COLUMNS = (
    "s.event_id, coalesce(s.tracking_id, p.tracking_id), s.read_point_id, s.device_id, "
    "s.site_id, extract(epoch FROM s.ts)::float8, s.kind = 'noread', s.ingested_at"
)
_SCAN_FROM = (
    "scans s LEFT JOIN parcels p ON s.tracking_id IS NULL AND s.epc IS NOT NULL AND p.epc = s.epc"
)


@dataclass(frozen=True, slots=True)
class ScanRows:
    batch: ScanBatch
    event_ids: list[str]
    ingested_at: list[datetime]


def to_batch(rows: Sequence[tuple[Any, ...]]) -> ScanRows:
    # One transpose in C (zip) instead of a Python loop per column and row.
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) or [()] * 8
    return ScanRows(
        ScanBatch(
            tracking_id=columns[1],
            read_point=columns[2],
            device=columns[3],
            site=columns[4],
            ts=np.array(columns[5], dtype=np.float64),
            noread=np.array(columns[6], dtype=np.bool_),
        ),
        list(columns[0]),
        list(columns[7]),
    )


def _site_filter(sites: Sequence[str] | None, inside: bool = True) -> str:
    """SQL on `s.site_id` for a shard's sites (`%(sites)s`); empty for all sites."""
    if sites is None:
        return ""
    return " AND s.site_id = ANY(%(sites)s)" if inside else " AND s.site_id <> ALL(%(sites)s)"


def scans_of_commits(
    conn: Conn, commits: feed.Commits, sites: Sequence[str] | None = None
) -> ScanRows:
    """The scans the given commits wrote (at the given sites), in commit order."""
    if not commits:
        return to_batch([])
    rows = conn.execute(
        f"SELECT {_SCAN_COLUMNS} FROM {_SCAN_FROM} WHERE {feed.SCANS_OF_COMMITS}"
        f"{_site_filter(sites)} ORDER BY s.xact_id, s.ts",
        {**commits.params(), "sites": list(sites or ())},
    ).fetchall()
    return to_batch(rows)


def departures(
    conn: Conn, sites: Sequence[str], commits: feed.Commits | None, since: datetime | None = None
) -> tuple[list[str], np.ndarray]:
    """Parcels read at sites other than `sites` (by the commits, or since `since`), with
    the time of their latest such read: where a shard learns that a parcel left it."""
    if commits is not None and not commits:
        return [], np.zeros(0)
    where = feed.SCANS_OF_COMMITS if commits is not None else "s.ts > %(since)s"
    params = {**(commits.params() if commits is not None else {}), "since": since}
    rows = conn.execute(
        f"SELECT coalesce(s.tracking_id, p.tracking_id) AS t, "
        f"max(extract(epoch FROM s.ts))::float8 FROM {_SCAN_FROM} WHERE {where} "
        f"AND s.kind <> 'noread'{_site_filter(sites, inside=False)} GROUP BY 1",
        {**params, "sites": list(sites)},
    ).fetchall()
    rows = [r for r in rows if r[0] is not None]
    return [str(r[0]) for r in rows], np.array([float(r[1]) for r in rows], dtype=np.float64)


def replay_scans(
    conn: Conn,
    since: datetime,
    chunk: int = 100_000,
    sites: Sequence[str] | None = None,
    visible_at: FeedPosition | None = None,
) -> Iterator[ScanRows]:
    """Every scan with a time after `since` (at the given sites; committed before the
    feed position `visible_at`), in time order, in chunks (restart rebuild)."""
    seen = ""
    if visible_at is not None:
        seen = (
            " AND s.xact_id < %(xmax)s::text::xid8"
            " AND NOT s.xact_id = ANY(%(in_flight)s::text[]::xid8[])"
        )
    with conn.transaction(), conn.cursor(name="detect_replay") as cur:
        cur.itersize = chunk
        cur.execute(
            f"SELECT {_SCAN_COLUMNS} FROM {_SCAN_FROM} WHERE s.ts > %(since)s"
            f"{_site_filter(sites)}{seen} ORDER BY s.ts",
            {
                "since": since,
                "sites": list(sites or ()),
                "xmax": str(visible_at.xmax if visible_at else 0),
                "in_flight": [str(x) for x in (visible_at.in_flight if visible_at else ())],
            },
        )
        while rows := cur.fetchmany(chunk):
            yield to_batch(rows)


# Two keys of advisory locks: (detectors, 0) is shared by every shard and taken
# exclusively by an unsharded detector; (detectors, hashtext(site)) is one shard's.
_DETECTORS = 0x6465_7465


def claim_sites(conn: Conn, sites: Sequence[str] | None) -> list[str]:
    """Take the session's advisory locks for these sites (None: every site); returns
    the sites another detector holds (and then takes nothing)."""
    if sites is None:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, 0)", (_DETECTORS,)).fetchone()
        return [] if row and row[0] else ["every site (another detector runs)"]
    row = conn.execute("SELECT pg_try_advisory_lock_shared(%s, 0)", (_DETECTORS,)).fetchone()
    if not (row and row[0]):
        return ["every site (an unsharded detector runs)"]
    held = [
        str(site)
        for site, ok in conn.execute(
            "SELECT site, pg_try_advisory_lock(%s, hashtext(site)) FROM unnest(%s::text[]) site",
            (_DETECTORS, list(sites)),
        )
        if not ok
    ]
    if held:
        conn.execute("SELECT pg_advisory_unlock_all()")
    return held


def live_alerts(
    conn: Conn, tracking_ids: list[str] | None = None, sites: Sequence[str] | None = None
) -> list[tuple[str, str, str | None]]:
    """(kind, parcel or device, read point) of every alert not resolved (of the given
    parcels only, when named; device alerts of the given sites only, when named: a
    shard must not judge another shard's devices)."""
    sql = (
        "SELECT kind, coalesce(tracking_id, device_id), read_point_id FROM alerts "
        "WHERE state <> 'resolved' AND coalesce(tracking_id, device_id) IS NOT NULL"
    )
    params: dict[str, Any] = {"ids": tracking_ids, "sites": list(sites or ())}
    if tracking_ids is not None:
        sql += " AND tracking_id = ANY(%(ids)s)"
    if sites is not None:
        sql += " AND (device_id IS NULL OR site_id = ANY(%(sites)s))"
    rows = conn.execute(sql, params).fetchall()
    return [(str(k), str(s), rp) for k, s, rp in rows]


def device_health_since(
    conn: Conn, since: datetime, sites: Sequence[str] | None = None
) -> list[tuple[str, str, float, datetime]]:
    sql = (
        "SELECT device_id, site_id, extract(epoch FROM reported_at)::float8, reported_at "
        "FROM device_health WHERE reported_at > %(since)s"
    )
    if sites is not None:
        sql += " AND site_id = ANY(%(sites)s)"
    return [
        (str(d), str(s), float(t), at)
        for d, s, t, at in conn.execute(sql, {"since": since, "sites": list(sites or ())})
    ]


def persist(conn: Conn, changes: Sequence[AlertChange]) -> tuple[int, int]:
    """Write alert changes in order; returns (opened, resolved) rows actually changed."""
    opened = resolved = 0
    i = 0
    with conn.transaction(), conn.cursor() as cur:
        while i < len(changes):
            j = i
            while j < len(changes) and changes[j].action == changes[i].action:
                j += 1
            group = changes[i:j]
            if group[0].action == "open":
                # ON CONFLICT without a target covers both the one-live-per-fingerprint
                # and the one-per-episode indexes.
                cur.executemany(
                    "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, device_id, "
                    "tracking_id, detectable_at, episode, details) VALUES "
                    "(%s, %s, %s, %s, %s, %s, to_timestamp(%s), %s, %s) ON CONFLICT DO NOTHING",
                    [
                        (
                            c.fingerprint,
                            c.kind,
                            c.site_id,
                            c.read_point_id,
                            c.device_id,
                            c.tracking_id,
                            c.detectable_at,
                            c.episode,
                            Jsonb(c.details),
                        )
                        for c in group
                    ],
                )
                opened += max(cur.rowcount, 0)
            else:
                cur.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_at = now() "
                    "WHERE fingerprint = ANY(%s) AND state <> 'resolved'",
                    ([c.fingerprint for c in group],),
                )
                resolved += max(cur.rowcount, 0)
            i = j
    return opened, resolved


def flush_eta(conn: Conn, state: ParcelState, ref: Reference, tracking: list[str]) -> int:
    """Upsert parcel_eta for the parcels whose position changed since the last flush."""
    n = state.n
    slots = np.flatnonzero(state.dirty[:n] & (state.rp[:n] >= 0))
    if len(slots) == 0:
        return 0
    site, stage = state.site[slots], state.stage[slots]
    nxt = ref.next_stage[site, stage]
    cols = (
        np.asarray(ref.sites, dtype=object)[site],
        np.asarray(ref.read_points, dtype=object)[state.rp[slots]],
        np.asarray(ref.stages, dtype=object)[stage],
        [ref.stages[g] if g >= 0 else None for g in nxt.tolist()],
    )
    times = [
        state.entered[slots],
        state.deadline[slots],
        state.eta[slots],
        state.eta_p90[slots],
        state.delivery_at[slots],
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS eta_stage (tracking_id text, site_id text, "
            "read_point_id text, stage text, next_stage text, entered float8, due float8, "
            "eta float8, eta_p90 float8, delivery float8) ON COMMIT DELETE ROWS"
        )
        with cur.copy("COPY eta_stage FROM STDIN") as copy:
            for i, s in enumerate(slots.tolist()):
                copy.write_row(
                    (
                        tracking[i],
                        cols[0][i],
                        cols[1][i],
                        cols[2][i],
                        cols[3][i],
                        *(None if not np.isfinite(t[i]) else float(t[i]) for t in times),
                    )
                )
                del s
        cur.execute(
            "INSERT INTO parcel_eta (tracking_id, site_id, read_point_id, stage, entered_at, "
            "next_stage, next_due, eta, eta_p90, delivery_due, updated_at) "
            "SELECT tracking_id, site_id, read_point_id, stage, to_timestamp(entered), "
            "next_stage, to_timestamp(due), to_timestamp(eta), to_timestamp(eta_p90), "
            "to_timestamp(delivery), now() FROM eta_stage "
            "ON CONFLICT (tracking_id) DO UPDATE SET site_id = EXCLUDED.site_id, "
            "read_point_id = EXCLUDED.read_point_id, stage = EXCLUDED.stage, "
            "entered_at = EXCLUDED.entered_at, next_stage = EXCLUDED.next_stage, "
            "next_due = EXCLUDED.next_due, eta = EXCLUDED.eta, eta_p90 = EXCLUDED.eta_p90, "
            "delivery_due = EXCLUDED.delivery_due, updated_at = now()"
        )
    state.dirty[slots] = False
    return len(slots)


LEARN_TRANSITS = """
WITH arrivals AS (
    SELECT s.tracking_id, s.site_id, rp.stage, min(s.ts) AS arrived
    FROM scans s JOIN read_points rp USING (read_point_id)
    WHERE s.tracking_id IS NOT NULL AND s.ts > now() - %(history)s::interval
    GROUP BY 1, 2, 3
), steps AS (
    SELECT a.site_id, a.stage, p.service_class,
           extract(epoch FROM lead(a.arrived) OVER w - a.arrived) AS dt
    FROM arrivals a JOIN parcels p USING (tracking_id)
    WINDOW w AS (PARTITION BY a.tracking_id, a.site_id ORDER BY a.arrived)
)
INSERT INTO stage_transit_stats AS t
    (site_id, stage, service_class, samples, p50_s, p90_s, updated_at)
SELECT site_id, stage, service_class, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY dt),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY dt), now()
FROM steps WHERE dt IS NOT NULL AND dt >= 0
GROUP BY 1, 2, 3
ON CONFLICT (site_id, stage, service_class) DO UPDATE SET
    samples = EXCLUDED.samples, p50_s = EXCLUDED.p50_s, p90_s = EXCLUDED.p90_s,
    updated_at = now()
"""


def learn_transits(conn: Conn, history: str = "7 days") -> int:
    """Percentiles of stage-to-next-stage times from the scans; returns groups learned."""
    cur = conn.execute(LEARN_TRANSITS, {"history": history})
    return max(cur.rowcount, 0)


def database_identity(conn: Conn) -> str:
    """Which database this is (server and database), for a checkpoint's header: the
    cluster's system identifier where the role may read it, and the database's oid."""
    row = conn.execute(
        "SELECT current_database(), oid FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    try:
        with conn.transaction():
            system = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        system = None
    return f"{system[0] if system else '?'}/{row[0]}/{row[1]}"


def schema_version(conn: Conn) -> int:
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def replay_commits(
    conn: Conn, commits: feed.Commits, sites: Sequence[str] | None = None, chunk: int = 100_000
) -> Iterator[ScanRows]:
    """`scans_of_commits` in chunks through a server-side cursor: a restart from a
    checkpoint catches up on every commit since it, however many."""
    if not commits:
        return
    with conn.transaction(), conn.cursor(name="detect_catch_up") as cur:
        cur.itersize = chunk
        cur.execute(
            f"SELECT {_SCAN_COLUMNS} FROM {_SCAN_FROM} WHERE {feed.SCANS_OF_COMMITS}"
            f"{_site_filter(sites)} ORDER BY s.xact_id, s.ts",
            {**commits.params(), "sites": list(sites or ())},
        )
        while rows := cur.fetchmany(chunk):
            yield to_batch(rows)
