import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firmware_sim.epc import SSCC96, InvalidEPC, decode_sscc96
from firmware_sim.scenario import (
    FaultRates,
    Scenario,
    ScenarioConfig,
    ScenarioError,
    generate,
)
from firmware_sim.truth import FAULT_KINDS, TruthFileError, read_truth_lines
from parceltrack.identifiers import is_s10
from tests.scenarios import CONFIG, RATES


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return generate(CONFIG)


def test_same_seed_gives_the_same_file_byte_for_byte() -> None:
    """Two generations from one configuration serialise to identical bytes."""
    assert generate(CONFIG).to_json() == generate(CONFIG).to_json()


def test_different_seeds_differ() -> None:
    """Another seed gives other arrivals, identifiers and faults."""
    a, b = generate(CONFIG), generate(ScenarioConfig(seed=6, parcels=3000, faults=RATES))
    assert [m.tracking_id for m in a.manifest] != [m.tracking_id for m in b.manifest]
    assert not np.array_equal(a.columns.at_ms, b.columns.at_ms)


def test_ground_truth_round_trips_through_the_file(scenario: Scenario, tmp_path: Path) -> None:
    """Saving and loading keeps every fault, manifest row, plan and read."""
    path = tmp_path / "s.json"
    scenario.save(path)
    loaded = Scenario.load(path)
    assert loaded.faults == scenario.faults
    assert loaded.manifest == scenario.manifest
    assert loaded.sort_plans == scenario.sort_plans
    assert loaded.stage_standards == scenario.stage_standards
    assert loaded.reads == scenario.reads
    assert loaded.to_json() == path.read_text()


def test_fault_counts_match_the_rates(scenario: Scenario) -> None:
    """Each kind is injected into exactly round(rate x parcels) parcels, one fault each."""
    counts = Counter(f.kind for f in scenario.faults)
    n = len(scenario.manifest)
    assert counts == {k: round(getattr(RATES, k) * n) for k in FAULT_KINDS}
    assert len({f.tracking_id for f in scenario.faults}) == len(scenario.faults)


def test_identifiers_are_valid_and_distinct(scenario: Scenario) -> None:
    """Every tracking id is a valid S10; RFID-site parcels carry a decodable SSCC-96."""
    ids = [m.tracking_id for m in scenario.manifest]
    assert all(is_s10(t) for t in ids)
    assert len(set(ids)) == len(ids)
    tagged = [m for m in scenario.manifest if m.origin_site == "MAN1"]
    assert tagged and all(m.epc is not None for m in tagged)
    assert all(m.epc is None for m in scenario.manifest if m.origin_site != "MAN1")
    epcs = [decode_sscc96(m.epc) for m in tagged if m.epc]
    assert all(e.company_prefix == "0614141" for e in epcs)
    assert len({e.serial_reference for e in epcs}) == len(epcs)


def test_sscc96_matches_the_tds_vector() -> None:
    """The encoder and decoder agree with GS1's published SSCC-96 example."""
    tag = decode_sscc96("3174257BF4499602D2000000")
    assert tag.uri == "urn:epc:id:sscc:0614141.1234567890"
    assert tag.sscc == "106141412345678908"
    assert SSCC96("0614141", "1234567890", filter=3).hex == "3174257BF4499602D2000000"
    assert tag.gs1_128 == "]C100106141412345678908"


@pytest.mark.parametrize(
    "bad",
    ["3074257BF7194E4000001A85", "31", "XYZ", "3174257BF4499602D2000001"],
    ids=["sgtin", "short", "not-hex", "reserved-bits"],
)
def test_bad_epcs_are_rejected_with_a_reason(bad: str) -> None:
    """What is not an SSCC-96 raises InvalidEPC."""
    with pytest.raises(InvalidEPC):
        decode_sscc96(bad)


def test_bad_configuration_is_a_clear_error() -> None:
    """Fault rates above one in total, or mis-routes with one site, are refused."""
    with pytest.raises(ScenarioError, match="fault rates"):
        generate(ScenarioConfig(faults=FaultRates(lost=0.7, delay=0.5)))
    with pytest.raises(ScenarioError, match="two sites"):
        generate(ScenarioConfig(sites=("LHR1",), rfid_sites=(), faults=FaultRates(misroute=0.1)))


def test_truth_lines_follow_the_playback_clock(scenario: Scenario, tmp_path: Path) -> None:
    """Each truth line is a fault with its times on the given start and speed, and
    reads back as the same faults."""
    start = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    path = tmp_path / "truth.jsonl"
    path.write_text(scenario.truth_lines(start, 60.0))
    lines = read_truth_lines(path)
    assert [f for f, _ in lines] == scenario.faults
    for fault, wall in lines:
        assert abs((wall - start).total_seconds() - fault.detectable_at_s / 60.0) < 0.001
    path.write_text(path.read_text() + "{oops\n")
    with pytest.raises(TruthFileError, match=f":{len(lines) + 1}:"):
        read_truth_lines(path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw.update(version=99),
        lambda raw: raw.pop("manifest"),
        lambda raw: raw["reads"]["parcel"].append(0),
        lambda raw: raw["reads"]["read_point"].__setitem__(0, 10_000),
    ],
    ids=["version", "missing-manifest", "ragged-reads", "unknown-read-point"],
)
def test_damaged_files_are_refused_with_a_reason(
    scenario: Scenario, tmp_path: Path, damage: Callable[[dict[str, Any]], object]
) -> None:
    """A file of another version or with broken parts raises ScenarioError, no crash."""
    raw = scenario.to_dict()
    damage(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ScenarioError):
        Scenario.load(path)
    path.write_text("{not json")
    with pytest.raises(ScenarioError, match="cannot read"):
        Scenario.load(path)
