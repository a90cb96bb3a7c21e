"""The counter-staff rating (星级营业员) of the service-quality programme, exactly.

Everyone starts as one star at 100 points; praise adds 10, a complaint takes 20.
200 points makes two stars; under 100 is no star. The base bonus is paid in
proportion to the score (two stars at 200 points: 2x; 80 points: 0.8x), never
below nothing; under 60 points calls for a review. The rules name no third star,
so two stars is the top however high the score climbs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

FeedbackKind = Literal["praise", "complaint"]

START = 100
POINTS: dict[FeedbackKind, int] = {"praise": 10, "complaint": -20}
ONE_STAR = 100
TWO_STARS = 200
REVIEW_BELOW = 60


@dataclass(frozen=True, slots=True)
class Rating:
    """A staff member's standing after some feedback."""

    score: int
    stars: int
    bonus_factor: float  # times the base bonus
    needs_review: bool


@dataclass(frozen=True, slots=True)
class RatingStep:
    """One piece of feedback and the rating right after it."""

    at: datetime
    kind: FeedbackKind
    feedback_id: int
    change: int
    rating: Rating


def stars(score: int) -> int:
    if score >= TWO_STARS:
        return 2
    return 1 if score >= ONE_STAR else 0


def rating(score: int) -> Rating:
    return Rating(
        score=score,
        stars=stars(score),
        bonus_factor=max(score, 0) / START,
        needs_review=score < REVIEW_BELOW,
    )


def history(feedback: Iterable[tuple[datetime, FeedbackKind, int]]) -> list[RatingStep]:
    """The rating after each (time, kind, feedback id), oldest first."""
    score, steps = START, []
    for at, kind, feedback_id in sorted(feedback, key=lambda f: (f[0], f[2])):
        change = POINTS[kind]
        score += change
        steps.append(RatingStep(at, kind, feedback_id, change, rating(score)))
    return steps


def current(feedback: Iterable[tuple[datetime, FeedbackKind, int]]) -> Rating:
    steps = history(feedback)
    return steps[-1].rating if steps else rating(START)
