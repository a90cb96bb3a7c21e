"""A mis-sort or mis-route alert names where it was seen (the wrong chute, the first
read at the wrong site), also when the parcel's later reads came in the same burst
(an outage's backlog) and the tick that opens the alert finds it further on."""

from __future__ import annotations

import numpy as np
import pytest

from detect.engine import AlertChange, Engine, ManifestFacts, ScanBatch
from detect.reference import DetectConfig, ReadPointRow, Reference, SortPlanRow, build_reference
from parceltrack.alerts import AlertKind

POINTS = [
    ReadPointRow(rp, site, zone, stage, pos)
    for site in ("S", "T")
    for rp, zone, stage, pos in (
        (f"{site}-IND", "induction", "induction", 1),
        (f"{site}-SRT", "sorter", "sort", 3),
        (f"{site}-CHU1", "chute", "chute", 4),
        (f"{site}-DOR1", "door", "dispatch", 5),
        (f"{site}-CHU2", "chute", "chute", 4),
        (f"{site}-DOR2", "door", "dispatch", 5),
    )
]
STANDARDS = [(site, g, "express", 600.0) for site in ("S", "T")
             for g in ("induction", "sort", "chute")]  # fmt: skip
PLANS = [SortPlanRow("S", 1, 0.0, (("LON", "S-CHU1", "S-DOR1"),))]
PARCEL = "RR473124829GB"


def _engine(destination_site: str = "S") -> Engine:
    ref: Reference = build_reference(
        POINTS, [("express", 1)], STANDARDS, (), PLANS, (), ["LON"],
        DetectConfig(skew_tolerance_s=0.0, default_missing_s=600.0),
    )  # fmt: skip
    facts = {PARCEL: ManifestFacts("express", "LON", "S", destination_site, 0.0)}
    return Engine(ref, lambda ids: {t: facts[t] for t in ids if t in facts})


def _burst(engine: Engine, reads: list[tuple[str, float]]) -> list[AlertChange]:
    rps = [rp for rp, _ in reads]
    return engine.ingest(
        ScanBatch([PARCEL] * len(reads), rps, [f"{rp}-dev" for rp in rps],
                  [rp[0] for rp in rps], np.array([t for _, t in reads]),
                  np.zeros(len(reads), dtype=np.bool_))
    )  # fmt: skip


def _opened(engine: Engine, kind: AlertKind, now: float) -> AlertChange:
    (change,) = [c for c in engine.tick(now) if c.kind == kind and c.action == "open"]
    return change


@pytest.mark.parametrize("one_batch", [True, False], ids=["one-burst", "read-by-read"])
def test_a_missort_names_the_wrong_chute_even_when_the_door_read_came_with_it(
    one_batch: bool,
) -> None:
    """Wrong chute, then its door: the alert names the chute and the chute read's time,
    in one burst as when the reads come one by one with a tick between them."""
    engine = _engine()
    reads = [("S-IND", 0.0), ("S-SRT", 10.0), ("S-CHU2", 20.0), ("S-DOR2", 80.0)]
    if one_batch:
        _burst(engine, reads)
        change = _opened(engine, AlertKind.MISSORT, 81.0)
    else:
        _burst(engine, reads[:3])
        change = _opened(engine, AlertKind.MISSORT, 21.0)
        _burst(engine, reads[3:])
        assert not [c for c in engine.tick(81.0) if c.kind == AlertKind.MISSORT]
    assert (change.read_point_id, change.site_id) == ("S-CHU2", "S")
    assert change.episode == "S-CHU2@20.000"
    assert change.details["planned_chute"] == "S-CHU1"


def test_a_missort_corrected_and_repeated_names_the_later_wrong_chute() -> None:
    """Wrong chute, back to the sorter and the right chute (resolved), then wrong again:
    the second episode names the place of the second wrong read."""
    engine = _engine()
    _burst(engine, [("S-IND", 0.0), ("S-SRT", 10.0), ("S-CHU2", 20.0)])
    _opened(engine, AlertKind.MISSORT, 21.0)
    changes = _burst(engine, [("S-SRT", 30.0), ("S-CHU1", 40.0), ("S-SRT", 50.0),
                              ("S-CHU2", 60.0), ("S-DOR2", 90.0)])  # fmt: skip
    assert not [c for c in changes if c.kind == AlertKind.MISSORT]  # still wrong at the end
    _burst(engine, [("S-SRT", 100.0), ("S-CHU1", 110.0)])
    _burst(engine, [("S-SRT", 120.0), ("S-CHU2", 130.0), ("S-DOR2", 140.0)])
    change = _opened(engine, AlertKind.MISSORT, 141.0)
    assert change.episode == "S-CHU2@130.000"


def test_a_misroute_names_the_first_read_at_the_wrong_site() -> None:
    """Bound for S from origin S, read at site T's induction, sorter and door in one
    burst: the alert names T's induction, where it was first seen."""
    engine = _engine(destination_site="S")
    _burst(engine, [("T-IND", 100.0), ("T-SRT", 110.0), ("T-CHU1", 120.0), ("T-DOR1", 130.0)])
    change = _opened(engine, AlertKind.MISROUTE, 131.0)
    assert (change.read_point_id, change.site_id) == ("T-IND", "T")
    assert change.episode == "T-IND@100.000"
