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
