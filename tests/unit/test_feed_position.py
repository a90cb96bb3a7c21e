"""The scan feed's position, parsed from PostgreSQL's text form of a snapshot."""

from __future__ import annotations

import pytest

from storage.feed import FeedPosition


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:20:12,15", FeedPosition(10, 20, (12, 15))),
        ("740:740:", FeedPosition(740, 740, ())),
    ],
    ids=["in-flight", "nothing-running"],
)
def test_a_snapshot_text_becomes_xmin_xmax_and_the_ids_in_flight(
    text: str, expected: FeedPosition
) -> None:
    """`xmin:xmax:xip,...` gives the position; an empty xip list is no id in flight."""
    assert FeedPosition.parse(text) == expected


@pytest.mark.parametrize(
    "position",
    [FeedPosition(10, 20, (12, 15)), FeedPosition(740, 740, ())],
    ids=["in-flight", "nothing-running"],
)
def test_a_stored_position_reads_back_the_same(position: FeedPosition) -> None:
    """The text a follower stores its position as parses back to that position."""
    assert FeedPosition.parse(position.text()) == position
