"""The reference-data model refuses words outside the ground's enumerations; the
repository orders read points for their foreign keys."""

from __future__ import annotations

from datetime import datetime

import pytest

from parceltrack.layout import Stage, Zone, allowed
from storage.model import ReadPoint, ReferenceDataError, SortPlan, SortPlanEntry, StageStandard
from storage.reference import Query, save_read_points


@pytest.mark.parametrize(
    ("zone", "stage", "refused"),
    [
        pytest.param(
            "slide", "chute", f"unknown zone 'slide'; allowed: {allowed(Zone)}", id="zone"
        ),
        pytest.param(
            "chute", "sorting", f"unknown stage 'sorting'; allowed: {allowed(Stage)}", id="stage"
        ),
    ],
)
def test_a_read_point_with_an_unknown_word_is_refused_listing_the_allowed_ones(
    zone: str, stage: str, refused: str
) -> None:
    """An unknown zone or stage is refused with every allowed value named."""
    with pytest.raises(ReferenceDataError) as caught:
        ReadPoint("LHR1-X1", "LHR1", zone, stage)  # type: ignore[arg-type]
    assert str(caught.value) == refused


def test_known_words_become_the_enumerations() -> None:
    """Zones and stages given as their words are stored as the ground's enumerations."""
    rp = ReadPoint("LHR1-CHU01", "LHR1", "chute", "chute")  # type: ignore[arg-type]
    assert (rp.zone, rp.stage) == (Zone.CHUTE, Stage.CHUTE)
    standard = StageStandard("LHR1", "tunnel", "express", 7.5)  # type: ignore[arg-type]
    assert standard.stage is Stage.TUNNEL


def test_a_sort_plan_needs_an_aware_time_and_distinct_destinations() -> None:
    """A naive effective time or a destination given twice is refused."""
    entry = SortPlanEntry("LON", "LHR1-CHU01")
    with pytest.raises(ReferenceDataError, match="UTC offset"):
        SortPlan("LHR1", datetime(2026, 1, 5, 6, 0), (entry,))
    with pytest.raises(ReferenceDataError, match="appears twice"):
        SortPlan("LHR1", datetime.fromisoformat("2026-01-05T06:00:00+00:00"), (entry, entry))


def test_read_points_are_stored_next_hop_first_and_a_loop_is_refused() -> None:
    """A batch is ordered so each next hop is stored before the read point leading to it."""
    ind = ReadPoint("IND1", "LHR1", Zone.INDUCTION, Stage.INDUCTION, next_read_point_id="TUN1")
    tun = ReadPoint("TUN1", "LHR1", Zone.TUNNEL, Stage.TUNNEL, next_read_point_id="SRT1")
    srt = ReadPoint("SRT1", "LHR1", Zone.SORTER, Stage.SORT)
    statement = next(save_read_points([ind, tun, srt]))
    assert isinstance(statement, Query) and statement.many is not None
    assert [row[0] for row in statement.many] == ["SRT1", "TUN1", "IND1"]
    loop = ReadPoint("SRT1", "LHR1", Zone.SORTER, Stage.SORT, next_read_point_id="IND1")
    with pytest.raises(ReferenceDataError, match="loop"):
        next(save_read_points([ind, tun, loop]))
