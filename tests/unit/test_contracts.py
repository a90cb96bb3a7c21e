"""Contracts between processes: every alert kind the detector can emit is understood by
each reader of alerts (customer status, control-room label, dashboard series). Driven
by the ground's enumeration, so a new AlertKind fails here until every reader maps it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.alerts import ALERT_LABELS
from api.tracking import ALERT_STATUS, STATUSES, Scan, promise, status
from detect.core import BIT, UNTAGGED, ParcelState, tick
from detect.devices import DeviceState, DeviceThresholds
from parceltrack.alerts import DELAY_KINDS, DEVICE_KINDS, PARCEL_KINDS, AlertKind
from parceltrack.events import EventKind
from parceltrack.layout import Stage, Zone

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards" / "json"
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
KINDS = list(AlertKind)
# A column of a contract compared with a quoted word in SQL: `a.kind = 'missort'`.
COMPARED = re.compile(r"\b(kind|zone|stage)\s*(?:=|<>|!=)\s*'([^']*)'")
WORDS = {
    "kind": {*AlertKind, *EventKind},  # alerts' kinds, and scans' (read, noread ...)
    "zone": set(Zone),
    "stage": set(Stage),
}


def _kind_panels() -> list[dict[str, Any]]:
    """The dashboard panels that show alerts split by kind."""
    return [
        panel
        for path in sorted(DASHBOARDS.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        if "kind" in panel["title"].lower()
    ]


def _series_names(panel: dict[str, Any]) -> dict[str, str]:
    """Kind -> the name Grafana shows for it: value mappings and display-name overrides."""
    config = panel.get("fieldConfig", {})
    names: dict[str, str] = {}
    for mapping in config.get("defaults", {}).get("mappings", []):
        if mapping["type"] == "value":
            names.update({value: r["text"] for value, r in mapping["options"].items()})
    for override in config.get("overrides", []):
        if override["matcher"]["id"] == "byName":
            for prop in override["properties"]:
                if prop["id"] == "displayName":
                    names[override["matcher"]["options"]] = prop["value"]
    return names


def test_every_kind_is_about_a_parcel_or_a_device() -> None:
    """The ground's groupings split AlertKind: each kind in exactly one of them."""
    assert set(PARCEL_KINDS) | set(DEVICE_KINDS) == set(AlertKind)
    assert not set(PARCEL_KINDS) & set(DEVICE_KINDS)
    assert set(PARCEL_KINDS) >= DELAY_KINDS


def test_the_detector_checks_exactly_the_grounds_kinds() -> None:
    """Detection's parcel checks and device checks yield exactly PARCEL_KINDS and
    DEVICE_KINDS, and every parcel kind has a bit of its own beside the untagged flag."""
    assert set(tick(ParcelState(), 0.0)) == set(PARCEL_KINDS)
    devices = DeviceState(DeviceThresholds())
    devices.indices(["dev-1"], ["LHR1"])
    opened, closed = devices.check(0.0)
    assert set(opened) == set(closed) == set(DEVICE_KINDS)
    bits = [int(b) for b in BIT.values()]
    assert len(set(bits)) == len(PARCEL_KINDS) and all(b & int(UNTAGGED) == 0 for b in bits)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_every_kind_maps_to_a_customer_status(kind: AlertKind) -> None:
    """An open parcel alert makes the parcel delayed (the delay kinds) or an exception;
    a device alert is never about one parcel and tells its customer nothing."""
    assert kind in ALERT_STATUS, f"{kind} has no customer status in api/tracking.py"
    scans = [Scan(NOW, "LHR1", "LHR1-CHU01", "dev", "read", "chute", "chute", None)]
    told = status(scans, [kind.value], promise(NOW, 2, scans, {}, NOW), {}, NOW)
    if kind in DEVICE_KINDS:
        assert ALERT_STATUS[kind] is None and told == "sorted"
    else:
        assert ALERT_STATUS[kind] in STATUSES
        assert told == ("delayed" if kind in DELAY_KINDS else "exception")


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_every_kind_has_a_control_room_label(kind: AlertKind) -> None:
    """The control room heads and announces each kind by a label of its own."""
    assert ALERT_LABELS.get(kind), f"{kind} has no label in api/alerts.py"
    assert len(set(ALERT_LABELS.values())) == len(ALERT_LABELS)


def test_the_kind_panels_are_found() -> None:
    """Both dashboard panels that split alerts by kind are checked below."""
    assert len(_kind_panels()) == 2


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_every_kind_is_a_named_dashboard_series(kind: AlertKind) -> None:
    """Each panel that splits alerts by kind names this kind's series by its label."""
    for panel in _kind_panels():
        name = _series_names(panel).get(kind.value)
        assert name is not None, f"panel {panel['title']!r} has no series named for {kind}"
        assert name == ALERT_LABELS.get(kind)


def test_the_words_dashboards_compare_with_are_the_grounds() -> None:
    """Every kind, zone or stage a dashboard query compares with a quoted word is a
    member of the ground's enumerations, so a renamed member cannot leave a panel empty."""
    compared = [
        (column, word)
        for path in sorted(DASHBOARDS.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
        for column, word in COMPARED.findall(target["rawSql"])
    ]
    assert compared, "no comparison found: the pattern no longer matches the queries"
    unknown = [(column, word) for column, word in compared if word not in WORDS[column]]
    assert not unknown
