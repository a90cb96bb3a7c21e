"""The counter-staff rating (design.md, "Seed's counter-staff rating"), checked
against worked examples built from the programme's own rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from parceltrack import rating

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _feedback(*kinds: rating.FeedbackKind) -> list[tuple[datetime, rating.FeedbackKind, int]]:
    return [(T0 + timedelta(hours=i), kind, i + 1) for i, kind in enumerate(kinds)]


@pytest.mark.parametrize(
    ("kinds", "score", "stars", "bonus", "review"),
    [
        ((), 100, 1, 1.0, False),
        (("praise",) * 10, 200, 2, 2.0, False),
        (("praise",) * 9, 190, 1, 1.9, False),
        (("complaint",), 80, 0, 0.8, False),
        (("complaint", "complaint"), 60, 0, 0.6, False),
        (("complaint", "complaint", "praise", "complaint"), 50, 0, 0.5, True),
        (("complaint",) * 6, -20, 0, 0.0, True),
        (("praise",) * 30, 400, 2, 4.0, False),
        (("praise", "praise", "complaint"), 100, 1, 1.0, False),
    ],
    ids=[
        "everyone-starts-at-one-star",
        "200-points-makes-two-stars",
        "190-is-still-one-star",
        "80-points-pays-0.8x",
        "60-points-is-not-yet-review",
        "under-60-calls-for-review",
        "bonus-never-below-nothing",
        "no-third-star",
        "two-praises-cancel-a-complaint",
    ],
)
def test_worked_examples(
    kinds: tuple[rating.FeedbackKind, ...], score: int, stars: int, bonus: float, review: bool
) -> None:
    """Each worked example ends at the score, stars, bonus factor and review flag the rules give."""
    now = rating.current(_feedback(*kinds))
    assert (now.score, now.stars, now.needs_review) == (score, stars, review)
    assert now.bonus_factor == pytest.approx(bonus)


def test_history_walks_through_every_feedback_in_time_order() -> None:
    """The history applies feedback oldest first, whatever order it arrives in, with each change."""
    given = _feedback("praise", "complaint", "praise")
    steps = rating.history(reversed(given))
    assert [s.feedback_id for s in steps] == [1, 2, 3]
    assert [s.change for s in steps] == [10, -20, 10]
    assert [s.rating.score for s in steps] == [110, 90, 100]
    assert [s.rating.stars for s in steps] == [1, 0, 1]
