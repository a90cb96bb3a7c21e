"""Hourly rollups of the manager figures, kept up from the commit-ordered scan feed.

The manager page's figures over the raw scans (storage/figures.py `QUERIES`) take
minutes at 20M scans; the dwell heat map alone sorts every scan of the period. So
each step of a follower adds what the newly committed scans change to small tables
keyed by UTC hour (migration 160), and any period of whole hours, any site, is a
sum of their rows:

- `rollup_site_hours`: scans and no-reads (throughput), parcels first seen at the
  site, first chute reads (all, with a plan, off the plan);
- `rollup_on_time_hours`: parcels that left the site (first read at a leaving
  stage), by service class, and how many of them by their due time;
- `rollup_dwell_hours`: each read's wait until the parcel's next read, as a
  log-spaced histogram (`bucket`);
- `rollup_visits`: one row per parcel and site (first and last read, first leaving
  and chute read and what was counted for them): a read that arrives late, earlier
  than one already counted, moves the count from the old hour to its own.

A step is one REPEATABLE READ transaction: it reads the position stored with the
rollups, the commits after it (`feed.commits_after`), rolls up their scans and
stores the snapshot it read them in as the new position, all or nothing, so every
committed scan counts exactly once however late its transaction committed. One
stepper at a time (a session advisory lock, taken before the transaction so its
snapshot sees the position the last stepper stored).

A parcel's previous read may be in an earlier batch, and a late read may fall
between two reads already counted: for each parcel a batch reads, the step looks
up by index (`scans_parcel`) its last earlier read and every read already counted
at or after the batch's first, and adds the waits the batch creates and removes
those it splits. A wait counts only if it is at most `LINK_HORIZON` (the late-data
horizon): longer is not a dwell but a parcel gone astray.

Without a position (the first run, or one behind a pruned feed: `feed.can_follow`),
a step rebuilds the rollups from every visible scan of the last `ROLLUP_DAYS` days,
a day at a time, and follows from that snapshot.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from parceltrack.events import EventKind
from parceltrack.layout import Stage
from storage import feed

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

# Any fixed number; one stepper at a time.
_LOCK_KEY = 0x726F_6C6C_7570
# Stages where a parcel leaves the site, and the chute (mis-sorts).
LEAVING = (Stage.DISPATCH.value, Stage.DELIVERY.value)
CHUTE = Stage.CHUTE.value
# The scan feed's late-data horizon (migrations.LATE_DATA_HORIZON): the longest wait
# linked to the next read.
LINK_HORIZON = timedelta(days=2)
# What a rebuild reads: the API's longest period (92 days) and a day of margin.
ROLLUP_DAYS = 93
BUCKETS_PER_DECADE = 20
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)
_TABLES = ("rollup_site_hours", "rollup_on_time_hours", "rollup_dwell_hours", "rollup_visits")


def bucket_of(wait_s: float) -> int:
    """The histogram bucket of a wait: 0 under 1 s, else 1 + floor(20 log10 wait)."""
    return 0 if wait_s < 1 else 1 + math.floor(BUCKETS_PER_DECADE * math.log10(wait_s))


def bucket_value(bucket: int) -> float:
    """What a bucket's waits count as: 0.5 s for bucket 0, else its geometric middle
    (so any wait in it is within a factor 10^(1/40), 5.9 %, of it)."""
    return 0.5 if bucket == 0 else 10 ** ((bucket - 0.5) / BUCKETS_PER_DECADE)


def bucket_sql(interval: str) -> str:
    """`bucket_of` in SQL, over an interval expression."""
    wait = f"date_part('epoch', {interval})"
    return (
        f"CASE WHEN {wait} < 1 THEN 0 ELSE 1 + floor({BUCKETS_PER_DECADE} * log({wait}))::int END"
    )


def percentiles(histogram: Sequence[tuple[int, int]], qs: Sequence[float]) -> list[float]:
    """percentile_cont over a histogram's waits, each taken as its bucket's value:
    linear between the waits of ranks floor and ceil of q (n - 1). Each of those two
    is within 5.9 % (or 0.5 s in bucket 0) of the true wait, so the result is within
    5.9 % + 0.5 s of percentile_cont over the true waits."""
    ordered = sorted((b, n) for b, n in histogram if n > 0)
    total = sum(n for _, n in ordered)
    if total == 0:
        return [math.nan for _ in qs]

    def at_rank(rank: int) -> float:
        seen = 0
        for bucket, n in ordered:
            seen += n
            if rank < seen:
                return bucket_value(bucket)
        return bucket_value(ordered[-1][0])

    out = []
    for q in qs:
        exact = q * (total - 1)
        low, high = math.floor(exact), math.ceil(exact)
        out.append(at_rank(low) + (exact - low) * (at_rank(high) - at_rank(low)))
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """What one step did: scans rolled up, whether it rebuilt, seconds taken."""

    scans: int
    rebuilt: bool
    took_s: float


SKIPPED = Step(0, False, 0.0)


def catch_up(dsn: str, wait: bool = True) -> Step:
    """One step on a connection of its own (for async callers: run it in a thread);
    see `step` for `wait`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return step(conn, wait)


def step(conn: Conn, wait: bool = True) -> Step:
    """Roll up every scan committed since the stored position; `conn` in autocommit.

    Without `wait`, a step another stepper is taking already is not waited for
    (`SKIPPED`): a page request then answers from the rollups as they stand (at most
    one `parceltrack quality` tick behind) instead of waiting, perhaps minutes for a
    rebuild."""
    started = time.perf_counter()
    if not wait:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not (row and row[0]):
            return SKIPPED
    else:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # The lookups span every partition in reach, so their estimated cost
            # crosses the JIT thresholds: compiling took seconds a slice, running ms.
            conn.execute("SET LOCAL jit = off")
            scans, rebuilt = _step(conn)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    took = time.perf_counter() - started
    if scans or rebuilt:
        log.info("rollup: %d scans in %.2f s%s", scans, took, " (rebuilt)" if rebuilt else "")
    return Step(scans, rebuilt, took)


def _step(conn: Conn) -> tuple[int, bool]:
    row = conn.execute(
        "SELECT feed_xmin::text, feed_xmax::text, in_flight::text[], rolled_from "
        "FROM rollup_position"
    ).fetchone()
    here = feed.current_position(conn)
    stored = None if row is None else feed.FeedPosition(
        int(row[0]), int(row[1]), tuple(int(x) for x in row[2])
    )  # fmt: skip
    if stored is None or not feed.can_follow(conn, stored):
        return _rebuild(conn, here), True
    rolled_from: datetime = row[3]  # type: ignore[index]
    commits = feed.commits_after(conn, stored)
    scans = 0
    if commits:
        assert commits.ts_from is not None and commits.ts_to is not None
        new = f"({feed.SCANS_OF_COMMITS}) AND s.ts >= %(floor)s"
        outside = f"NOT coalesce(({feed.SCANS_OF_COMMITS}), false)"
        params = {**commits.params(), "floor": rolled_from}
        day = max(_day_start(commits.ts_from), _day_start(rolled_from))
        while day < commits.ts_to:
            scans += _slice(conn, new, outside, params, day, day + _DAY)
            day += _DAY
    _store(conn, here, rolled_from)
    return scans, False


def _day_start(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC)


def _rebuild(conn: Conn, here: feed.FeedPosition) -> int:
    """Every visible scan of the last ROLLUP_DAYS days (DELETE, not TRUNCATE: readers
    keep the old figures until this commits)."""
    now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    floor = _day_start(now) - timedelta(days=ROLLUP_DAYS)
    for table in _TABLES:
        conn.execute(f"DELETE FROM {table}")
    scans, day = 0, floor
    # Up to two days ahead: device clocks that run fast.
    while day < now + 2 * _DAY:
        scans += _slice(conn, "s.ts >= %(floor)s", "false", {"floor": floor}, day, day + _DAY)
        day += _DAY
    _store(conn, here, floor)
    log.info("rollup rebuilt from %s: %d scans", floor.isoformat(), scans)
    return scans


def _store(conn: Conn, here: feed.FeedPosition, rolled_from: datetime) -> None:
    conn.execute(
        "INSERT INTO rollup_position (feed_xmin, feed_xmax, in_flight, rolled_from, caught_up_at) "
        "VALUES (%s::text::xid8, %s::text::xid8, %s::text[]::xid8[], %s, now()) "
        "ON CONFLICT (only_row) DO UPDATE SET feed_xmin = EXCLUDED.feed_xmin, "
        "feed_xmax = EXCLUDED.feed_xmax, "
        "in_flight = EXCLUDED.in_flight, rolled_from = EXCLUDED.rolled_from, "
        "caught_up_at = EXCLUDED.caught_up_at",
        (str(here.xmin), str(here.xmax), [str(x) for x in here.in_flight], rolled_from),
    )
    # Visits unseen for longer than any period the figures answer (a parcel read
    # again after that counts as arriving again); the hour rows stay.
    conn.execute(
        "DELETE FROM rollup_visits WHERE last_seen < now() - make_interval(days => %s)",
        (ROLLUP_DAYS,),
    )


def _slice(
    conn: Conn, new: str, outside: str, params: dict[str, Any], lo: datetime, hi: datetime
) -> int:
    """Roll up the new scans of [lo, hi). `new` picks the scans of this step (alias
    `s`); a scan counted before is `outside` this step or new and earlier than `lo`."""
    batch = f"({new}) AND s.ts >= %(lo)s AND s.ts < %(hi)s"
    old = f"s.ts >= %(floor)s AND (({outside}) OR (({new}) AND s.ts < %(lo)s))"
    p = {
        **params, "lo": lo, "hi": hi, "epoch": _EPOCH, "link": LINK_HORIZON,
        "leaving": list(LEAVING), "chute": CHUTE, "noread": EventKind.NOREAD.value,
    }  # fmt: skip
    cur = conn.execute(
        "CREATE TEMP TABLE rollup_batch ON COMMIT DROP AS SELECT s.ts, s.event_id, "
        "s.site_id, s.read_point_id, s.kind, s.tracking_id FROM scans s WHERE " + batch,
        p,
    )
    scans = max(cur.rowcount, 0)
    if scans:
        conn.execute("ANALYZE rollup_batch")
        conn.execute(_THROUGHPUT, p)
        conn.execute(_CHANGES, p)
        conn.execute(_SITE_DELTAS, p)
        conn.execute(_ON_TIME_DELTAS, p)
        conn.execute(_VISITS, p)
        conn.execute(_TOUCHED, p)
        conn.execute(_SEQUENCE.format(old=old), p)
        conn.execute(_DWELL_DELTAS, p)
        conn.execute("DROP TABLE rollup_changes, rollup_touched, rollup_seq")
    conn.execute("DROP TABLE rollup_batch")
    return scans


_HOUR = "date_bin('1 hour', {}, %(epoch)s)"

_THROUGHPUT = f"""
INSERT INTO rollup_site_hours (site_id, hour, scans, noreads)
SELECT site_id, {_HOUR.format("ts")}, count(*), count(*) FILTER (WHERE kind = %(noread)s)
FROM rollup_batch GROUP BY 1, 2
ON CONFLICT (hour, site_id) DO UPDATE SET scans = rollup_site_hours.scans + EXCLUDED.scans,
    noreads = rollup_site_hours.noreads + EXCLUDED.noreads
"""

# Each visit the batch reads, with what was counted for it (old_*) and what is now.
_CHANGES = """
CREATE TEMP TABLE rollup_changes ON COMMIT DROP AS
WITH b AS (
    SELECT b.site_id, b.tracking_id, min(b.ts) AS arrived, max(b.ts) AS last_seen,
           min(b.ts) FILTER (WHERE rp.stage = ANY(%(leaving)s)) AS left_at,
           (array_agg(b.ts ORDER BY b.ts, b.event_id)
              FILTER (WHERE rp.stage = %(chute)s))[1] AS chuted_at,
           (array_agg(b.read_point_id ORDER BY b.ts, b.event_id)
              FILTER (WHERE rp.stage = %(chute)s))[1] AS chute
    FROM rollup_batch b JOIN read_points rp USING (read_point_id)
    WHERE b.tracking_id IS NOT NULL
    GROUP BY 1, 2
), m AS (
    SELECT b.site_id, b.tracking_id, v.tracking_id IS NULL AS fresh,
           v.arrived AS old_arrived, least(v.arrived, b.arrived) AS arrived,
           greatest(v.last_seen, b.last_seen) AS last_seen,
           v.left_at AS old_left_at, least(v.left_at, b.left_at) AS left_at,
           v.service_class AS old_class, v.on_time AS old_on_time,
           v.chuted_at AS old_chuted_at, v.chute AS old_chute, v.missorted AS old_missorted,
           b.chuted_at IS NOT NULL AND (v.chuted_at IS NULL OR b.chuted_at < v.chuted_at)
             AS chute_moved,
           b.chuted_at AS new_chuted_at, b.chute AS new_chute
    FROM b LEFT JOIN rollup_visits v USING (site_id, tracking_id)
), x AS (
    SELECT m.*, m.left_at IS DISTINCT FROM m.old_left_at AS left_moved,
           sc.service_class AS class_now,
           p.accepted_at + (add_working_days(date_trunc('day', p.accepted_at, 'UTC'),
                                             sc.delivery_days)
                            - date_trunc('day', p.accepted_at, 'UTC')) AS due,
           p.destination
    FROM m LEFT JOIN parcels p USING (tracking_id)
    LEFT JOIN service_classes sc ON sc.service_class = p.service_class
)
SELECT x.site_id, x.tracking_id, x.fresh, x.old_arrived, x.arrived, x.last_seen,
       x.old_left_at, x.left_at, x.left_moved, x.old_class, x.old_on_time,
       CASE WHEN x.left_moved THEN x.class_now ELSE x.old_class END AS service_class,
       CASE WHEN x.left_moved THEN x.left_at <= x.due ELSE x.old_on_time END AS on_time,
       x.chute_moved, x.old_chuted_at, x.old_missorted,
       CASE WHEN x.chute_moved THEN x.new_chuted_at ELSE x.old_chuted_at END AS chuted_at,
       CASE WHEN x.chute_moved THEN x.new_chute ELSE x.old_chute END AS chute,
       CASE WHEN x.chute_moved THEN x.new_chute <> (
           SELECT e.chute_read_point_id FROM sort_plans sp
             JOIN sort_plan_entries e USING (sort_plan_id)
            WHERE sp.site_id = x.site_id AND sp.effective_from <= x.new_chuted_at
              AND e.destination = x.destination
            ORDER BY sp.effective_from DESC, sp.version DESC LIMIT 1)
            ELSE x.old_missorted END AS missorted
FROM x
"""

_SITE_DELTAS = f"""
INSERT INTO rollup_site_hours (site_id, hour, parcels_seen, first_chutes, chuted, missorted)
SELECT site_id, hour, sum(seen), sum(firsts), sum(planned), sum(off_plan)
FROM (
    SELECT site_id, {_HOUR.format("old_arrived")} AS hour, -1 AS seen, 0 AS firsts,
           0 AS planned, 0 AS off_plan
    FROM rollup_changes WHERE NOT fresh AND arrived <> old_arrived
    UNION ALL
    SELECT site_id, {_HOUR.format("arrived")}, 1, 0, 0, 0
    FROM rollup_changes WHERE fresh OR arrived <> old_arrived
    UNION ALL
    SELECT site_id, {_HOUR.format("old_chuted_at")}, 0, -1,
           -(old_missorted IS NOT NULL)::int, -coalesce(old_missorted, false)::int
    FROM rollup_changes WHERE chute_moved AND old_chuted_at IS NOT NULL
    UNION ALL
    SELECT site_id, {_HOUR.format("chuted_at")}, 0, 1,
           (missorted IS NOT NULL)::int, coalesce(missorted, false)::int
    FROM rollup_changes WHERE chute_moved
) d
GROUP BY 1, 2
ON CONFLICT (hour, site_id) DO UPDATE SET
    parcels_seen = rollup_site_hours.parcels_seen + EXCLUDED.parcels_seen,
    first_chutes = rollup_site_hours.first_chutes + EXCLUDED.first_chutes,
    chuted = rollup_site_hours.chuted + EXCLUDED.chuted,
    missorted = rollup_site_hours.missorted + EXCLUDED.missorted
"""

_ON_TIME_DELTAS = f"""
INSERT INTO rollup_on_time_hours (site_id, service_class, hour, finished, on_time)
SELECT site_id, service_class, hour, sum(finished), sum(on_time)
FROM (
    SELECT site_id, old_class AS service_class, {_HOUR.format("old_left_at")} AS hour,
           -1 AS finished, -coalesce(old_on_time, false)::int AS on_time
    FROM rollup_changes WHERE left_moved AND old_left_at IS NOT NULL AND old_class IS NOT NULL
    UNION ALL
    SELECT site_id, service_class, {_HOUR.format("left_at")}, 1, coalesce(on_time, false)::int
    FROM rollup_changes WHERE left_moved AND service_class IS NOT NULL
) d
GROUP BY 1, 2, 3
ON CONFLICT (hour, site_id, service_class) DO UPDATE SET
    finished = rollup_on_time_hours.finished + EXCLUDED.finished,
    on_time = rollup_on_time_hours.on_time + EXCLUDED.on_time
"""

_VISITS = """
INSERT INTO rollup_visits (site_id, tracking_id, arrived, last_seen, left_at, service_class,
                           on_time, chuted_at, chute, missorted)
SELECT site_id, tracking_id, arrived, last_seen, left_at, service_class, on_time,
       chuted_at, chute, missorted
FROM rollup_changes
ON CONFLICT (site_id, tracking_id) DO UPDATE SET arrived = EXCLUDED.arrived,
    last_seen = EXCLUDED.last_seen, left_at = EXCLUDED.left_at,
    service_class = EXCLUDED.service_class, on_time = EXCLUDED.on_time,
    chuted_at = EXCLUDED.chuted_at, chute = EXCLUDED.chute, missorted = EXCLUDED.missorted
"""

_TOUCHED = """
CREATE TEMP TABLE rollup_touched ON COMMIT DROP AS
SELECT tracking_id, min(ts) AS first_new FROM rollup_batch
WHERE tracking_id IS NOT NULL AND kind <> %(noread)s
GROUP BY 1
"""

# Each touched parcel's reads around the batch: the batch's (new), the last one
# counted before the batch's first, and every one counted at or after it. By index
# (scans_parcel), one probe per parcel (OFFSET 0 keeps the planner from a hash join
# over every scan).
_SEQUENCE = """
CREATE TEMP TABLE rollup_seq ON COMMIT DROP AS
SELECT tracking_id, ts, event_id, site_id, read_point_id, true AS new
FROM rollup_batch WHERE tracking_id IS NOT NULL AND kind <> %(noread)s
UNION ALL
SELECT t.tracking_id, o.ts, o.event_id, o.site_id, o.read_point_id, false
FROM rollup_touched t CROSS JOIN LATERAL (
    SELECT s.ts, s.event_id, s.site_id, s.read_point_id FROM scans s
    WHERE s.tracking_id = t.tracking_id AND s.tracking_id IS NOT NULL
      AND s.ts < t.first_new AND s.ts >= t.first_new - %(link)s
      AND s.kind <> %(noread)s AND ({old})
    ORDER BY s.ts DESC, s.event_id DESC LIMIT 1
) o
UNION ALL
SELECT t.tracking_id, o.ts, o.event_id, o.site_id, o.read_point_id, false
FROM rollup_touched t CROSS JOIN LATERAL (
    SELECT s.ts, s.event_id, s.site_id, s.read_point_id FROM scans s
    WHERE s.tracking_id = t.tracking_id AND s.tracking_id IS NOT NULL
      AND s.ts >= t.first_new AND s.kind <> %(noread)s AND ({old})
    OFFSET 0
) o
"""

# Waits the batch creates (a pair with a new read in it) and those it splits (two
# counted reads with a new one between them); only waits up to the link horizon.
_DWELL_DELTAS = f"""
WITH now_seq AS (
    SELECT q.*, lead(q.ts) OVER w AS next_ts, lead(q.new) OVER w AS next_new
    FROM rollup_seq q WINDOW w AS (PARTITION BY q.tracking_id ORDER BY q.ts, q.event_id)
), before AS (
    SELECT q.tracking_id, q.ts, q.event_id,
           lead(q.ts) OVER (PARTITION BY q.tracking_id ORDER BY q.ts, q.event_id) AS old_next
    FROM rollup_seq q WHERE NOT q.new
), d AS (
    SELECT site_id, read_point_id, ts, {bucket_sql("next_ts - ts")} AS bucket, 1 AS n
    FROM now_seq
    WHERE next_ts IS NOT NULL AND (new OR next_new) AND next_ts - ts <= %(link)s
    UNION ALL
    SELECT a.site_id, a.read_point_id, a.ts, {bucket_sql("b.old_next - a.ts")}, -1
    FROM now_seq a JOIN before b USING (tracking_id, ts, event_id)
    WHERE NOT a.new AND a.next_new AND b.old_next IS NOT NULL
      AND b.old_next - a.ts <= %(link)s
)
INSERT INTO rollup_dwell_hours (site_id, read_point_id, hour, bucket, waits)
SELECT site_id, read_point_id, {_HOUR.format("ts")}, bucket, sum(n)
FROM d GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0
ON CONFLICT (hour, site_id, read_point_id, bucket) DO UPDATE SET
    waits = rollup_dwell_hours.waits + EXCLUDED.waits
"""
