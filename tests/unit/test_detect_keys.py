"""Tracking keys decoded a batch at a time give exactly what one-by-one decoding gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.keys import KeyCodec

LETTERS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
S10_SHAPED = st.builds(
    lambda a, n, b: f"{a}{n:09d}{b}", LETTERS, st.integers(0, 999_999_999), LETTERS
)
# No NUL: PostgreSQL text cannot hold one, and numpy's strings drop trailing NULs.
OTHER = st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=20)
IDS = st.lists(S10_SHAPED | OTHER, max_size=50)


@settings(max_examples=200, deadline=None)
@given(ids=IDS)
def test_decode_many_equals_decode_of_each(ids: list[str]) -> None:
    """Any mix of S10-shaped and other ids, repeats included, decodes back in order."""
    codec = KeyCodec()
    keys = codec.encode(ids)
    assert codec.decode_many(keys) == [codec.decode(int(k)) for k in keys.tolist()] == ids


def test_decode_many_of_nothing_is_empty() -> None:
    """No keys, no ids."""
    assert KeyCodec().decode_many(np.empty(0, dtype=np.int64)) == []
