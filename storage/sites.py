"""A whole site as its site file states it: read back from the database (`read_site`,
for `site export` and for the difference `site apply` prints) and put in force
(`replace_site`), as steps on the repository's executors (storage/reference.py).

`replace_site` makes the database say what the file says for that site: every entity
goes through its one rule in storage/reference.py; what the file no longer names
(read points, devices, standards, windows, plan versions of the site) is removed.
Service classes are shared by all sites: the file's are created or changed, others
are left alone.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from storage.model import (
    THRESHOLD_FIELDS,
    Device,
    DeviceThresholds,
    MissingWindow,
    ReadPoint,
    ReferenceData,
    ReferenceDataError,
    ServiceClass,
    Site,
    SiteTolerances,
    SortPlan,
    SortPlanEntry,
    StageStandard,
)
from storage.reference import (
    Query,
    Step,
    run,
    save_device_thresholds,
    save_devices,
    save_missing_windows,
    save_read_points,
    save_service_classes,
    save_site_tolerances,
    save_sites,
    save_sort_plan,
    save_stage_standards,
)
from storage.sitefile import Problem, SiteFileInvalid, parse_site
from storage.sitetext import canonical, render_site, site_diff


def read_site(site_id: str) -> Step[ReferenceData]:
    """Everything in force for one site, in the order a site file lists it."""
    found = yield Query("SELECT site_id, name, timezone FROM sites WHERE site_id = %s", (site_id,))
    if not found:
        raise ReferenceDataError(f"no site {site_id!r}")
    site = Site(*(str(v) for v in found[0]))
    succ: dict[str, list[str]] = defaultdict(list)
    for rp, nxt in (
        yield Query(
            "SELECT s.read_point_id, s.successor_id FROM read_point_successors s "
            "JOIN read_points r USING (read_point_id) WHERE r.site_id = %s "
            "ORDER BY 1, 2",
            (site_id,),
        )
    ):
        succ[str(rp)].append(str(nxt))
    rows = yield Query(
        "SELECT read_point_id, zone, stage, description, position FROM read_points "
        "WHERE site_id = %s ORDER BY position, read_point_id",
        (site_id,),
    )
    read_points = [
        ReadPoint(str(r), site_id, z, g, str(d), int(p), successors=tuple(succ[str(r)]))
        for r, z, g, d, p in rows
    ]
    rows = yield Query(
        "SELECT device_id, read_point_id, kind, description, settings FROM devices "
        "WHERE site_id = %s ORDER BY device_id",
        (site_id,),
    )
    devices = [Device(str(d), site_id, rp, k, str(desc), dict(st)) for d, rp, k, desc, st in rows]
    rows = yield Query(
        "SELECT stage, service_class, max_seconds FROM stage_standards WHERE site_id = %s "
        "ORDER BY stage, service_class",
        (site_id,),
    )
    standards = [StageStandard(site_id, g, str(c), float(s)) for g, c, s in rows]
    rows = yield Query(
        "SELECT service_class, stage, window_s FROM missing_windows WHERE site_id = %s "
        "ORDER BY service_class NULLS FIRST, stage NULLS FIRST",
        (site_id,),
    )
    windows = [MissingWindow(site_id, float(w), c, g) for c, g, w in rows]
    rows = yield Query(
        f"SELECT {', '.join(THRESHOLD_FIELDS)} FROM device_thresholds WHERE site_id = %s",
        (site_id,),
    )
    thresholds = [DeviceThresholds(site_id, *row) for row in rows]
    rows = yield Query(
        "SELECT skew_tolerance_s, duplicate_gap_s FROM site_tolerances WHERE site_id = %s",
        (site_id,),
    )
    tolerances = [SiteTolerances(site_id, float(a), float(b)) for a, b in rows]
    used = {s.service_class for s in standards} | {
        w.service_class for w in windows if w.service_class
    }
    rows = yield Query(
        "SELECT service_class, description, delivery_days FROM service_classes "
        "WHERE service_class = ANY(%s) ORDER BY 1",
        (sorted(used),),
    )
    classes = [ServiceClass(str(c), str(d), int(n)) for c, d, n in rows]
    return canonical(
        ReferenceData(
            sites=(site,),
            read_points=tuple(read_points),
            devices=tuple(devices),
            service_classes=tuple(classes),
            stage_standards=tuple(standards),
            sort_plans=tuple((yield from _read_plans(site_id))),
            missing_windows=tuple(windows),
            device_thresholds=tuple(thresholds),
            site_tolerances=tuple(tolerances),
        )
    )


def _read_plans(site_id: str) -> Step[list[SortPlan]]:
    rows = yield Query(
        "SELECT p.version, p.effective_from, e.destination, e.chute_read_point_id, "
        "e.door_read_point_id FROM sort_plans p JOIN sort_plan_entries e USING (sort_plan_id) "
        "WHERE p.site_id = %s ORDER BY p.effective_from, p.version, e.destination",
        (site_id,),
    )
    versions: dict[int, tuple[Any, list[SortPlanEntry]]] = {}
    for version, eff, dest, chute, door in rows:
        versions.setdefault(int(version), (eff, []))[1].append(SortPlanEntry(dest, chute, door))
    return [
        SortPlan(site_id, eff, tuple(entries), version)
        for version, (eff, entries) in versions.items()
    ]


def replace_site(data: ReferenceData) -> Step[None]:
    """Put one site's file in force: its one site, read points, devices, classes,
    standards, windows, thresholds, tolerances and plan versions (numbered 1.. by time);
    whatever of the site the file does not name is removed."""
    if len(data.sites) != 1:
        raise ReferenceDataError("a site file describes exactly one site")
    site = data.sites[0].site_id
    rp_ids = [r.read_point_id for r in data.read_points]
    yield from save_sites(data.sites)
    yield from save_read_points(data.read_points)
    yield Query(
        "DELETE FROM devices WHERE site_id = %s AND NOT device_id = ANY(%s)",
        (site, [d.device_id for d in data.devices]),
    )
    yield from save_devices(data.devices)
    yield from save_service_classes(data.service_classes)
    yield Query("DELETE FROM stage_standards WHERE site_id = %s", (site,))
    yield from save_stage_standards(data.stage_standards)
    yield Query("DELETE FROM missing_windows WHERE site_id = %s", (site,))
    yield from save_missing_windows(data.missing_windows)
    yield Query("DELETE FROM device_thresholds WHERE site_id = %s", (site,))
    yield from save_device_thresholds(data.device_thresholds)
    yield Query("DELETE FROM site_tolerances WHERE site_id = %s", (site,))
    yield from save_site_tolerances(data.site_tolerances)
    # The file's versions replace the site's whole history of plans (renumbered 1.. by
    # time): kept versions would clash with moved ones.
    yield Query("DELETE FROM sort_plans WHERE site_id = %s", (site,))
    plans = sorted(data.sort_plans, key=lambda p: p.effective_from)
    for version, plan in enumerate(plans, 1):
        yield from save_sort_plan(SortPlan(site, plan.effective_from, plan.entries, version))
    # Last, once no plan, device or hop of the site refers to them any more.
    yield Query(
        "UPDATE read_points SET next_read_point_id = NULL WHERE site_id = %s "
        "AND NOT read_point_id = ANY(%s)",
        (site, rp_ids),
    )
    yield Query(
        "DELETE FROM read_points WHERE site_id = %s AND NOT read_point_id = ANY(%s)",
        (site, rp_ids),
    )


def read_site_files(paths: Sequence[Path]) -> list[ReferenceData]:
    """Every site file given, parsed, with the CSV files each names (relative to it);
    SiteFileInvalid with every problem of every file when any has one."""
    problems: list[Problem] = []
    sites: list[ReferenceData] = []
    zones = zoneinfo.available_timezones() | {"UTC"}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8"
            problems.append(Problem(str(path), 1, "(file)", f"cannot read: {why}"))
            continue
        folder = path.parent

        def read(name: str, folder: Path = folder) -> str:
            return (folder / name).read_text(encoding="utf-8")

        try:
            sites.append(parse_site(str(path), text, read, zones))
        except SiteFileInvalid as exc:
            # CSV files are named as the site file names them: say where they are.
            problems += [
                p if p.file == str(path) else replace(p, file=str(folder / p.file))
                for p in exc.problems
            ]
    ids = [s.sites[0].site_id for s in sites]
    for twice in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(Problem("(files)", 1, "site.id", f"site {twice!r} is given twice"))
    if problems:
        raise SiteFileInvalid(problems)
    return sites


def apply_sites(
    conn: psycopg.Connection[Any], sites: Sequence[ReferenceData], dry_run: bool = False
) -> dict[str, list[str]]:
    """Per site, what changes; then (unless `dry_run`) every site put in force in one
    transaction. A refusal of the database (a foreign key) changes nothing."""

    def step() -> Step[dict[str, list[str]]]:
        diffs: dict[str, list[str]] = {}
        for data in sites:
            site = data.sites[0].site_id
            exists = yield Query("SELECT 1 FROM sites WHERE site_id = %s", (site,))
            try:
                before = (yield from read_site(site)) if exists else None
            except ReferenceDataError as exc:  # rows stored before today's rules
                # The file is how an operator puts such a site right: say so, go on.
                diffs[site] = [f"! what is in force cannot be read as a site file ({exc}); "
                               "the file replaces all of it"]  # fmt: skip
                continue
            diffs[site] = site_diff(before, data)
        if not dry_run:
            for data in sites:
                yield from replace_site(data)
        return diffs

    try:
        return run(conn, step())
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        detail = exc.diag.message_detail or exc.diag.message_primary or str(exc)
        raise ReferenceDataError(f"nothing applied: {detail}") from exc


def export_site(conn: psycopg.Connection[Any], site_id: str, folder: Path) -> list[Path]:
    """Write the site's file and sort-plan CSV into `folder`; the paths written."""
    data = run(conn, read_site(site_id))
    texts = render_site(data, f"{site_id}-sortplan.csv")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        path = folder / (f"{site_id}.toml" if name == "site" else name)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
