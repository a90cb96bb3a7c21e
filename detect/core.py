"""Columnar state of active parcels and the checks over all of them at once.

No per-parcel Python objects on the hot path: a parcel is a slot in each array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
Mask = npt.NDArray[np.bool_]


@dataclass
class ParcelState:
    """Last sighting of each active parcel: read point index and time (Unix seconds)."""

    capacity: int = 1024
    slots: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.read_point = np.full(self.capacity, -1, dtype=np.int32)
        self.last_seen = np.full(self.capacity, np.nan, dtype=np.float64)
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def _slot_for(self, tracking_ids: list[str]) -> I32:
        out = np.empty(len(tracking_ids), dtype=np.int32)
        for i, t in enumerate(tracking_ids):
            slot = self.slots.get(t)
            if slot is None:
                slot = self.slots[t] = len(self.ids)
                self.ids.append(t)
            out[i] = slot
        if len(self.ids) > self.capacity:
            self._grow(len(self.ids))
        return out

    def _grow(self, needed: int) -> None:
        new = max(needed, self.capacity * 2)
        self.read_point = np.concatenate(
            [self.read_point, np.full(new - self.capacity, -1, dtype=np.int32)]
        )
        self.last_seen = np.concatenate([self.last_seen, np.full(new - self.capacity, np.nan)])
        self.capacity = new

    def update(self, tracking_ids: list[str], read_points: I32, seen: F64) -> None:
        """Apply a batch of sightings; the latest per parcel wins, whatever their order."""
        if not tracking_ids:
            return
        slots = self._slot_for(tracking_ids)
        order = np.argsort(seen, kind="stable")
        slots, rps, times = slots[order], read_points[order], seen[order]
        newer = ~(times < self.last_seen[slots])  # NaN (never seen) counts as older
        # Fancy assignment keeps the last write per slot; times are sorted ascending.
        self.last_seen[slots[newer]] = times[newer]
        self.read_point[slots[newer]] = rps[newer]


def overdue(state: ParcelState, has_next: Mask, window_s: F64, now: float) -> Mask:
    """Parcels not seen at their next read point within the window of the one they are at.

    `has_next` and `window_s` are indexed by read point; a parcel at a read point with
    no next one (an outbound door) is never overdue.
    """
    n = len(state)
    rp = state.read_point[:n]
    known = rp >= 0
    safe = np.where(known, rp, 0)
    late = (now - state.last_seen[:n]) > window_s[safe]
    return known & has_next[safe] & late
