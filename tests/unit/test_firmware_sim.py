import random

from firmware_sim.faults import FaultCounts, FaultPlan, FaultWindow, mangle


def test_fault_rates_and_windows_apply_to_frames() -> None:
    """Drop removes frames, duplicate doubles them, a window forces its fault on all."""
    frames = [b"\x02ABC\x03"] * 100
    counts = FaultCounts()
    rng = random.Random(1)
    assert mangle(frames, FaultPlan(drop_rate=1.0), rng, counts) == b""
    assert counts.dropped == 100
    doubled = mangle(frames, FaultPlan(duplicate_rate=1.0), rng, counts)
    assert doubled == b"\x02ABC\x03" * 200
    plan = FaultPlan(schedule=(FaultWindow(1.0, 2.0, "bad_checksum"),))
    assert plan.active(1.5) == {"bad_checksum"} and plan.active(2.5) == set()
    assert mangle(frames[:1], plan, rng, counts, plan.active(1.5)) != frames[0]
