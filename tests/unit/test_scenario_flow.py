"""The generated traffic follows its configuration: rates, plans, faults, timing."""

import itertools
from collections import defaultdict

import numpy as np
import pytest

from firmware_sim.arrivals import DAILY_PROFILE, FLAT_PROFILE, Peak, expected_count, rate_knots
from firmware_sim.layout import plan_in_force, sort_plans
from firmware_sim.scenario import FaultRates, Scenario, ScenarioConfig, generate

RATES = FaultRates(
    missort=0.03, delay=0.03, lost=0.03, noread=0.03, recirculation=0.03, misroute=0.03
)


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return generate(
        ScenarioConfig(seed=9, parcels=6000, faults=RATES, sites=("LHR1", "MAN1", "EDI1"))
    )


def _visits(s: Scenario) -> dict[str, list[tuple[float, str, bool]]]:
    out: dict[str, list[tuple[float, str, bool]]] = defaultdict(list)
    c = s.columns
    for at, rp, p, ok in zip(
        c.at_ms.tolist(), c.read_point.tolist(), c.parcel.tolist(), c.decoded.tolist(), strict=True
    ):
        out[s.manifest[p].tracking_id].append((at / 1000, s.read_points[rp].read_point, ok))
    return out


def _standard(s: Scenario, site: str, stage: str, service_class: str) -> float:
    return next(
        x.max_seconds
        for x in s.stage_standards
        if (x.site, x.stage, x.service_class) == (site, stage, service_class)
    )


def _sigma_ok(observed: int, expected: float, k: float = 4.5) -> bool:
    return abs(observed - expected) <= k * max(expected, 1.0) ** 0.5


def test_flat_rate_arrivals_match_the_configured_rate() -> None:
    """An hour at 36,000 parcels/h gives that many arrivals, evenly over 5-minute windows."""
    s = generate(
        ScenarioConfig(
            seed=1, parcels=None, duration_s=3600, rate_per_hour=36_000, profile=FLAT_PROFILE
        )
    )
    arrivals = np.array([m.inducted_at_s for m in s.manifest])
    assert _sigma_ok(len(arrivals), 36_000)
    counts = np.histogram(arrivals, bins=12, range=(0, 3600))[0]
    assert all(_sigma_ok(int(c), 3000) for c in counts)


def test_daily_profile_and_peaks_shape_the_arrivals() -> None:
    """Over a day, each hour's arrivals match the profile's share; a peak multiplies its span."""
    peak = Peak(start_s=7200, duration_s=1800, factor=3.0)
    cfg = ScenarioConfig(seed=4, parcels=None, duration_s=86_400, rate_per_hour=2000, peaks=(peak,))
    s = generate(cfg)
    arrivals = np.array([m.inducted_at_s for m in s.manifest])
    knots, rate = rate_knots(2000, DAILY_PROFILE, (peak,), 6.0, 86_400)
    for hour in range(24):
        a, b = hour * 3600.0, (hour + 1) * 3600.0
        observed = int(np.count_nonzero((arrivals >= a) & (arrivals < b)))
        assert _sigma_ok(observed, expected_count(knots, rate, a, b)), hour
    in_peak = np.count_nonzero((arrivals >= 7200) & (arrivals < 9000))
    before = np.count_nonzero((arrivals >= 5400) & (arrivals < 7200))
    # 06:00 + 2 h = 08:00 (profile 1.4) versus 07:30-08:00 (1.1 and 1.4 by halves).
    assert in_peak > 2.2 * before


def test_normal_parcels_pass_every_point_within_their_standards(scenario: Scenario) -> None:
    """A parcel without a fault is read at induction, tunnel, sorter, chute and door, each
    hop within the stage standard of its class."""
    faulty = {f.tracking_id for f in scenario.faults}
    zones = {r.read_point: r for r in scenario.read_points}
    manifest = {m.tracking_id: m for m in scenario.manifest}
    visits = _visits(scenario)
    for tracking, seen in visits.items():
        if tracking in faulty:
            continue
        m = manifest[tracking]
        assert [zones[rp].zone for _, rp, _ in seen] == [
            "induction", "tunnel", "sorter", "chute", "door",
        ]  # fmt: skip
        for (t0, rp, _), (t1, _, _) in itertools.pairwise(seen):
            assert t1 - t0 <= _standard(scenario, m.origin_site, zones[rp].stage, m.service_class)


def test_sort_plan_versions_switch_at_their_effective_time(scenario: Scenario) -> None:
    """Correctly sorted parcels reach the chute of the plan in force at that moment, and
    parcels reach chutes under both versions."""
    faulty = {f.tracking_id for f in scenario.faults if f.kind == "missort"}
    manifest = {m.tracking_id: m for m in scenario.manifest}
    versions = set()
    for tracking, seen in _visits(scenario).items():
        chute = [(t, rp) for t, rp, _ in seen if "-CHU" in rp]
        if tracking in faulty or not chute:
            continue
        t, rp = chute[0]
        m = manifest[tracking]
        plan = plan_in_force(scenario.sort_plans, m.origin_site, t)
        versions.add(plan.version)
        assert rp == plan.chute_for(m.destination)
    assert versions == {1, 2}
    v1, v2 = (p for p in scenario.sort_plans if p.site == "LHR1")
    assert all(a.chute != b.chute for a, b in zip(v1.entries, v2.entries, strict=True))


def test_missorted_parcels_leave_by_a_chute_not_assigned_to_their_destination(
    scenario: Scenario,
) -> None:
    """A mis-sort's chute is not its destination's under the plan in force, and it is
    detectable at that chute read."""
    manifest = {m.tracking_id: m for m in scenario.manifest}
    visits = _visits(scenario)
    missorts = [f for f in scenario.faults if f.kind == "missort"]
    assert missorts
    for f in missorts:
        m = manifest[f.tracking_id]
        t, rp, _ = next(v for v in visits[f.tracking_id] if "-CHU" in v[1])
        plan = plan_in_force(scenario.sort_plans, m.origin_site, t)
        assigned = {e.chute for e in plan.entries if e.destination == m.destination}
        assert rp == f.read_point and rp not in assigned
        assert f.details["expected_chute"] in assigned
        assert f.detectable_at_s == t and f.details["plan_version"] == plan.version
        assert visits[f.tracking_id][-1][1] == rp.replace("CHU", "DOR")


def test_delays_lost_noreads_and_recirculation_match_their_truth(scenario: Scenario) -> None:
    """Each fault's reads show what the truth says, and detectable_at follows the standards."""
    manifest = {m.tracking_id: m for m in scenario.manifest}
    stage = {r.read_point: r.stage for r in scenario.read_points}
    visits = _visits(scenario)
    for f in scenario.faults:
        seen, m = visits[f.tracking_id], manifest[f.tracking_id]
        if f.kind in ("delay", "lost"):
            limit = _standard(scenario, m.origin_site, stage[f.read_point], m.service_class)
            assert f.detectable_at_s == pytest.approx(f.at_s + limit)
            i = next(i for i, v in enumerate(seen) if v[1] == f.read_point)
            assert seen[i][0] == f.at_s
            if f.kind == "delay":
                assert seen[i + 1][0] - f.at_s > limit
                assert seen[i + 1][1] == f.details["next_read_point"]
            else:
                assert i == len(seen) - 1  # never seen again
        elif f.kind == "noread":
            tunnel = [v for v in seen if v[1] == f.read_point]
            if f.details["protocol"] == "barcode":
                assert tunnel == [(f.at_s, f.read_point, False)]
            else:  # an RFID gate that missed the tag says nothing
                assert tunnel == [] and m.origin_site == "MAN1"
        elif f.kind == "recirculation":
            sorter = [v[0] for v in seen if v[1] == f.read_point]
            assert sorter == [f.at_s, f.detectable_at_s]


def test_rfid_sites_report_tags_and_miss_no_read_tags() -> None:
    """On an RFID site the tunnel and doors carry the EPC; a tunnel no-read is no read."""
    s = generate(
        ScenarioConfig(
            seed=3,
            parcels=500,
            sites=("MAN1",),
            rfid_sites=("MAN1",),
            faults=FaultRates(noread=0.05, lost=0.05),
        )
    )
    noreads = {f.tracking_id for f in s.faults if f.kind == "noread"}
    assert noreads
    for r in s.reads:
        if r.protocol in ("mercury", "r2000"):
            assert r.code is None and r.epc is not None
            assert r.tracking_id not in noreads or "-TUN" not in r.read_point
        else:
            assert r.code == r.tracking_id
    assert {r.protocol for r in s.reads} == {"barcode", "mercury", "r2000"}


def test_misrouted_parcels_turn_up_at_a_wrong_site(scenario: Scenario) -> None:
    """A mis-route leaves by its right door, then is read at a site that is neither its
    origin nor its destination site, detectable at that first read."""
    manifest = {m.tracking_id: m for m in scenario.manifest}
    site_of = {r.read_point: r.site for r in scenario.read_points}
    visits = _visits(scenario)
    misroutes = [f for f in scenario.faults if f.kind == "misroute"]
    assert len(misroutes) == round(0.03 * len(scenario.manifest))
    for f in misroutes:
        m, seen = manifest[f.tracking_id], visits[f.tracking_id]
        assert f.site not in (m.origin_site, m.destination_site)
        away = [v for v in seen if site_of[v[1]] == f.site]
        assert away[0][:2] == (f.detectable_at_s, f.read_point) and "-IND" in f.read_point
        home = [v for v in seen if site_of[v[1]] == m.origin_site]
        assert home[-1][1] == f.details["left_by"] and home[-1][0] < f.at_s
        assert [site_of[v[1]] for v in seen] == [m.origin_site] * len(home) + [f.site] * len(away)
    others = {f.tracking_id for f in misroutes}
    for tracking, seen in visits.items():
        if tracking not in others:
            assert {site_of[v[1]] for v in seen} == {manifest[tracking].origin_site}


def test_plan_in_force_changes_exactly_at_the_effective_time() -> None:
    """Version 1 holds until the change; from that instant on, version 2 decides."""
    plans = sort_plans("LHR1", ("LON", "MAN"), 3, change_at_s=100.0)
    assert plan_in_force(plans, "LHR1", 99.999).version == 1
    assert plan_in_force(plans, "LHR1", 100.0).version == 2
    assert plan_in_force(plans, "LHR1", 100.0).chute_for("LON") == "LHR1-CHU02"
    with pytest.raises(LookupError):
        plan_in_force(plans, "MAN1", 5.0)
