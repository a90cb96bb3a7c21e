import pytest

from bench.accuracy import Noise, run_accuracy
from bench.score import Raised, Truth, score
from firmware_sim.scenario import FaultRates, ScenarioConfig, generate


def test_precision_recall_and_latency_per_kind() -> None:
    """Hits, misses and false alarms count per kind; latency is from detectable to alert."""
    truths = [Truth("delay", "A", 10.0), Truth("delay", "B", 20.0), Truth("missort", "C", 5.0)]
    alerts = [
        Raised("delay", "A", 12.0),
        Raised("delay", "X", 30.0),  # no truth: false alarm
        Raised("missort", "C", 5.5),
    ]
    by_kind = {s.kind: s for s in score(truths, alerts, ["delay", "missort", "missing"])}
    delay = by_kind["delay"]
    assert (delay.truths, delay.alerts, delay.hits) == (2, 2, 1)
    assert delay.precision == 0.5 and delay.recall == 0.5
    assert delay.latencies == (2.0,)
    assert by_kind["missort"].precision == 1.0 and by_kind["missort"].latency(1.0) == 0.5
    assert (by_kind["missing"].truths, by_kind["missing"].alerts) == (0, 0)


def test_a_second_alert_for_the_same_fault_is_a_false_alarm() -> None:
    """Raising the same parcel and kind twice costs precision, and the first alert counts."""
    truths = [Truth("missing", "A", 10.0)]
    alerts = [Raised("missing", "A", 15.0), Raised("missing", "A", 11.0)]
    (s,) = score(truths, alerts, ["missing"])
    assert (s.hits, s.alerts, s.recall) == (1, 2, 1.0)
    assert s.precision == 0.5 and s.latencies == (1.0,)


def test_alerts_of_another_kind_do_not_count() -> None:
    """A missing alert for a delayed parcel neither hits the delay nor is a delay alarm."""
    (s,) = score([Truth("delay", "A", 1.0)], [Raised("missing", "A", 2.0)], ["delay"])
    assert (s.hits, s.alerts, s.recall) == (0, 0, 0.0)


@pytest.mark.parametrize("seed", [5, 8], ids=["seed5", "seed8"])
def test_engine_meets_the_goals_on_a_small_noisy_scenario(seed: int) -> None:
    """On generated scenarios with noise every kind scores >= 99 % and alerts within 2 s
    at 60x (ticking every 0.25 s)."""
    faults = FaultRates(missort=0.01, delay=0.01, lost=0.005, noread=0.02, recirculation=0.02,
                        misroute=0.01)  # fmt: skip
    scenario = generate(ScenarioConfig(seed=seed, parcels=3000, faults=faults))
    run = run_accuracy(scenario, speed=60.0, tick_wall_s=0.25, noise=Noise(misroutes=0), seed=seed)
    assert {t.kind for t in run.truths} >= {"delay", "missing", "missort", "misroute"}
    for s in run.scores:
        if s.truths:
            assert s.precision >= 0.99 and s.recall >= 0.99, s
            assert s.latency(1.0) <= 120.0, s
        else:
            assert s.alerts == 0, s


def test_long_holds_are_told_from_losses_by_derived_missing_windows() -> None:
    """Standards up to an hour, delays up to 3x: derived windows keep missing alerts exact,
    where the flat 30 s window calls held parcels lost."""
    from dataclasses import replace

    from bench.accuracy import LONG_HOLD_FACTOR, LONG_HOLD_TRANSIT_S, long_hold_config

    config = ScenarioConfig(
        seed=11, parcels=3000, transit_s=LONG_HOLD_TRANSIT_S, delay_max_factor=LONG_HOLD_FACTOR,
        faults=FaultRates(missort=0.01, delay=0.03, lost=0.01),
    )  # fmt: skip
    scenario = generate(config)
    assert max(s.max_seconds for s in scenario.stage_standards) >= 3000.0
    tail = 4 * 3600.0
    derived = run_accuracy(
        scenario, config=long_hold_config(), tail_s=tail, noise=Noise(misroutes=0)
    )
    by_kind = {s.kind: s for s in derived.scores}
    for kind in ("delay", "missing"):
        assert by_kind[kind].truths > 20
        assert by_kind[kind].precision >= 0.99 and by_kind[kind].recall >= 0.99, by_kind[kind]
    flat = replace(long_hold_config(), missing_factor=0.0)
    before = run_accuracy(scenario, config=flat, tail_s=tail, noise=Noise(misroutes=0))
    missing = next(s for s in before.scores if s.kind == "missing")
    assert missing.precision < 0.9
