"""The managers' quality figures, over the stored schema.

The manager page (api/manager.py) and the daily report (quality/report.py) show
the same figures (`all_figures`), summed from the hourly rollups of storage/rollup.py;
the same figures over the raw scans of the period (`QUERIES`, `raw_figures`) are
kept as the reference the rollups are tested against (tests/integration/
test_rollup.py) and as the bench's floor. Tests run each against the real schema
(plain PostgreSQL, and TimescaleDB when PARCELTRACK_TIMESCALE_DSN is set). Days and
hours are the site's local ones.

Each figure is a table (`Figure`: named columns and rows), so every chart has a
table view and a CSV export of exactly what it draws.

Definitions:
- on-time rate: of the parcels that left a site (first read at a dispatch or
  delivery stage) on a day, those that did so by acceptance + the service class's
  J+n working days; by site, service class and the day they left;
- mis-sort rate: of the parcels first read at a chute on a day, those whose chute
  is not the one the sort plan in force then assigns to their destination;
- no-read rate: no-reads / all scans of the day (from `scan_throughput_1m`);
- loss rate: of the parcels first seen at a site on a day, those never read at a
  dispatch or delivery stage there and unseen for `lost_after` seconds;
- dwell: from a parcel's read at a read point to its next read anywhere, p50 and
  p95 by read point and the local hour of the read;
- complaint answer time: from the customer's complaint to the first answer, beside
  the time the deadline allowed; unanswered ones count until now;
- device uptime: the share of the period a device was not under a `silence` alert.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from parceltrack.i18n import N_
from storage import rollup

# Stages where a parcel leaves the site (parceltrack.layout.Stage values).
LEAVING = rollup.LEAVING
CHUTE = rollup.CHUTE

ON_TIME = """
WITH left_site AS (
    SELECT s.site_id, s.tracking_id, min(s.ts) AS at
    FROM scans s JOIN read_points rp USING (read_point_id)
    WHERE s.ts >= %(since)s AND s.ts < %(until)s AND s.tracking_id IS NOT NULL
      AND rp.stage = ANY(%(leaving)s)
      AND (%(site)s::text IS NULL OR s.site_id = %(site)s)
    GROUP BY 1, 2
), parcel AS (
    SELECT l.*, p.service_class, p.accepted_at, sc.delivery_days,
           date_trunc('day', p.accepted_at, 'UTC') AS accepted_day
    FROM left_site l
    JOIN parcels p USING (tracking_id)
    JOIN service_classes sc USING (service_class)
), allowed AS (
    -- J+n depends only on the UTC day of acceptance and n: computed once per pair,
    -- not once per parcel (add_working_days(t, n) - t is the same all day long).
    SELECT accepted_day, delivery_days,
           add_working_days(accepted_day, delivery_days) - accepted_day AS allowance
    FROM (SELECT DISTINCT accepted_day, delivery_days FROM parcel) pairs
)
SELECT x.site_id, x.service_class, (x.at AT TIME ZONE st.timezone)::date::text AS day,
       count(*) AS finished,
       count(*) FILTER (WHERE x.at <= x.accepted_at + a.allowance) AS on_time
FROM parcel x
JOIN allowed a USING (accepted_day, delivery_days)
JOIN sites st ON st.site_id = x.site_id
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

LOSSES = """
WITH visits AS (
    SELECT s.site_id, s.tracking_id, min(s.ts) AS arrived, max(s.ts) AS last_ts,
           bool_or(rp.stage = ANY(%(leaving)s)) AS left_site
    FROM scans s JOIN read_points rp USING (read_point_id)
    WHERE s.ts >= %(since)s AND s.ts < %(until)s AND s.tracking_id IS NOT NULL
      AND (%(site)s::text IS NULL OR s.site_id = %(site)s)
    GROUP BY 1, 2
)
SELECT v.site_id, (v.arrived AT TIME ZONE st.timezone)::date::text AS day,
       count(*) AS parcels_seen,
       count(*) FILTER (WHERE NOT v.left_site
                        AND v.last_ts < now() - make_interval(secs => %(lost_after)s)) AS lost
FROM visits v JOIN sites st USING (site_id)
GROUP BY 1, 2
ORDER BY 1, 2
"""

MISSORTS = """
WITH chuted AS (
    SELECT DISTINCT ON (s.site_id, s.tracking_id) s.site_id, s.tracking_id, s.ts,
           s.read_point_id AS chute
    FROM scans s JOIN read_points rp USING (read_point_id)
    WHERE s.ts >= %(since)s AND s.ts < %(until)s AND s.tracking_id IS NOT NULL
      AND rp.stage = %(chute)s AND (%(site)s::text IS NULL OR s.site_id = %(site)s)
    ORDER BY s.site_id, s.tracking_id, s.ts
), planned AS (
    SELECT c.*,
           (SELECT e.chute_read_point_id FROM sort_plans sp
              JOIN sort_plan_entries e USING (sort_plan_id)
             WHERE sp.site_id = c.site_id AND sp.effective_from <= c.ts
               AND e.destination = p.destination
             ORDER BY sp.effective_from DESC, sp.version DESC LIMIT 1) AS planned
    FROM chuted c JOIN parcels p USING (tracking_id)
)
SELECT c.site_id, (c.ts AT TIME ZONE st.timezone)::date::text AS day,
       count(*) FILTER (WHERE c.planned IS NOT NULL) AS chuted,
       count(*) FILTER (WHERE c.planned IS NOT NULL AND c.chute <> c.planned) AS missorted
FROM planned c JOIN sites st USING (site_id)
GROUP BY 1, 2
ORDER BY 1, 2
"""

NOREADS = """
SELECT t.site_id, (t.bucket AT TIME ZONE st.timezone)::date::text AS day,
       sum(t.scans)::bigint AS scans, sum(t.noreads)::bigint AS noreads
FROM site_throughput_1m t JOIN sites st USING (site_id)
WHERE t.bucket >= %(since)s AND t.bucket < %(until)s
  AND (%(site)s::text IS NULL OR t.site_id = %(site)s)
GROUP BY 1, 2
ORDER BY 1, 2
"""

DWELL = """
WITH s AS (
    SELECT s.site_id, s.read_point_id, s.tracking_id, s.ts FROM scans s
    WHERE s.ts >= %(since)s AND s.ts < %(until)s AND s.tracking_id IS NOT NULL
      AND s.kind <> 'noread' AND (%(site)s::text IS NULL OR s.site_id = %(site)s)
), waits AS (
    SELECT s.*, lead(s.ts) OVER (PARTITION BY s.tracking_id ORDER BY s.ts) - s.ts AS wait
    FROM s
)
SELECT site_id, read_point_id, stage, hour, reads, p[1] AS dwell_p50_s, p[2] AS dwell_p95_s
FROM (
    -- One sort per group for both percentiles; date_part is float8 (extract is numeric).
    SELECT w.site_id, w.read_point_id, rp.stage,
           extract(hour FROM w.ts AT TIME ZONE st.timezone)::int AS hour,
           count(*) AS reads,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP
             (ORDER BY date_part('epoch', w.wait)) AS p
    FROM waits w JOIN read_points rp USING (read_point_id)
    JOIN sites st ON st.site_id = w.site_id
    WHERE w.wait IS NOT NULL
    GROUP BY 1, 2, 3, 4
) per_hour
ORDER BY 1, 2, 4
"""

COMPLAINTS = """
SELECT f.feedback_id, f.site_id, f.created_at, f.deadline,
       extract(epoch FROM coalesce(f.first_answer_at, now()) - f.created_at)::float8
         AS answer_s,
       extract(epoch FROM f.deadline - f.created_at)::float8 AS deadline_s,
       CASE WHEN f.first_answer_at IS NOT NULL AND f.first_answer_at <= f.deadline
              THEN 'answered in time'
            WHEN f.first_answer_at IS NOT NULL THEN 'answered late'
            WHEN now() > f.deadline THEN 'overdue'
            ELSE 'waiting' END AS outcome
FROM feedback f
WHERE f.kind = 'complaint' AND f.created_at >= %(since)s AND f.created_at < %(until)s
  AND (%(site)s::text IS NULL OR f.site_id = %(site)s)
ORDER BY f.created_at, f.feedback_id
"""

UPTIME = """
WITH down AS (
    SELECT a.device_id,
           sum(extract(epoch FROM least(coalesce(a.resolved_at, now()), %(until)s)
                                  - greatest(a.opened_at, %(since)s))) AS down_s,
           count(*) AS silences
    FROM alerts a
    WHERE a.kind = 'silence' AND a.device_id IS NOT NULL
      AND a.opened_at < %(until)s AND coalesce(a.resolved_at, now()) > %(since)s
    GROUP BY 1
)
SELECT d.site_id, d.device_id, d.read_point_id,
       coalesce(dn.down_s, 0)::float8 AS down_s, coalesce(dn.silences, 0) AS silences,
       greatest(0, 1 - coalesce(dn.down_s, 0)
                       / extract(epoch FROM least(%(until)s, now()) - %(since)s))::float8
         AS uptime
FROM devices d LEFT JOIN down dn USING (device_id)
WHERE (%(site)s::text IS NULL OR d.site_id = %(site)s)
ORDER BY 1, 2
"""


@dataclass(frozen=True, slots=True)
class Figure:
    """One chart's data: what its table view and CSV export show."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def column(self, name: str) -> list[Any]:
        at = self.columns.index(name)
        return [row[at] for row in self.rows]


@dataclass(frozen=True, slots=True)
class Period:
    """What the figures cover: [since, until), one site or all, and the loss horizon."""

    since: datetime
    until: datetime
    site: str | None = None
    lost_after_s: float = 3600.0

    def hours(self) -> Period:
        """The whole UTC hours that hold the period: what the rollups answer."""
        # In UTC: an offset such as +05:30 would round to half past a UTC hour.
        since = self.since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        until = self.until.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if until < self.until:
            until += timedelta(hours=1)
        return Period(since, until, self.site, self.lost_after_s)

    def params(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "site": self.site,
            "lost_after": self.lost_after_s,
            "leaving": list(LEAVING),
            "chute": CHUTE,
        }


def _rate(part: Any, whole: Any) -> float | None:
    return float(part) / float(whole) if whole else None


RATE_COLUMNS = (
    "site_id", "day", "parcels_seen", "lost", "loss_rate", "chuted", "missorted",
    "mis_sort_rate", "scans", "noreads", "no_read_rate",
)  # fmt: skip
DWELL_COLUMNS = ("site_id", "read_point_id", "stage", "hour", "reads", "dwell_p50_s", "dwell_p95_s")


async def _query(conn: AsyncConnection[Any], name: str, sql: str, period: Period) -> Figure:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(sql, period.params())
        columns = tuple(c.name for c in cur.description or ())
        return Figure(name, columns, list(await cur.fetchall()))


async def on_time(conn: AsyncConnection[Any], period: Period) -> Figure:
    raw = await _query(conn, "on_time", ON_TIME, period)
    return Figure(
        raw.name,
        (*raw.columns, "on_time_rate"),
        [(*r, _rate(r[4], r[3])) for r in raw.rows],
    )


async def rates(conn: AsyncConnection[Any], period: Period) -> Figure:
    """Loss, mis-sort and no-read rates per site and day, from three queries."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for sql, name in ((LOSSES, "losses"), (MISSORTS, "missorts"), (NOREADS, "noreads")):
        part = await _query(conn, name, sql, period)
        for row in part.rows:
            merged.setdefault((row[0], row[1]), {}).update(
                zip(part.columns[2:], row[2:], strict=True)
            )
    columns = RATE_COLUMNS
    rows = []
    for (site, day), v in sorted(merged.items()):
        seen, lost = v.get("parcels_seen", 0), v.get("lost", 0)
        chuted, missorted = v.get("chuted", 0), v.get("missorted", 0)
        scans, noreads = v.get("scans", 0), v.get("noreads", 0)
        rows.append(
            (site, day, seen, lost, _rate(lost, seen), chuted, missorted,
             _rate(missorted, chuted), scans, noreads, _rate(noreads, scans))
        )  # fmt: skip
    return Figure("rates", columns, rows)


async def dwell(conn: AsyncConnection[Any], period: Period) -> Figure:
    return await _query(conn, "dwell", DWELL, period)


async def complaints(conn: AsyncConnection[Any], period: Period) -> Figure:
    return await _query(conn, "complaints", COMPLAINTS, period)


async def uptime(conn: AsyncConnection[Any], period: Period) -> Figure:
    return await _query(conn, "uptime", UPTIME, period)


FIGURES: dict[str, Callable[[AsyncConnection[Any], Period], Awaitable[Figure]]] = {
    "on_time": on_time,
    "rates": rates,
    "dwell": dwell,
    "complaints": complaints,
    "uptime": uptime,
}
# Every query, by name, for the tests that run each against the real schema.
QUERIES: dict[str, str] = {
    "on_time": ON_TIME,
    "losses": LOSSES,
    "missorts": MISSORTS,
    "noreads": NOREADS,
    "dwell": DWELL,
    "complaints": COMPLAINTS,
    "uptime": UPTIME,
}


# The same figures from the hourly rollups (storage/rollup.py): sums of hour rows.
# A UTC hour counts on the site's local day (and hour of day) it starts in.
ON_TIME_ROLLED = """
SELECT r.site_id, r.service_class, (r.hour AT TIME ZONE st.timezone)::date::text AS day,
       sum(r.finished)::bigint AS finished, sum(r.on_time)::bigint AS on_time
FROM rollup_on_time_hours r JOIN sites st USING (site_id)
WHERE r.hour >= %(since)s AND r.hour < %(until)s
  AND (%(site)s::text IS NULL OR r.site_id = %(site)s)
GROUP BY 1, 2, 3
HAVING sum(r.finished) > 0
ORDER BY 1, 2, 3
"""

RATES_ROLLED = """
WITH hours AS (
    SELECT r.site_id, (r.hour AT TIME ZONE st.timezone)::date::text AS day,
           sum(r.parcels_seen)::bigint AS parcels_seen,
           sum(r.first_chutes)::bigint AS first_chutes, sum(r.chuted)::bigint AS chuted,
           sum(r.missorted)::bigint AS missorted, sum(r.scans)::bigint AS scans,
           sum(r.noreads)::bigint AS noreads
    FROM rollup_site_hours r JOIN sites st USING (site_id)
    WHERE r.hour >= %(since)s AND r.hour < %(until)s
      AND (%(site)s::text IS NULL OR r.site_id = %(site)s)
    GROUP BY 1, 2
), lost AS (
    -- Visits that never left are few (a partial index holds them).
    SELECT v.site_id, (v.arrived AT TIME ZONE st.timezone)::date::text AS day,
           count(*) AS lost
    FROM rollup_visits v JOIN sites st USING (site_id)
    WHERE v.left_at IS NULL AND v.arrived >= %(since)s AND v.arrived < %(until)s
      AND (%(site)s::text IS NULL OR v.site_id = %(site)s)
      AND v.last_seen < now() - make_interval(secs => %(lost_after)s)
    GROUP BY 1, 2
)
SELECT h.site_id, h.day, h.parcels_seen, coalesce(l.lost, 0) AS lost, h.chuted, h.missorted,
       h.scans, h.noreads
FROM hours h LEFT JOIN lost l USING (site_id, day)
WHERE h.parcels_seen > 0 OR h.first_chutes > 0 OR h.scans > 0
ORDER BY 1, 2
"""

DWELL_ROLLED = """
SELECT d.site_id, d.read_point_id, rp.stage,
       extract(hour FROM d.hour AT TIME ZONE st.timezone)::int AS hour, d.bucket,
       sum(d.waits)::bigint AS waits
FROM rollup_dwell_hours d JOIN read_points rp USING (read_point_id)
JOIN sites st ON st.site_id = d.site_id
WHERE d.hour >= %(since)s AND d.hour < %(until)s
  AND (%(site)s::text IS NULL OR d.site_id = %(site)s)
GROUP BY 1, 2, 3, 4, 5
HAVING sum(d.waits) > 0
ORDER BY 1, 2, 4, 5
"""


async def on_time_rolled(conn: AsyncConnection[Any], period: Period) -> Figure:
    raw = await _query(conn, "on_time", ON_TIME_ROLLED, period)
    return Figure(
        raw.name,
        (*raw.columns, "on_time_rate"),
        [(*r, _rate(r[4], r[3])) for r in raw.rows],
    )


async def rates_rolled(conn: AsyncConnection[Any], period: Period) -> Figure:
    raw = await _query(conn, "rates", RATES_ROLLED, period)
    rows = [
        (site, day, seen, lost, _rate(lost, seen), chuted, missorted,
         _rate(missorted, chuted), scans, noreads, _rate(noreads, scans))
        for site, day, seen, lost, chuted, missorted, scans, noreads in raw.rows
    ]  # fmt: skip
    return Figure("rates", RATE_COLUMNS, rows)


async def dwell_rolled(conn: AsyncConnection[Any], period: Period) -> Figure:
    """p50 and p95 from each (read point, hour of day)'s histogram of waits."""
    raw = await _query(conn, "dwell", DWELL_ROLLED, period)
    groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for site, point, stage, hour, bucket, waits in raw.rows:
        groups.setdefault((site, point, stage, hour), []).append((bucket, waits))
    rows = []
    for key, histogram in groups.items():
        p50, p95 = rollup.percentiles(histogram, (0.5, 0.95))
        rows.append((*key, sum(n for _, n in histogram), p50, p95))
    return Figure("dwell", DWELL_COLUMNS, rows)


ROLLED_UP: dict[str, Callable[[AsyncConnection[Any], Period], Awaitable[Figure]]] = {
    "on_time": on_time_rolled,
    "rates": rates_rolled,
    "dwell": dwell_rolled,
    "complaints": complaints,
    "uptime": uptime,
}

# Sorting the period's scans (dwell) spills to disk with PostgreSQL's default 4 MB.
WORK_MEM = "256MB"


async def raw_figures(conn: AsyncConnection[Any], period: Period) -> list[Figure]:
    """Every figure from the raw scans (`QUERIES`): the reference the rollups are
    checked against, in one transaction with room to sort in memory (SET LOCAL: the
    connection goes back to its pool as it was)."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        return [await compute(conn, period) for compute in FIGURES.values()]


async def all_figures(conn: AsyncConnection[Any], period: Period) -> list[Figure]:
    """Every figure of the page and the report: those of the scans from the hourly
    rollups (storage/rollup.py) over the whole hours that hold the period
    (`Period.hours`); complaints and uptime from their own small tables over the
    period itself. Roll up first (`rollup.catch_up`) for the scans committed until now."""
    async with conn.transaction():
        return [await one_figure(conn, name, period) for name in ROLLED_UP]


async def one_figure(conn: AsyncConnection[Any], name: str, period: Period) -> Figure:
    """One figure as `all_figures` computes it: the scans' figures over the whole
    hours that hold the period, complaints and uptime over the period itself."""
    exact = name in ("complaints", "uptime")
    return await ROLLED_UP[name](conn, period if exact else period.hours())


def names() -> Sequence[str]:
    return tuple(FIGURES)


# What each figure is called on the page and in the report (gettext domain `quality`).
TITLES: dict[str, str] = {
    "on_time": N_("On-time rate by site and service class"),
    "rates": N_("Mis-sort, no-read and loss rates"),
    "dwell": N_("Where parcels wait: dwell by read point and hour"),
    "complaints": N_("Complaint answer times against the deadline"),
    "uptime": N_("Device uptime"),
}
# The figures at a glance, in this order: rates are fractions, overdue a count.
SUMMARY: dict[str, str] = {
    "on_time_rate": N_("On-time rate"),
    "mis_sort_rate": N_("Mis-sort rate"),
    "no_read_rate": N_("No-read rate"),
    "loss_rate": N_("Loss rate"),
    "overdue_complaints": N_("Overdue complaints"),
    "lowest_uptime": N_("Lowest device uptime"),
}


def summary(found: Sequence[Figure]) -> dict[str, float | int | None]:
    """The figures at a glance: each rate over the whole period, overdue complaints,
    and the lowest device uptime (None where there is nothing to rate)."""
    by = {f.name: f for f in found}

    def total(name: str, column: str) -> float:
        return float(sum(v or 0 for v in by[name].column(column)))

    uptimes = [u for u in by["uptime"].column("uptime") if u is not None]
    return {
        "on_time_rate": _rate(total("on_time", "on_time"), total("on_time", "finished")),
        "mis_sort_rate": _rate(total("rates", "missorted"), total("rates", "chuted")),
        "no_read_rate": _rate(total("rates", "noreads"), total("rates", "scans")),
        "loss_rate": _rate(total("rates", "lost"), total("rates", "parcels_seen")),
        "overdue_complaints": by["complaints"].column("outcome").count("overdue"),
        "lowest_uptime": min(uptimes) if uptimes else None,
    }


# The periods computed ahead (`figure_snapshots`), how often by default (`parceltrack
# quality --figures-every`), and how old a snapshot the page still takes (it shows
# when it was computed): on 20M scans one snapshot takes minutes.
SNAPSHOT_DAYS = (1, 7, 30)
SNAPSHOT_EVERY_S = 300.0
SNAPSHOT_MAX_AGE_S = 3600.0


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def body(found: Sequence[Figure], period: Period) -> dict[str, Any]:
    """The figures as the API sends them (JSON types only)."""
    return {
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "site": period.site,
        "summary": summary(found),
        "figures": [
            {
                "name": f.name,
                "columns": list(f.columns),
                "rows": [[_plain(v) for v in r] for r in f.rows],
            }
            for f in found
        ],
    }


def from_body(stored: dict[str, Any]) -> list[Figure]:
    return [
        Figure(f["name"], tuple(f["columns"]), [tuple(r) for r in f["rows"]])
        for f in stored["figures"]
    ]


async def take_snapshot(
    conn: AsyncConnection[Any], days: int, now: datetime, lost_after_s: float = 3600.0
) -> float:
    """Compute the figures of the last `days` days, every site, and store them; seconds taken."""
    period = Period(now - timedelta(days=days), now, None, lost_after_s)
    started = time.perf_counter()
    found = await all_figures(conn, period)
    took = time.perf_counter() - started
    await conn.execute(
        "INSERT INTO figure_snapshots (days, since, until, computed_at, took_s, body) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (days) DO UPDATE SET "
        "since = EXCLUDED.since, until = EXCLUDED.until, computed_at = EXCLUDED.computed_at, "
        "took_s = EXCLUDED.took_s, body = EXCLUDED.body",
        (days, period.since, period.until, now, took, json.dumps(body(found, period))),
    )
    return took


async def refresh_snapshots(
    conn: AsyncConnection[Any], now: datetime, every_s: float = SNAPSHOT_EVERY_S
) -> list[int]:
    """Recompute the stalest snapshot older than `every_s` (one per call, to spread the load)."""
    cur = await conn.execute("SELECT days, computed_at FROM figure_snapshots")
    ages = {int(d): (now - at).total_seconds() for d, at in await cur.fetchall()}
    stale = [d for d in SNAPSHOT_DAYS if ages.get(d, float("inf")) >= every_s]
    if not stale:
        return []
    oldest = max(stale, key=lambda d: ages.get(d, float("inf")))
    await take_snapshot(conn, oldest, now)
    return [oldest]


async def read_snapshot(
    conn: AsyncConnection[Any], days: int, now: datetime, max_age_s: float = SNAPSHOT_MAX_AGE_S
) -> tuple[dict[str, Any], datetime] | None:
    """The stored figures of the last `days` days and when they were computed, if fresh."""
    cur = await conn.execute(
        "SELECT body, computed_at FROM figure_snapshots WHERE days = %s AND computed_at >= %s",
        (days, now - timedelta(seconds=max_age_s)),
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1])
