"""Site files written back (`site export`), and the difference between two versions of
a site (`site apply` prints it). Pure: reference data in, text out."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from storage.model import THRESHOLD_FIELDS, ReferenceData

FORMAT = "parceltrack-site"
FORMAT_VERSION = 1
PLAN_COLUMNS = ("destination", "chute", "door", "effective_from")


def canonical(data: ReferenceData) -> ReferenceData:
    """The same data in one order (read points by position, the rest by key), so two
    descriptions of a site compare equal whatever order their files list things in."""
    return replace(
        data,
        read_points=tuple(sorted(data.read_points, key=lambda r: (r.position, r.read_point_id))),
        devices=tuple(sorted(data.devices, key=lambda d: d.device_id)),
        service_classes=tuple(sorted(data.service_classes, key=lambda c: c.service_class)),
        stage_standards=tuple(
            sorted(data.stage_standards, key=lambda s: (s.stage.value, s.service_class))
        ),
        missing_windows=tuple(
            sorted(
                data.missing_windows,
                key=lambda w: (w.stage is not None, w.stage or "", w.service_class or ""),
            )
        ),
        sort_plans=tuple(
            replace(p, entries=tuple(sorted(p.entries, key=lambda e: e.destination)))
            for p in sorted(data.sort_plans, key=lambda p: p.effective_from)
        ),
    )


def _string(text: str) -> str:
    """A TOML basic string: quote and backslash escaped, control characters as \\uXXXX
    (TOML allows none of them raw, DEL included), everything else as it is."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_string(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} in a site file")


def _table(header: str, values: Mapping[str, Any]) -> str:
    body = "".join(f"{k} = {_value(v)}\n" for k, v in values.items() if v is not None)
    return f"\n{header}\n{body}"


def render_site(data: ReferenceData, plan_file: str) -> dict[str, str]:
    """The site file (and its sort-plan CSV, named `plan_file`) for one site's data."""
    (site,) = data.sites
    out = [f'format = "{FORMAT}"\nversion = {FORMAT_VERSION}\n']
    out.append(_table("[site]", {"id": site.site_id, "name": site.name,
                                 "timezone": site.timezone}))  # fmt: skip
    for t in data.site_tolerances:
        out.append(_table("[detection]", {"skew_tolerance_s": t.skew_tolerance_s,
                                          "duplicate_gap_s": t.duplicate_gap_s}))  # fmt: skip
    for th in data.device_thresholds:
        out.append(_table("[device_thresholds]", {
            k: getattr(th, k) for k in THRESHOLD_FIELDS}))  # fmt: skip
    for c in data.service_classes:
        out.append(_table("[[service_class]]", {"id": c.service_class,
                   "description": c.description, "delivery_days": c.delivery_days}))  # fmt: skip
    for p in data.read_points:
        out.append(_table("[[read_point]]", {
            "id": p.read_point_id, "zone": p.zone.value, "stage": p.stage.value,
            "position": p.position, "description": p.description,
            "successors": list(p.successors) or None}))  # fmt: skip
    for d in data.devices:
        out.append(_table("[[device]]", {
            "id": d.device_id, "read_point": d.read_point_id, "protocol": d.kind.value,
            "description": d.description, "settings": dict(d.settings) or None}))  # fmt: skip
    for s in data.stage_standards:
        out.append(_table("[[stage_standard]]", {"stage": s.stage.value,
                   "service_class": s.service_class, "max_seconds": s.max_seconds}))  # fmt: skip
    for w in data.missing_windows:
        out.append(_table("[[missing_window]]", {
            "stage": None if w.stage is None else w.stage.value,
            "service_class": w.service_class, "window_s": w.window_s}))  # fmt: skip
    files = {}
    if data.sort_plans:
        out.append(_table("[sort_plans]", {"files": [plan_file]}))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(PLAN_COLUMNS)
        for plan in sorted(data.sort_plans, key=lambda p: p.effective_from):
            for e in sorted(plan.entries, key=lambda e: e.destination):
                writer.writerow((e.destination, e.chute_read_point_id, e.door_read_point_id or "",
                                 plan.effective_from.isoformat()))  # fmt: skip
        files[plan_file] = buf.getvalue()
    return {"site": "".join(out), **files}


def _entities(data: ReferenceData | None) -> dict[str, dict[str, Any]]:
    """What a site says, as "kind key" -> fields, for comparing two versions of it."""
    if data is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for s in data.sites:
        out[f"site {s.site_id}"] = {"name": s.name, "timezone": s.timezone}
    for t in data.site_tolerances:
        out["detection"] = {"skew_tolerance_s": t.skew_tolerance_s,
                            "duplicate_gap_s": t.duplicate_gap_s}  # fmt: skip
    for th in data.device_thresholds:
        out["device thresholds"] = {k: v for k, v in _fields(th).items() if k != "site_id"}
    for c in data.service_classes:
        out[f"service class {c.service_class}"] = {"description": c.description,
                                                   "delivery_days": c.delivery_days}  # fmt: skip
    for p in data.read_points:
        out[f"read point {p.read_point_id}"] = {
            "zone": p.zone.value, "stage": p.stage.value, "position": p.position,
            "description": p.description, "successors": list(p.successors)}  # fmt: skip
    for d in data.devices:
        out[f"device {d.device_id}"] = {"read_point": d.read_point_id, "protocol": d.kind.value,
                                        "description": d.description,
                                        "settings": dict(d.settings)}  # fmt: skip
    for st in data.stage_standards:
        out[f"stage standard {st.stage.value}/{st.service_class}"] = {"max_seconds": st.max_seconds}
    for w in data.missing_windows:
        key = f"{w.stage.value if w.stage else '*'}/{w.service_class or '*'}"
        out[f"missing window {key}"] = {"window_s": w.window_s}
    for plan in data.sort_plans:
        out[f"sort plan from {plan.effective_from.isoformat()}"] = {
            e.destination: f"{e.chute_read_point_id}>{e.door_read_point_id or '-'}"
            for e in plan.entries
        }
    return out


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def site_diff(before: ReferenceData | None, after: ReferenceData) -> list[str]:
    """What applying `after` changes from `before` (None: the site is new), one line each:
    `+` added, `-` removed, `~` changed with old -> new per field."""
    old, new = _entities(before), _entities(after)
    out: list[str] = []
    for key in sorted(old.keys() | new.keys(), key=_order):
        if key not in old:
            out.append(f"+ {key}: " + ", ".join(f"{k}={_brief(v)}" for k, v in new[key].items()))
        elif key not in new:
            out.append(f"- {key}")
        elif old[key] != new[key]:
            changed = [
                f"{k} {_brief(old[key].get(k))} -> {_brief(new[key].get(k))}"
                for k in sorted(old[key].keys() | new[key].keys())
                if old[key].get(k) != new[key].get(k)
            ]
            out.append(f"~ {key}: " + ", ".join(changed))
    return out


_KIND_ORDER = ("site", "detection", "device thresholds", "service class", "read point",
               "device", "stage standard", "missing window", "sort plan")  # fmt: skip


def _order(key: str) -> tuple[int, str]:
    return next(i for i, k in enumerate(_KIND_ORDER) if key.startswith(k)), key


def _brief(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, list):
        return "[" + " ".join(v) + "]"
    if isinstance(v, dict):
        return "{" + " ".join(f"{k}={x}" for k, x in v.items()) + "}"
    return str(v)
