"""The reference-data repository: exactly one rule for storing each entity (site, read
point with its successors, device, service class, stage standard, missing window,
device thresholds, site tolerances, sort plan, manifest), used by the loader
(`db load-scenario`), `site apply` (storage/sites.py), the demo, `sim site`, the
benchmarks and the admin API.

Each rule is written once, as a *step*: a generator that yields the statements to run
(`Query`, or `Copy` for bulk rows) and is sent back each statement's rows, so the
rule holds no I/O (the way psycopg keeps its protocol apart from I/O). Two thin
executors run steps in one transaction: `run` on a psycopg connection (the loader,
the demo, the tests) and `run_async` on an async one (the admin API, on its pool).
A rule refuses what it cannot store meaningfully with ReferenceDataError (the admin
API answers 422); the model (storage/model.py) refuses unknown zones and stages.

The rules, where the loader and the admin API used to differ, are the admin API's:
a read point may move to another site and takes the given next hop; a device takes
the given description; a sort plan without a version becomes the site's next
version, one with a version replaces that version whole; a manifest row for a
parcel already known corrects it, but keeps its origin site and EPC when the row
names none (its partner account too), and of one tracking number given twice the
last row wins.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import psycopg
from psycopg.types.json import Jsonb

from parceltrack.layout import Zone
from storage.model import (
    THRESHOLD_FIELDS,
    Device,
    DeviceThresholds,
    ManifestEntry,
    MissingWindow,
    ReadPoint,
    ReferenceData,
    ReferenceDataError,
    ServiceClass,
    Site,
    SiteTolerances,
    SortPlan,
    StageStandard,
    never_applies,
    overlapping_versions,
    plan_point_problem,
)

__all__ = [
    "Copy",
    "Query",
    "ReferenceDataError",
    "Step",
    "load",
    "load_layout",
    "load_manifest",
    "load_standards",
    "run",
    "run_async",
    "save_device_thresholds",
    "save_devices",
    "save_layout",
    "save_manifest",
    "save_missing_windows",
    "save_read_points",
    "save_service_classes",
    "save_site_tolerances",
    "save_sites",
    "save_sort_plan",
    "save_stage_standards",
    "save_standards",
]

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement; with `many`, executed once per parameter row (no rows back)."""

    sql: str
    params: Sequence[Any] = ()
    many: Sequence[Sequence[Any]] | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    """`COPY ... FROM STDIN` of these rows."""

    sql: str
    rows: Iterable[Sequence[Any]]


Step = Generator[Query | Copy, Rows, T]


# -- executors --------------------------------------------------------------------


def _sync(cur: psycopg.Cursor[Any], statement: Query | Copy) -> Rows:
    if isinstance(statement, Copy):
        with cur.copy(statement.sql) as copy:
            for row in statement.rows:
                copy.write_row(row)
        return []
    if statement.many is not None:
        cur.executemany(statement.sql, statement.many)
        return []
    cur.execute(statement.sql, statement.params)
    return cur.fetchall() if cur.description else []


def run(conn: psycopg.Connection[Any], step: Step[T]) -> T:
    """Run a step on `conn` in one transaction; its result."""
    with conn.transaction(), conn.cursor() as cur:
        try:
            statement = next(step)
            while True:
                statement = step.send(_sync(cur, statement))
        except StopIteration as done:
            return cast(T, done.value)


async def _async(cur: psycopg.AsyncCursor[Any], statement: Query | Copy) -> Rows:
    if isinstance(statement, Copy):
        async with cur.copy(statement.sql) as copy:
            for row in statement.rows:
                await copy.write_row(row)
        return []
    if statement.many is not None:
        await cur.executemany(statement.sql, statement.many)
        return []
    await cur.execute(statement.sql, statement.params)
    return await cur.fetchall() if cur.description else []


async def run_async(conn: psycopg.AsyncConnection[Any], step: Step[T]) -> T:
    """Run a step on an async `conn` in one transaction; its result."""
    async with conn.transaction(), conn.cursor() as cur:
        try:
            statement = next(step)
            while True:
                statement = step.send(await _async(cur, statement))
        except StopIteration as done:
            return cast(T, done.value)


# -- one rule per entity -------------------------------------------------------------


def save_sites(sites: Iterable[Site]) -> Step[None]:
    """Create or change sites; a time zone PostgreSQL does not know is refused."""
    sites = list(sites)
    zones = {s.timezone for s in sites}
    known = yield Query("SELECT name FROM pg_timezone_names WHERE name = ANY(%s)", (list(zones),))
    if unknown := zones - {str(name) for (name,) in known}:
        raise ReferenceDataError(f"unknown time zone {sorted(unknown)[0]!r}")
    yield Query(
        "INSERT INTO sites (site_id, name, timezone) VALUES (%s, %s, %s) "
        "ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone",
        many=[(s.site_id, s.name, s.timezone) for s in sites],
    )


def _hops_first(read_points: Iterable[ReadPoint]) -> list[ReadPoint]:
    """Read points ordered so that a next hop given in the same batch comes before the
    read point leading to it (the foreign key needs it stored first)."""
    by_id = {rp.read_point_id: rp for rp in read_points}
    ordered: list[ReadPoint] = []
    state: dict[str, bool] = {}  # False: being placed; True: placed
    for start in by_id:
        path: list[str] = []
        current: str | None = start
        while current in by_id and current not in state:
            state[current] = False
            path.append(current)
            current = by_id[current].next_read_point_id
        if current is not None and state.get(current) is False:
            raise ReferenceDataError(f"read points form a loop through {current!r}")
        for rp_id in reversed(path):
            state[rp_id] = True
            ordered.append(by_id[rp_id])
    return ordered


def save_read_points(read_points: Iterable[ReadPoint]) -> Step[None]:
    """Create or change read points (site, zone, stage, description, position, next hop
    and successors all as given); their site and successors must exist or come in the
    same batch. The successors given replace the read point's stored ones."""
    read_points = _hops_first(read_points)
    yield Query(
        "INSERT INTO read_points (read_point_id, site_id, zone, stage, description, "
        "position, next_read_point_id) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (read_point_id) DO UPDATE SET site_id = EXCLUDED.site_id, "
        "zone = EXCLUDED.zone, stage = EXCLUDED.stage, description = EXCLUDED.description, "
        "position = EXCLUDED.position, next_read_point_id = EXCLUDED.next_read_point_id",
        many=[
            (r.read_point_id, r.site_id, r.zone.value, r.stage.value, r.description,
             r.position, r.next_read_point_id)
            for r in read_points
        ],
    )  # fmt: skip
    yield Query(
        "DELETE FROM read_point_successors WHERE read_point_id = ANY(%s)",
        ([r.read_point_id for r in read_points],),
    )
    yield Query(
        "INSERT INTO read_point_successors (read_point_id, successor_id) VALUES (%s, %s)",
        many=[(r.read_point_id, nxt) for r in read_points for nxt in r.successors],
    )


def save_devices(devices: Iterable[Device]) -> Step[None]:
    """Register or change devices (protocol and settings as given); their site and read
    point must exist."""
    yield Query(
        "INSERT INTO devices (device_id, site_id, read_point_id, kind, description, settings) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
        "site_id = EXCLUDED.site_id, read_point_id = EXCLUDED.read_point_id, "
        "kind = EXCLUDED.kind, description = EXCLUDED.description, "
        "settings = EXCLUDED.settings",
        many=[
            (d.device_id, d.site_id, d.read_point_id, d.kind.value, d.description,
             Jsonb(dict(d.settings)))
            for d in devices
        ],
    )  # fmt: skip


def save_service_classes(classes: Iterable[ServiceClass]) -> Step[None]:
    """Create or change service classes and their delivery standard."""
    yield Query(
        "INSERT INTO service_classes (service_class, description, delivery_days) "
        "VALUES (%s, %s, %s) ON CONFLICT (service_class) DO UPDATE SET "
        "description = EXCLUDED.description, delivery_days = EXCLUDED.delivery_days",
        many=[(c.service_class, c.description, c.delivery_days) for c in classes],
    )


def _stages_present(pairs: Sequence[tuple[str, str]], what: str) -> Step[None]:
    """Refuse a setting for a (site, stage) the site has no read point at: it would never
    apply. Only known sites: an unknown one is left to the foreign key, so it stays the
    conflict it is for every other reference (409 naming the site in the API)."""
    missing = yield Query(
        "SELECT s.site_id, s.stage FROM unnest(%s::text[], %s::text[]) AS s (site_id, stage) "
        "WHERE EXISTS (SELECT 1 FROM sites WHERE sites.site_id = s.site_id) "
        "AND NOT EXISTS (SELECT 1 FROM read_points r "
        "WHERE r.site_id = s.site_id AND r.stage = s.stage) LIMIT 1",
        ([site for site, _ in pairs], [stage for _, stage in pairs]),
    )
    if missing:
        site, stage = missing[0]
        raise ReferenceDataError(never_applies(site, stage, what))


def save_stage_standards(standards: Iterable[StageStandard]) -> Step[None]:
    """Set stage standards. One for a stage the site has no read point for would never
    apply (detection would time the stage by its default), so it is refused."""
    standards = list(standards)
    yield from _stages_present([(s.site_id, s.stage.value) for s in standards], "a standard")
    yield Query(
        "INSERT INTO stage_standards (site_id, stage, service_class, max_seconds) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (site_id, stage, service_class) DO UPDATE "
        "SET max_seconds = EXCLUDED.max_seconds",
        many=[(s.site_id, s.stage.value, s.service_class, s.max_seconds) for s in standards],
    )


def save_missing_windows(windows: Iterable[MissingWindow]) -> Step[None]:
    """Set missing windows, one per site, class (or none: all) and stage (or none); one
    for a stage the site has no read point at is refused, as a standard would be."""
    windows = list(windows)
    staged = [(w.site_id, w.stage.value) for w in windows if w.stage is not None]
    yield from _stages_present(staged, "a missing window")
    yield Query(
        "INSERT INTO missing_windows (site_id, service_class, stage, window_s) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (site_id, coalesce(service_class, ''), "
        "coalesce(stage, '')) DO UPDATE SET window_s = EXCLUDED.window_s",
        many=[
            (w.site_id, w.service_class, None if w.stage is None else w.stage.value, w.window_s)
            for w in windows
        ],
    )


def save_device_thresholds(thresholds: Iterable[DeviceThresholds]) -> Step[None]:
    """Set a site's device silence window and no-read spike limits, all of them."""
    columns = ", ".join(THRESHOLD_FIELDS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in THRESHOLD_FIELDS)
    yield Query(
        f"INSERT INTO device_thresholds (site_id, {columns}) VALUES "
        f"(%s, {', '.join(['%s'] * len(THRESHOLD_FIELDS))}) "
        f"ON CONFLICT (site_id) DO UPDATE SET {updates}",
        many=[(t.site_id, *(getattr(t, c) for c in THRESHOLD_FIELDS)) for t in thresholds],
    )


def save_site_tolerances(tolerances: Iterable[SiteTolerances]) -> Step[None]:
    """Set a site's clock-skew tolerance and duplicate gap."""
    yield Query(
        "INSERT INTO site_tolerances (site_id, skew_tolerance_s, duplicate_gap_s) "
        "VALUES (%s, %s, %s) ON CONFLICT (site_id) DO UPDATE SET "
        "skew_tolerance_s = EXCLUDED.skew_tolerance_s, duplicate_gap_s = EXCLUDED.duplicate_gap_s",
        many=[(t.site_id, t.skew_tolerance_s, t.duplicate_gap_s) for t in tolerances],
    )


def save_sort_plan(plan: SortPlan) -> Step[int]:
    """Store one version of a site's sort plan whole; returns its sort_plan_id.

    Without a version it becomes the site's next one; with one, it replaces that
    version (its time and every entry)."""
    # Serialises "the next version" between concurrent writers.
    yield Query("SELECT pg_advisory_xact_lock(hashtext('sort_plans'), 0)")
    # What a site file refuses: a chute or door that is no chute or door of the site,
    # another version in force from the same moment (checked last, below).
    points = {e.chute_read_point_id for e in plan.entries} | {
        e.door_read_point_id for e in plan.entries if e.door_read_point_id
    }
    # Unknown read points are left to the foreign key: a conflict, as everywhere (409).
    zones = yield Query(
        "SELECT read_point_id, site_id, zone FROM read_points WHERE read_point_id = ANY(%s)",
        (sorted(points),),
    )
    found = {str(r): (str(site), str(z)) for r, site, z in zones}
    for e in plan.entries:
        for rp, want in ((e.chute_read_point_id, Zone.CHUTE), (e.door_read_point_id, Zone.DOOR)):
            if not rp or rp not in found:
                continue
            site, zone = found[rp]
            if problem := plan_point_problem(rp, want, zone if site == plan.site_id else None):
                raise ReferenceDataError(problem)
    saved = yield Query(
        "INSERT INTO sort_plans (site_id, version, effective_from) "
        "SELECT %s, coalesce(%s::integer, max(version) + 1, 1), %s "
        "FROM sort_plans WHERE site_id = %s "
        "ON CONFLICT (site_id, version) DO UPDATE SET effective_from = EXCLUDED.effective_from "
        "RETURNING sort_plan_id",
        (plan.site_id, plan.version, plan.effective_from, plan.site_id),
    )
    plan_id = int(saved[0][0])
    yield Query("DELETE FROM sort_plan_entries WHERE sort_plan_id = %s", (plan_id,))
    yield Query(
        "INSERT INTO sort_plan_entries (sort_plan_id, destination, chute_read_point_id, "
        "door_read_point_id) VALUES (%s, %s, %s, %s)",
        many=[
            (plan_id, e.destination, e.chute_read_point_id, e.door_read_point_id)
            for e in plan.entries
        ],
    )
    same = yield Query(
        "SELECT version FROM sort_plans WHERE site_id = %s AND effective_from = %s "
        "AND sort_plan_id <> %s",
        (plan.site_id, plan.effective_from, plan_id),
    )
    if same:
        raise ReferenceDataError(overlapping_versions(plan.effective_from, int(same[0][0])))
    return plan_id


def save_manifest(entries: Iterable[ManifestEntry], origin_site: str | None = None) -> Step[int]:
    """Bulk-store manifest rows (COPY, then one upsert); returns the parcels stored.

    `origin_site` fills in rows that name none. An EPC already held by another parcel
    or an unknown site fails the statement (psycopg's IntegrityError) and nothing of
    the load is kept."""
    yield Query(
        "CREATE TEMP TABLE manifest_stage (n bigserial, tracking_id text, "
        "service_class text, destination text, destination_site text, origin_site text, "
        "epc text, account text) ON COMMIT DROP"
    )
    yield Copy(
        "COPY manifest_stage (tracking_id, service_class, destination, destination_site, "
        "origin_site, epc, account) FROM STDIN",
        (
            (e.tracking_id, e.service_class, e.destination, e.destination_site,
             e.origin_site or origin_site, e.epc, e.account)
            for e in entries
        ),
    )  # fmt: skip
    stored = yield Query(
        "WITH stored AS (INSERT INTO parcels (tracking_id, service_class, destination, "
        "destination_site, origin_site, epc, account) "
        "SELECT DISTINCT ON (tracking_id) tracking_id, service_class, destination, "
        "destination_site, origin_site, epc, account FROM manifest_stage "
        "ORDER BY tracking_id, n DESC "
        "ON CONFLICT (tracking_id) DO UPDATE SET service_class = EXCLUDED.service_class, "
        "destination = EXCLUDED.destination, destination_site = EXCLUDED.destination_site, "
        "origin_site = coalesce(EXCLUDED.origin_site, parcels.origin_site), "
        "epc = coalesce(EXCLUDED.epc, parcels.epc), "
        "account = coalesce(EXCLUDED.account, parcels.account) "
        "RETURNING 1) SELECT count(*) FROM stored"
    )
    return int(stored[0][0])


# -- the loader's batches ----------------------------------------------------------


def save_layout(data: ReferenceData) -> Step[None]:
    """Sites, then their read points, then the devices at them."""
    yield from save_sites(data.sites)
    yield from save_read_points(data.read_points)
    yield from save_devices(data.devices)


def save_standards(data: ReferenceData) -> Step[None]:
    """Service classes, stage standards and sort plans (the layout must be stored)."""
    yield from save_service_classes(data.service_classes)
    yield from save_stage_standards(data.stage_standards)
    for plan in data.sort_plans:
        yield from save_sort_plan(plan)


def load_layout(conn: psycopg.Connection[Any], data: ReferenceData) -> None:
    run(conn, save_layout(data))


def load_standards(conn: psycopg.Connection[Any], data: ReferenceData) -> None:
    run(conn, save_standards(data))


def load_manifest(
    conn: psycopg.Connection[Any], entries: Iterable[ManifestEntry], origin_site: str | None = None
) -> int:
    """Bulk-load manifest rows; returns the parcels stored. A row that contradicts the
    database (an EPC held by another parcel, an unknown site) refuses the whole load."""
    try:
        return run(conn, save_manifest(entries, origin_site))
    except psycopg.errors.IntegrityError as exc:
        raise ReferenceDataError(f"manifest not loaded: {exc.diag.message_detail or exc}") from exc


def load(conn: psycopg.Connection[Any], data: ReferenceData) -> int:
    """Everything in `data`, layout first; returns the manifest rows stored."""
    load_layout(conn, data)
    load_standards(conn, data)
    return load_manifest(conn, data.manifest)
