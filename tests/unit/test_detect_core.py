import numpy as np
import pytest

from detect.core import BIT, ParcelState, apply_reads, inactive, tick
from detect.devices import DeviceState, DeviceThresholds
from detect.keys import KeyCodec
from detect.reference import (
    DetectConfig,
    ReadPointRow,
    Reference,
    SortPlanRow,
    ToleranceRow,
    TransitRow,
    build_reference,
)
from parceltrack.errors import ConfigError

POINTS = [
    ReadPointRow("IND", "S", "induction", "induction", 1),
    ReadPointRow("TUN", "S", "tunnel", "tunnel", 2),
    ReadPointRow("SRT", "S", "sorter", "sort", 3),
    ReadPointRow("CHU1", "S", "chute", "chute", 4),
    ReadPointRow("CHU2", "S", "chute", "chute", 4),
    ReadPointRow("DOR1", "S", "door", "dispatch", 5),
    ReadPointRow("DOR2", "S", "door", "dispatch", 5),
]
IND, TUN, SRT, CHU1, CHU2, DOR1, DOR2 = range(7)
STANDARDS = [("S", g, c, s * (2 if c == "economy" else 1))
             for g, s in (("induction", 10.0), ("tunnel", 10.0), ("sort", 10.0), ("chute", 60.0))
             for c in ("express", "economy")]  # fmt: skip
PLANS = [
    SortPlanRow("S", 1, 0.0, (("LON", "CHU1", "DOR1"),)),
    SortPlanRow("S", 2, 1000.0, (("LON", "CHU2", "DOR2"),)),
]


def _ref(**config: object) -> Reference:
    cfg = DetectConfig(
        **{
            "skew_tolerance_s": 0.0,
            "skippable_stages": (),
            "default_missing_s": 20.0,  # type: ignore[arg-type]
            "missing_factor": 0.0,
            **config,
        }
    )
    return build_reference(
        POINTS, [("express", 1), ("economy", 5)], STANDARDS, (), PLANS, (), ["LON"], cfg
    )


def _state(ref: Reference, n: int = 3, svc: int = 0) -> ParcelState:
    state = ParcelState(capacity=2)
    keys = KeyCodec().encode([f"CP{10_000_000 + i:08d}0GB" for i in range(n)])
    slots, _ = state.slots_for(keys)
    state.set_attributes(slots, svc, ref.dest_index["LON"], 0, 0, 1e12)
    return state


def _read(state: ParcelState, ref: Reference, *reads: tuple[int, int, float]):  # type: ignore[no-untyped-def]
    slots = np.array([r[0] for r in reads], dtype=np.int64)
    rp = np.array([r[1] for r in reads], dtype=np.int32)
    ts = np.array([r[2] for r in reads], dtype=np.float64)
    return apply_reads(state, ref, slots, rp, ts)


def test_tracking_numbers_round_trip_through_int64_keys() -> None:
    """S10 numbers encode to distinct keys and decode back; other ids get negative keys."""
    codec = KeyCodec()
    ids = ["RR473124829GB", "EE471108151FR", "EE123456785CN", "odd-id", "RR473124829G"]
    keys = codec.encode(ids)
    assert len(set(keys.tolist())) == 5
    assert (keys[:3] >= 0).all() and (keys[3:] < 0).all()
    assert [codec.decode(int(k)) for k in keys] == ids
    assert codec.encode(["odd-id"])[0] == keys[3]


def test_latest_position_wins_whatever_the_order() -> None:
    """Out-of-order reads in a batch leave the parcel at its furthest, latest point."""
    ref = _ref()
    state = _state(ref)
    _read(state, ref, (0, SRT, 20.0), (0, IND, 0.0), (0, TUN, 10.0))
    assert state.rp[0] == SRT and state.entered[0] == 20.0


def test_older_reads_in_a_later_batch_do_not_move_a_parcel_back() -> None:
    """A late-arriving older read does not overwrite a newer position."""
    ref = _ref()
    state = _state(ref)
    _read(state, ref, (0, TUN, 10.0))
    _read(state, ref, (0, IND, 0.0))
    assert state.rp[0] == TUN


def test_a_later_stage_wins_over_a_read_skewed_slightly_later_at_an_earlier_one() -> None:
    """Within the clock tolerance, progress along the stages decides the position."""
    ref = _ref(skew_tolerance_s=2.0)
    state = _state(ref)
    _read(state, ref, (0, TUN, 10.0), (0, IND, 11.0))
    assert state.rp[0] == TUN


def test_delay_and_missing_follow_the_class_standard() -> None:
    """Delay opens past the stage standard of the parcel's class; missing a window later."""
    ref = _ref()
    express, economy = _state(ref, 1, svc=0), _state(ref, 1, svc=1)
    for state in (express, economy):
        _read(state, ref, (0, IND, 100.0))
    assert tick(express, 109.0)["delay"].tolist() == []
    assert tick(express, 111.0)["delay"].tolist() == [0]
    assert tick(economy, 111.0)["delay"].tolist() == []  # 20 s for economy
    assert tick(express, 129.0)["missing"].tolist() == []
    assert tick(express, 131.0)["missing"].tolist() == [0]
    assert tick(express, 200.0)["delay"].tolist() == []  # already open: not twice


def test_moving_on_resolves_delay_and_missing() -> None:
    """A read at the next stage resolves both live alerts of the parcel."""
    ref = _ref()
    state = _state(ref, 1)
    _read(state, ref, (0, IND, 100.0))
    tick(state, 131.0)
    out = _read(state, ref, (0, TUN, 140.0))
    assert out.resolved["delay"].tolist() == [0] and out.resolved["missing"].tolist() == [0]
    assert state.open[0] == 0


def test_recirculation_restarts_the_stage_clock_and_is_no_delay() -> None:
    """A second pass at the sorter, even in the same batch, is not a late arrival."""
    ref = _ref()
    state = _state(ref, 1)
    _read(state, ref, (0, TUN, 0.0))
    out = _read(state, ref, (0, SRT, 8.0), (0, SRT, 8.5), (0, SRT, 17.0))
    assert state.entered[0] == 17.0 and len(out.late.slots) == 0
    assert tick(state, 26.0)["delay"].tolist() == []


def test_an_arrival_after_the_standard_is_a_delay_seen_on_arrival() -> None:
    """A parcel reaching the next stage late gets its delay reported, already over."""
    ref = _ref()
    state = _state(ref, 2)
    _read(state, ref, (0, IND, 0.0), (1, IND, 0.0))
    out = _read(state, ref, (0, TUN, 12.0), (1, TUN, 9.0), (1, SRT, 30.0))
    assert out.late.slots.tolist() == [0, 1]
    assert out.late.read_point.tolist() == [IND, TUN]  # parcel 1 was late at the tunnel


def test_a_burst_after_an_open_delay_still_reports_a_later_late_stage() -> None:
    """An open delay at the induction is resolved by the tunnel read of a burst; the same
    burst shows the parcel late again, at the tunnel: that delay is reported too (the
    open one only stands for the stage it was opened at)."""
    ref = _ref()
    state = _state(ref, 1)
    _read(state, ref, (0, IND, 0.0))
    assert tick(state, 11.0)["delay"].tolist() == [0]
    out = _read(state, ref, (0, TUN, 12.0), (0, SRT, 40.0))
    assert out.resolved["delay"].tolist() == [0]
    assert out.late.slots.tolist() == [0] and out.late.read_point.tolist() == [TUN]


def test_a_skippable_next_stage_defers_the_delay_to_the_stage_after() -> None:
    """When the tunnel may not decode, an induction parcel is late only past both standards."""
    ref = _ref(skippable_stages=("tunnel",))
    state = _state(ref, 1)
    _read(state, ref, (0, IND, 0.0))
    assert tick(state, 15.0)["delay"].tolist() == []
    out = _read(state, ref, (0, SRT, 18.0))  # the tunnel saw it but read nothing
    assert len(out.late.slots) == 0


def test_the_sort_plan_in_force_at_the_read_decides() -> None:
    """Plan versions apply from their effective time; before the first, nothing is planned."""
    ref = _ref()
    site = np.zeros(3, dtype=np.int16)
    dest = np.zeros(3, dtype=np.int16)
    chute, door = ref.planned(site, dest, np.array([-5.0, 999.0, 1000.0]))
    assert chute.tolist() == [-1, CHU1, CHU2] and door.tolist() == [-1, DOR1, DOR2]


def test_missort_is_set_by_a_wrong_chute_and_cleared_by_the_right_one() -> None:
    """A chute other than the plan's raises missort once; the planned chute resolves it."""
    ref = _ref()
    state = _state(ref, 2)
    _read(state, ref, (0, CHU2, 10.0), (1, CHU1, 10.0))
    assert tick(state, 11.0)["missort"].tolist() == [0]
    out = _read(state, ref, (0, CHU1, 40.0))
    assert out.resolved["missort"].tolist() == [0]
    assert state.flags[0] & BIT["missort"] == 0


def test_the_door_of_the_plan_before_a_change_is_not_a_missort() -> None:
    """A parcel in its chute when the plan changed leaves by that chute's door: fine."""
    ref = _ref()
    state = _state(ref, 1)
    _read(state, ref, (0, CHU1, 990.0), (0, DOR1, 1010.0))
    assert tick(state, 1011.0)["missort"].tolist() == []


def test_unknown_names_in_a_sort_plan_are_a_config_error() -> None:
    """A plan naming a chute that is not a read point is refused with its name."""
    with pytest.raises(ConfigError, match="CHU9"):
        build_reference(
            POINTS, [("express", 1)], (), (), [SortPlanRow("S", 1, 0, (("X", "CHU9", None),))]
        )


def test_state_grows_past_its_capacity_and_stays_small() -> None:
    """Many parcels grow the arrays, keep earlier ones, and cost under 200 bytes each."""
    ref = _ref()
    state = _state(ref, 5000)
    _read(state, ref, *[(i, IND, float(i)) for i in range(5000)])
    assert len(state) == 5000 and state.entered[4999] == 4999.0 and state.entered[0] == 0.0
    assert state.bytes_per_parcel() <= 200
    keys = state.key[:5000]
    assert state.find(keys).tolist() == list(range(5000))


def test_noread_spike_needs_a_jump_and_closes_below_the_lower_threshold() -> None:
    """A device whose no-read rate jumps opens once; it closes only under the close rate."""
    devices = DeviceState(DeviceThresholds(min_reads=10))
    dev = devices.indices(["d1", "d2"], ["S", "S"])

    def scans(d: int, start: float, n: int, every: int) -> None:
        ts = start + np.arange(n, dtype=np.float64)
        devices.count(np.full(n, dev[d]), ts, np.arange(n) % every == 0)

    scans(0, 0.0, 500, 50)  # normal: 2 %
    scans(1, 0.0, 500, 3)  # always 33 %: its normal, no jump
    scans(0, 500.0, 60, 2)  # 50 %
    scans(1, 500.0, 60, 3)
    opened, _ = devices.check(560.0)
    assert opened["noread"].tolist() == [0]
    scans(0, 560.0, 60, 7)  # 14 %: above the close rate
    _, closed = devices.check(620.0)
    assert closed["noread"].tolist() == []
    scans(0, 620.0, 60, 100)
    _, closed = devices.check(680.0)
    assert closed["noread"].tolist() == [0]


def test_a_device_unheard_for_its_window_is_silent_until_heard() -> None:
    """Silence opens after the window and a health report or scan ends it."""
    devices = DeviceState(DeviceThresholds(silence_s=30.0))
    dev = devices.indices(["d1"], ["S"])
    devices.heard(dev, np.array([100.0]))
    assert devices.check(129.0)[0]["silence"].tolist() == []
    assert devices.check(131.0)[0]["silence"].tolist() == [0]
    assert devices.heard(dev, np.array([140.0])).tolist() == [0]


def test_parcels_no_longer_active_leave_the_state_and_the_rest_stay_found() -> None:
    """Dispatched-long-ago and idle parcels are dropped; the others keep their data."""
    ref = _ref()
    state = _state(ref, 4)
    _read(state, ref, (0, DOR1, 0.0), (1, IND, 0.0), (2, DOR1, 5000.0), (3, SRT, 5000.0))
    keys = state.key[:4].copy()
    gone = inactive(state, ref, now=5100.0, done_after_s=3600.0, idle_after_s=4000.0)
    assert gone.tolist() == [True, True, False, False]
    state.compact(~gone)
    assert len(state) == 2
    assert state.find(keys).tolist() == [-1, -1, 0, 1]
    assert state.rp[:2].tolist() == [DOR1, SRT] and state.entered[1] == 5000.0


def test_noread_limits_are_per_site() -> None:
    """The same no-read rate is a spike where the site's open rate is low, not elsewhere."""
    strict = DeviceThresholds(open_rate=0.3, close_rate=0.1, min_reads=10)
    lax = DeviceThresholds(open_rate=0.6, close_rate=0.2, min_reads=10)
    devices = DeviceState(DeviceThresholds(), {"S": strict, "T": lax})
    dev = devices.indices(["d1", "d2"], ["S", "T"])
    for d in dev.tolist():
        ts = np.arange(500, dtype=np.float64)
        devices.count(np.full(500, d), ts, np.arange(500) % 50 == 0)  # 2 % before
        devices.count(np.full(60, d), ts[:60] + 500.0, np.arange(60) % 2 == 0)  # then 50 %
    opened, _ = devices.check(560.0)
    assert opened["noread"].tolist() == [0]


def test_an_untagged_parcel_is_not_expected_at_a_stage_that_reads_tags_only() -> None:
    """Where the doors are RFID gates only, an untagged parcel's chute is its last stage."""
    points = [
        ReadPointRow(r.read_point, r.site, r.zone, r.stage, r.position, r.zone == "door")
        for r in POINTS
    ]
    ref = build_reference(points, [("express", 1)], STANDARDS, (), PLANS, (), ["LON"],
                          DetectConfig(skew_tolerance_s=0.0, skippable_stages=()))  # fmt: skip
    state = _state(ref, 2)
    state.set_attributes(np.array([1]), 0, 0, 0, 0, 1e12, tagged=False)
    _read(state, ref, (0, CHU1, 0.0), (1, CHU1, 0.0))
    assert tick(state, 1000.0)["delay"].tolist() == [0]


def test_without_a_missing_window_it_is_derived_from_the_standard_and_learned_p90() -> None:
    """No window set: base + factor x the longer of the stage standard and the learned p90."""
    cfg = DetectConfig(skippable_stages=(), default_missing_s=20.0, missing_factor=2.0)
    learned = [TransitRow("S", "sort", "express", 500, 12.0, 40.0)]  # slower than its 10 s
    ref = build_reference(POINTS, [("express", 1)], STANDARDS, (), PLANS, learned, ["LON"], cfg)
    g, c = ref.stage_index["chute"], ref.class_index["express"]
    assert ref.missing_s[0, g, c] == 20.0 + 2 * 60.0
    assert ref.missing_s[0, ref.stage_index["sort"], c] == 20.0 + 2 * 40.0
    windows = [("S", None, "chute", 7.0)]
    ref = build_reference(POINTS, [("express", 1)], STANDARDS, windows, PLANS, learned, [], cfg)
    assert ref.missing_s[0, g, c] == 7.0 and ref.missing_s[0, 0, c] == 20.0 + 2 * 10.0


def test_a_delayed_parcel_held_three_standards_is_not_missing_with_derived_windows() -> None:
    """Held 3x its chute standard, a parcel is delayed but never missing; unseen, it is."""
    cfg = DetectConfig(skew_tolerance_s=1.0, skippable_stages=())
    ref = build_reference(POINTS, [("express", 1)], STANDARDS, (), PLANS, (), ["LON"], cfg)
    state = _state(ref, n=2)
    _read(state, ref, (0, CHU1, 0.0), (1, CHU1, 0.0))
    assert tick(state, 61.5)["delay"].tolist() == [0, 1]
    assert tick(state, 179.9)["missing"].tolist() == []
    out = _read(state, ref, (0, DOR1, 180.0))  # 3 x 60 s after arriving at the chute
    assert out.resolved["delay"].tolist() == [0] and out.resolved["missing"].tolist() == []
    assert tick(state, 60.0 + 1.0 + 30.0 + 120.0 + 0.1)["missing"].tolist() == [1]


def test_skew_tolerance_and_duplicate_gap_are_per_site() -> None:
    """A re-read 4 s later is the same pass where the gap is 5 s, a new pass where it is 3 s."""
    points = [*POINTS, ReadPointRow("B-SRT", "B", "sorter", "sort", 3),
              ReadPointRow("B-CHU", "B", "chute", "chute", 4)]  # fmt: skip
    tolerances = [ToleranceRow("B", 2.5, 5.0)]
    ref = build_reference(points, [("express", 1)], STANDARDS, (), PLANS, (), ["LON"],
                          DetectConfig(skippable_stages=()), tolerances)  # fmt: skip
    assert ref.skew_s.tolist() == [1.0, 2.5] and ref.gap_s.tolist() == [3.0, 5.0]
    state = _state(ref, n=2)
    b_srt = ref.rp_index["B-SRT"]
    _read(state, ref, (0, SRT, 100.0), (1, b_srt, 100.0))
    _read(state, ref, (0, SRT, 104.0), (1, b_srt, 104.0))
    assert state.entered[:2].tolist() == [104.0, 100.0]
    # At B a chute read 2 s before the sorter read is clock skew (2.5 s), not recirculation.
    state = _state(ref, n=1)
    _read(state, ref, (0, ref.rp_index["B-CHU"], 200.0), (0, b_srt, 202.0))
    assert state.rp[0] == ref.rp_index["B-CHU"]
