"""The pure rules behind a parcel's status, UPU codes, segment and ETA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.tracking import Scan, add_working_days, lateness, promise, segment, status, upu_codes
from parceltrack.alerts import DELAY_KINDS, AlertKind

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday


def scan(rp: str, stage: str, minutes: float, site: str = "LHR1", nxt: str | None = None) -> Scan:
    return Scan(
        ts=T0 + timedelta(minutes=minutes),
        site=site,
        read_point=rp,
        device=f"{rp}-dev",
        kind="read",
        zone=stage,
        stage=stage,
        description=rp,
        next_read_point=nxt,
    )


JOURNEY = [
    scan("IND1", "induction", 0),
    scan("SRT1", "sort", 1),
    scan("DOR1", "dispatch", 2),
    scan("DOR1b", "dispatch", 3),
    scan("IND1", "induction", 60, site="CDG1"),
    scan("DO1", "delivery_office", 120, site="CDG9"),
    scan("VAN", "out_for_delivery", 180, site="CDG9"),
    scan("HOME", "delivery", 240, site="CDG9"),
]


def test_upu_codes_mark_entering_and_leaving_each_centre_and_delivery_steps() -> None:
    """EDD on arrival at each site, EDE once per visit on dispatch, stage codes for delivery."""
    assert upu_codes(JOURNEY) == [
        "EDD", None, "EDE", None, "EDD", "EMG", "EDG", "EMI"
    ]  # fmt: skip


def test_delivered_parcel_is_on_time_when_delivered_by_the_due_time() -> None:
    """J+1 from Monday 08:00 is Tuesday 08:00; delivery on Monday is on time."""
    promised = promise(T0, 1, JOURNEY, {}, T0 + timedelta(days=3))
    assert promised.due == T0 + timedelta(days=1)
    assert promised.eta == JOURNEY[-1].ts and promised.on_time is True
    assert status(JOURNEY, ["missort"], promised, {}, T0) == "delivered"


def test_lateness_sums_overruns_of_stage_standards() -> None:
    """Ten minutes at a stage whose standard is two is eight minutes late."""
    scans = [scan("A", "sort", 0), scan("B", "chute", 10)]
    limits = {("LHR1", "sort"): 120.0}
    assert lateness(scans, limits, T0 + timedelta(minutes=10)) == timedelta(minutes=8)


@pytest.mark.parametrize(
    ("scans", "alerts", "now_min", "expected"),
    [
        ([], [], 0, "accepted"),
        ([scan("A", "induction", 0)], [], 1, "in_sorting"),
        ([scan("A", "chute", 0)], [], 1, "sorted"),
        ([scan("A", "dispatch", 0)], [], 1, "dispatched"),
        ([scan("A", "chute", 0)], [AlertKind.DELAY], 1, "delayed"),
        ([scan("A", "chute", 0)], [AlertKind.MISSORT, AlertKind.DELAY], 1, "exception"),
        ([scan("A", "chute", 0)], [], 30, "delayed"),  # over its 10-minute standard
    ],
    ids=["accepted", "in-sorting", "sorted", "dispatched", "delay-alert", "exception", "standard"],
)
def test_status_precedence(
    scans: list[Scan], alerts: list[str], now_min: int, expected: str
) -> None:
    """Delivered > exception > delayed > where the parcel last was."""
    now = T0 + timedelta(minutes=now_min)
    limits = {("LHR1", "chute"): 600.0}
    promised = promise(T0, 2, scans, limits, now)
    assert status(scans, alerts, promised, limits, now) == expected


@pytest.mark.parametrize("kind", sorted(DELAY_KINDS), ids=str)
def test_a_delay_alert_the_detector_opens_shows_delayed_not_exception(kind: AlertKind) -> None:
    """A parcel whose only open alert is one of the delay kinds is `delayed` to its customer."""
    now = T0 + timedelta(minutes=1)
    scans = [scan("A", "chute", 0)]
    promised = promise(T0, 2, scans, {}, now)
    assert status(scans, [kind.value], promised, {}, now) == "delayed"


def test_eta_past_due_makes_the_parcel_delayed() -> None:
    """Past the due time and not delivered, the ETA is now or later and on_time is False."""
    now = T0 + timedelta(days=5)
    promised = promise(T0, 1, [scan("A", "chute", 0)], {}, now)
    assert promised.eta == now and promised.on_time is False
    assert status([scan("A", "chute", 0)], [], promised, {}, now) == "delayed"


def test_segment_is_the_conveyor_to_the_next_read_point() -> None:
    """The last read point's next hop is the segment; without one there is none."""
    seg = segment([scan("TUN1", "tunnel", 0, nxt="SRT1")], 60.0)
    assert seg is not None and (seg.from_read_point, seg.to_read_point) == ("TUN1", "SRT1")
    assert seg.expected_by == T0 + timedelta(seconds=60)
    assert segment([scan("SRT1", "sort", 0)], None) is None


def test_working_days_skip_weekends() -> None:
    """J+1 from Friday is Monday; J+0 is the same moment."""
    friday = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert add_working_days(friday, 1) == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert add_working_days(friday, 0) == friday
