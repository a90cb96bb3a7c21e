"""Site files: one sorting centre as its operator writes it, TOML for the layout and the
settings, CSV for the sort plans (docs/site-files.md). Pure code: texts in, reference
data (storage/model.py) or every problem out; storage/sitetext.py writes them back.
The CLI reads and writes the files, the repository stores the data.

Every problem names the file, the line and the field. Checks that need only one value
are the model's own (so the admin API refuses the same things with the same words);
checks across the file (a successor or chute that is not a read point of the site,
an id given twice, plan versions in force at the same moment) are made here.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from parceltrack.layout import Zone
from storage.model import (
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
    destination_twice,
    never_applies,
    plan_point_problem,
    successor_problems,
)
from storage.sitetext import FORMAT, FORMAT_VERSION, PLAN_COLUMNS, canonical


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    where: str  # the field, e.g. read_point[3].stage
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.where}: {self.message}"


class SiteFileInvalid(ReferenceDataError):
    """A site file with problems; every one of them, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# -- where things are in the TOML text ----------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


@dataclass(frozen=True, slots=True)
class _Lines:
    """Line numbers of tables and keys, found in the text (tomllib gives none)."""

    headers: list[tuple[int, str, bool]]  # line, name, array item
    keys: dict[int, str]  # line -> key
    last: int

    @classmethod
    def of(cls, text: str) -> _Lines:
        headers, keys = [], {}
        lines = text.splitlines()
        for no, line in enumerate(lines, 1):
            if m := _HEADER.match(line):
                headers.append((no, m.group(2), m.group(1) == "[["))
            elif m := _KEY.match(line):
                keys[no] = m.group(1)
        return cls(headers, keys, max(len(lines), 1))

    def table(self, name: str | None, item: int = 0) -> tuple[int, int]:
        """(first, last) line of a table, or of the nth item of an array of tables; the
        top level for None."""
        starts = [no for no, n, _ in self.headers if n == name]
        if name is None:
            return 1, (self.headers[0][0] - 1 if self.headers else self.last)
        if item >= len(starts):
            return 1, self.last
        start = starts[item]
        after = [no for no, _, _ in self.headers if no > start]
        return start, (after[0] - 1 if after else self.last)

    def line(self, name: str | None, item: int = 0, key: str | None = None) -> int:
        first, last = self.table(name, item)
        if key is not None:
            for no in range(first, last + 1):
                if self.keys.get(no) == key:
                    return no
        return first


# -- reading the TOML ---------------------------------------------------------------

_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "text": (str, "text"),
    "int": (int, "a whole number"),
    "number": ((int, float), "a number"),
    "list": (list, "a list of text"),
    "table": (dict, "a table of settings"),
}
# section -> (array of tables?, {field: (type, required)})
_SECTIONS: dict[str, tuple[bool, dict[str, tuple[str, bool]]]] = {
    "site": (False, {"id": ("text", True), "name": ("text", True), "timezone": ("text", False)}),
    "detection": (False, {"skew_tolerance_s": ("number", True),
                          "duplicate_gap_s": ("number", True)}),
    "device_thresholds": (False, {
        "silence_s": ("number", False), "bin_s": ("number", False),
        "window_bins": ("int", False), "bins": ("int", False), "open_rate": ("number", False),
        "close_rate": ("number", False), "jump": ("number", False),
        "min_reads": ("int", False), "min_noreads": ("int", False)}),
    "service_class": (True, {"id": ("text", True), "description": ("text", False),
                             "delivery_days": ("int", True)}),
    "read_point": (True, {"id": ("text", True), "zone": ("text", True), "stage": ("text", True),
                          "position": ("int", False), "description": ("text", False),
                          "successors": ("list", False)}),
    "device": (True, {"id": ("text", True), "read_point": ("text", False),
                      "protocol": ("text", True), "description": ("text", False),
                      "settings": ("table", False)}),
    "stage_standard": (True, {"stage": ("text", True), "service_class": ("text", True),
                              "max_seconds": ("number", True)}),
    "missing_window": (True, {"window_s": ("number", True), "stage": ("text", False),
                              "service_class": ("text", False)}),
    "sort_plans": (False, {"files": ("list", True)}),
}  # fmt: skip


@dataclass
class _Reader:
    file: str
    lines: _Lines
    problems: list[Problem] = field(default_factory=list)

    def add(self, line: int, where: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, where, message))

    def fields(self, section: str, item: int | None, raw: Any) -> dict[str, Any] | None:
        """The fields of one table, type-checked; None when it has a problem."""
        many, spec = _SECTIONS[section]
        where = f"{section}[{item + 1}]" if item is not None else section
        at = item or 0
        if not isinstance(raw, dict):
            kind = "[[...]] array of tables" if many else "[...] table"
            self.add(self.lines.line(section, at), where, f"must be a {kind}")
            return None
        ok = True
        for key in raw:
            if key not in spec:
                self.add(self.lines.line(section, at, key), f"{where}.{key}",
                         f"unknown field; allowed: {', '.join(spec)}")  # fmt: skip
                ok = False
        for key, (kind, required) in spec.items():
            line = self.lines.line(section, at, key)
            if key not in raw:
                if required:
                    self.add(line, f"{where}.{key}", "is missing")
                    ok = False
                continue
            types, said = _TYPES[kind]
            value = raw[key]
            bad = (isinstance(value, bool) and kind != "table") or not isinstance(value, types)
            if kind == "list" and not bad:
                bad = not all(isinstance(v, str) for v in value)
            if bad:
                self.add(line, f"{where}.{key}", f"must be {said}, not {_shown(value)}")
                ok = False
            elif _has_nul(value):  # PostgreSQL stores no NUL in text
                self.add(line, f"{where}.{key}", "must not contain the NUL character")
                ok = False
        return dict(raw) if ok else None

    @contextmanager
    def model(self, line: int, where: str) -> Iterator[None]:
        """Report what a model object refuses as a problem at `line`."""
        try:
            yield
        except ReferenceDataError as exc:
            self.add(line, where, str(exc))


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def parse_site(
    name: str,
    text: str,
    read: Callable[[str], str],
    time_zones: Collection[str] | None = None,
) -> ReferenceData:
    """A site file's data, or SiteFileInvalid with every problem in it and in the sort
    plan CSV files it names (`read` returns a named file's text, or raises OSError).
    With `time_zones` (the IANA names known), the site's time zone is checked too."""
    r = _Reader(name, _Lines.of(text))
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        r.add(int(m.group(1)) if m else 1, "(syntax)", f"not valid TOML: {exc}")
        raise SiteFileInvalid(r.problems) from None
    top = _top(r, doc)
    sections: dict[str, Any] = {}
    for section, (many, _) in _SECTIONS.items():
        raw = doc.get(section)
        if raw is None:
            sections[section] = [] if many else None
        elif many:
            if not isinstance(raw, list):
                r.add(r.lines.line(section), section, "must be [[...]] items")
                sections[section] = []
            else:
                sections[section] = [r.fields(section, i, x) for i, x in enumerate(raw)]
        else:
            sections[section] = r.fields(section, None, raw)
    site = None
    if top and sections["site"] is not None:
        s = sections["site"]
        with r.model(r.lines.line("site"), "site"):
            site = Site(s["id"], s["name"], s.get("timezone", "UTC"))
        if site is not None and time_zones is not None and site.timezone not in time_zones:
            said = f"unknown time zone {site.timezone!r} (an IANA name, e.g. Europe/Paris)"
            r.add(r.lines.line("site", 0, "timezone"), "site.timezone", said)
    elif doc.get("site") is None:
        r.add(1, "site", "is missing: a site file describes one [site]")
    if site is None:
        raise SiteFileInvalid(r.problems)
    data = _build(r, site.site_id, sections, _ids(doc), read)
    if r.problems:
        raise SiteFileInvalid(sorted(r.problems, key=lambda p: (p.file != name, p.file, p.line)))
    return canonical(ReferenceData(sites=(site,), **data))


def _top(r: _Reader, doc: dict[str, Any]) -> bool:
    ok = True
    for key, want in (("format", FORMAT), ("version", FORMAT_VERSION)):
        if doc.get(key) != want:
            r.add(r.lines.line(None, 0, key), key, f"must be {json.dumps(want)}")
            ok = False
    for key in doc:
        if key not in _SECTIONS and key not in ("format", "version"):
            r.add(r.lines.line(key), key,
                  f"unknown section; allowed: {', '.join(_SECTIONS)}")  # fmt: skip
    return ok


def _first_time(
    r: _Reader, where: str, key: tuple[Any, ...], label: str, seen: dict[Any, int], line: int
) -> bool:
    """False (and a problem) when `key` was seen before in the file."""
    if key in seen:
        r.add(line, where, f"{label} is given twice (first at line {seen[key]})")
        return False
    seen[key] = line
    return True


def _ids(doc: dict[str, Any]) -> dict[str, set[str]]:
    """The ids each array of tables declares, whether or not the item has problems: a
    reference to an item with a problem of its own is not a second mistake."""
    return {
        section: {x["id"] for x in items if isinstance(x, dict) and isinstance(x.get("id"), str)}
        for section in ("service_class", "read_point")
        if isinstance(items := doc.get(section, []), list)
    }


def _build(
    r: _Reader,
    site: str,
    sections: dict[str, Any],
    ids: dict[str, set[str]],
    read: Callable[[str], str],
) -> dict[str, Any]:
    lines = r.lines
    classes: list[ServiceClass] = []
    seen: dict[Any, int] = {}
    for i, c in enumerate(sections["service_class"]):
        where, line = f"service_class[{i + 1}]", lines.line("service_class", i, "id")
        if c is None or not _first_time(
            r, where + ".id", ("class", c["id"]), f"service class {c['id']!r}", seen, line
        ):
            continue
        with r.model(lines.line("service_class", i, "delivery_days"), where + ".delivery_days"):
            classes.append(ServiceClass(c["id"], c.get("description", ""), c["delivery_days"]))
    class_ids = ids.get("service_class", set())

    read_points: list[ReadPoint] = []
    rp_lines: dict[str, int] = {}
    for i, p in enumerate(sections["read_point"]):
        where, line = f"read_point[{i + 1}]", lines.line("read_point", i, "id")
        if p is None or not _first_time(
            r, where + ".id", ("rp", p["id"]), f"read point {p['id']!r}", seen, line
        ):
            continue
        fine = len(r.problems)
        for key in ("zone", "stage"):
            with r.model(lines.line("read_point", i, key), f"{where}.{key}"):
                ReadPoint(p["id"], site, **{"zone": "induction", "stage": "induction", key: p[key]})
        if len(r.problems) > fine:
            continue
        with r.model(lines.line("read_point", i, "successors"), f"{where}.successors"):
            rp = ReadPoint(
                p["id"], site, p["zone"], p["stage"], p.get("description", ""),
                p.get("position", 0), successors=tuple(p.get("successors", ())),
            )  # fmt: skip
            read_points.append(rp)
            rp_lines[rp.read_point_id] = i
    zone_of = {rp.read_point_id: rp.zone for rp in read_points}
    declared = ids.get("read_point", set())
    site_of = {rp_id: site for rp_id in declared}
    stages = {rp.stage for rp in read_points}
    for rp in read_points:
        i = rp_lines[rp.read_point_id]
        for message in successor_problems(rp.read_point_id, site, rp.successors, site_of):
            r.add(lines.line("read_point", i, "successors"), f"read_point[{i + 1}].successors",
                  message)  # fmt: skip

    devices: list[Device] = []
    for i, d in enumerate(sections["device"]):
        where, line = f"device[{i + 1}]", lines.line("device", i, "id")
        if d is None or not _first_time(
            r, where + ".id", ("device", d["id"]), f"device {d['id']!r}", seen, line
        ):
            continue
        at = d.get("read_point")
        if at is not None and at not in declared:
            r.add(lines.line("device", i, "read_point"), where + ".read_point",
                  f"{at!r} is not a read point of site {site!r}")  # fmt: skip
            continue
        with r.model(lines.line("device", i, "protocol"), where):
            devices.append(Device(d["id"], site, at, d["protocol"], d.get("description", ""),
                                  d.get("settings", {})))  # fmt: skip

    standards: list[StageStandard] = []
    for i, s in enumerate(sections["stage_standard"]):
        where = f"stage_standard[{i + 1}]"
        if s is None:
            continue
        with r.model(lines.line("stage_standard", i, "stage"), where):
            std = StageStandard(site, s["stage"], s["service_class"], s["max_seconds"])
            label = f"the standard of stage {std.stage.value!r} for {std.service_class!r}"
            dup: tuple[Any, ...] = ("standard", std.stage, std.service_class)
            if not _first_time(r, where, dup, label, seen, lines.line("stage_standard", i)):
                continue
            if std.service_class not in class_ids:
                raise ReferenceDataError(
                    f"unknown service class {std.service_class!r}: add it as a [[service_class]]"
                )
            if std.stage not in stages:
                raise ReferenceDataError(never_applies(site, std.stage))
            standards.append(std)

    windows: list[MissingWindow] = []
    for i, w in enumerate(sections["missing_window"]):
        where = f"missing_window[{i + 1}]"
        if w is None:
            continue
        with r.model(lines.line("missing_window", i, "window_s"), where):
            win = MissingWindow(site, w["window_s"], w.get("service_class"), w.get("stage"))
            label = (
                f"the window for stage {win.stage or 'any'} and class {win.service_class or 'any'}"
            )
            dup = ("window", win.service_class, win.stage)
            if not _first_time(r, where, dup, label, seen, lines.line("missing_window", i)):
                continue
            if win.service_class is not None and win.service_class not in class_ids:
                raise ReferenceDataError(
                    f"unknown service class {win.service_class!r}: add it as a [[service_class]]"
                )
            if win.stage is not None and win.stage not in stages:
                raise ReferenceDataError(never_applies(site, win.stage, "a missing window"))
            windows.append(win)

    thresholds: list[DeviceThresholds] = []
    if (t := sections["device_thresholds"]) is not None:
        with r.model(lines.line("device_thresholds"), "device_thresholds"):
            thresholds.append(DeviceThresholds(site, **t))
    tolerances: list[SiteTolerances] = []
    if (t := sections["detection"]) is not None:
        with r.model(lines.line("detection"), "detection"):
            tolerances.append(SiteTolerances(site, t["skew_tolerance_s"], t["duplicate_gap_s"]))

    plans: list[SortPlan] = []
    if (sp := sections["sort_plans"]) is not None:
        plans = _plans(r, site, sp["files"], zone_of, declared, read)
    return {
        "read_points": tuple(read_points),
        "devices": tuple(devices),
        "service_classes": tuple(classes),
        "stage_standards": tuple(standards),
        "sort_plans": tuple(plans),
        "missing_windows": tuple(windows),
        "device_thresholds": tuple(thresholds),
        "site_tolerances": tuple(tolerances),
    }


# -- sort plans (CSV) ---------------------------------------------------------------


def _plans(
    r: _Reader,
    site: str,
    files: list[str],
    zone_of: Mapping[str, Zone],
    declared: set[str],
    read: Callable[[str], str],
) -> list[SortPlan]:
    """Sort-plan versions from CSV rows: rows with the same effective_from are one
    version. A version is given by one file only; a destination once per version."""
    versions: dict[datetime, list[SortPlanEntry]] = {}
    from_file: dict[datetime, tuple[str, int]] = {}
    dest_line: dict[tuple[datetime, str], int] = {}
    for name in files:
        try:
            text = read(name)
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8"
            r.add(r.lines.line("sort_plans", 0, "files"), "sort_plans.files",
                  f"cannot read {name!r}: {why or exc}")  # fmt: skip
            continue
        rows = csv.reader(io.StringIO(text.lstrip("\ufeff")))
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != PLAN_COLUMNS:
            r.problems.append(Problem(name, 1, "header", f"must be {','.join(PLAN_COLUMNS)}"))
            continue
        for row in rows:
            line = rows.line_num
            if not any(c.strip() for c in row):
                continue
            entry = _plan_row(r, name, line, row, zone_of, declared)
            if entry is None:
                continue
            eff, e = entry
            owner = from_file.setdefault(eff, (name, line))
            if owner[0] != name:
                r.problems.append(Problem(name, line, "effective_from",
                    f"overlapping plan versions: the version in force from {eff.isoformat()} "
                    f"is also given by {owner[0]} (line {owner[1]})"))  # fmt: skip
                continue
            first = dest_line.setdefault((eff, e.destination), line)
            if first != line:
                said = f"{destination_twice(e.destination, eff)} (first at line {first})"
                r.problems.append(Problem(name, line, "destination", said))
                continue
            versions.setdefault(eff, []).append(e)
    return [
        SortPlan(site, eff, tuple(sorted(entries, key=lambda e: e.destination)), n)
        for n, (eff, entries) in enumerate(sorted(versions.items()), 1)
    ]


def _plan_row(
    r: _Reader,
    name: str,
    line: int,
    row: list[str],
    zone_of: Mapping[str, Zone],
    declared: set[str],
) -> tuple[datetime, SortPlanEntry] | None:
    def bad(where: str, message: str) -> None:
        r.problems.append(Problem(name, line, where, message))

    if len(row) != len(PLAN_COLUMNS):
        bad("(row)", f"has {len(row)} fields; expected {len(PLAN_COLUMNS)}: "
                     f"{','.join(PLAN_COLUMNS)}")  # fmt: skip
        return None
    dest, chute, door, when = (c.strip() for c in row)
    ok = True
    if not dest:
        bad("destination", "is empty")
        ok = False
    if "\x00" in dest:
        bad("destination", "must not contain the NUL character")
        ok = False
    for where, rp, zone in (("chute", chute, Zone.CHUTE), ("door", door, Zone.DOOR)):
        if not rp and where == "door":
            continue
        if rp in declared and rp not in zone_of:
            ok = False  # a read point with a problem of its own, reported there
        elif problem := plan_point_problem(rp, zone, zone_of.get(rp)):
            bad(where, problem)
            ok = False
    try:
        eff = datetime.fromisoformat(when)
    except ValueError:
        bad("effective_from", f"{when!r} is not an ISO 8601 time")
        return None
    if eff.tzinfo is None:
        bad("effective_from", f"{when!r} needs a UTC offset (e.g. {when}+00:00)")
        return None
    return (eff, SortPlanEntry(dest, chute, door or None)) if ok else None
