"""Tracking numbers as int64 keys, encoded a batch at a time.

A UPU S10 number (2 letters, 9 digits, 2 letters) fits in 49 bits, so the state
indexes parcels by a sorted int64 array and `np.searchsorted` instead of a dict of
strings (a dict entry with its string costs about 150 bytes per parcel; the key
costs 8). Anything that is not S10-shaped gets a negative key from a small side
table, so no tracking id is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

_LEN = 13
_A, _ZERO = ord("A"), ord("0")


class KeyCodec:
    """Encodes tracking ids to int64 keys and back; non-S10 ids use negative keys."""

    def __init__(self) -> None:
        self._other: dict[str, int] = {}
        self._other_ids: list[str] = []

    def encode(self, tracking_ids: Sequence[str]) -> I64:
        n = len(tracking_ids)
        if n == 0:
            return np.empty(0, dtype=np.int64)
        arr = np.asarray(tracking_ids, dtype=np.str_)
        width = arr.dtype.itemsize // 4
        out = np.empty(n, dtype=np.int64)
        if width >= _LEN:
            lengths = np.char.str_len(arr)
            codes = arr.view(np.uint32).reshape(n, width)[:, :_LEN].astype(np.int64)
            letters = np.r_[0:2, 11:13]
            is_letter = (codes[:, letters] >= _A) & (codes[:, letters] <= _A + 25)
            is_digit = (codes[:, 2:11] >= _ZERO) & (codes[:, 2:11] <= _ZERO + 9)
            ok = (lengths == _LEN) & is_letter.all(axis=1) & is_digit.all(axis=1)
            c = codes - np.where(np.isin(np.arange(_LEN), letters), _A, _ZERO)
            digits = np.zeros(n, dtype=np.int64)
            for i in range(2, 11):
                digits = digits * 10 + c[:, i]
            key = ((c[:, 0] * 26 + c[:, 1]) * 1_000_000_000 + digits) * 676
            out[:] = key + c[:, 11] * 26 + c[:, 12]
        else:
            ok = np.zeros(n, dtype=np.bool_)
        for i in np.flatnonzero(~ok).tolist():
            out[i] = self._other_key(tracking_ids[i])
        return out

    def decode_many(self, keys: I64) -> list[str]:
        """`decode` of every key, with numpy arithmetic instead of a Python call per key
        (a restart brings in every parcel of the replayed window at once)."""
        out: npt.NDArray[np.object_] = np.empty(len(keys), dtype=object)
        s10 = keys >= 0
        codes = s10_codes(keys[s10], np.uint32)
        out[s10] = codes.view(f"<U{_LEN}").reshape(-1).tolist()
        out[~s10] = [self._other_ids[-k - 1] for k in keys[~s10].tolist()]
        decoded: list[str] = out.tolist()
        return decoded

    def others(self) -> list[str]:
        """The ids that are not S10-shaped, in key order (key -1, -2, ...)."""
        return list(self._other_ids)

    def restore_others(self, tracking_ids: Sequence[str]) -> None:
        """Take the side table of `others()`, so stored negative keys mean the same ids."""
        self._other_ids = list(tracking_ids)
        self._other = {t: -i - 1 for i, t in enumerate(self._other_ids)}

    def _other_key(self, tracking_id: str) -> int:
        key = self._other.get(tracking_id)
        if key is None:
            self._other_ids.append(tracking_id)
            key = self._other[tracking_id] = -len(self._other_ids)
        return key

    def decode(self, key: int) -> str:
        if key < 0:
            return self._other_ids[-key - 1]
        rest, c2 = divmod(key, 26)
        rest, c1 = divmod(rest, 26)
        letters, digits = divmod(rest, 1_000_000_000)
        l1, l2 = divmod(letters, 26)
        return f"{chr(_A + l1)}{chr(_A + l2)}{digits:09d}{chr(_A + c1)}{chr(_A + c2)}"


def s10_codes(keys: I64, dtype: type = np.uint8) -> npt.NDArray[Any]:
    """The 13 characters of S10 keys (>= 0) as a (n, 13) array of character codes: as
    uint8, the bytes of the tracking numbers, with no Python call per key."""
    rest, c2 = np.divmod(keys, 26)
    rest, c1 = np.divmod(rest, 26)
    letters, digits = np.divmod(rest, 1_000_000_000)
    l1, l2 = np.divmod(letters, 26)
    codes: npt.NDArray[Any] = np.empty((len(keys), _LEN), dtype=dtype)
    codes[:, 0], codes[:, 1] = _A + l1, _A + l2
    for i in range(10, 1, -1):
        digits, codes[:, i] = np.divmod(digits, 10)
    codes[:, 2:11] += _ZERO
    codes[:, 11], codes[:, 12] = _A + c1, _A + c2
    return codes
