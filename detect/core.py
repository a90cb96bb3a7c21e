"""Columnar state of every active parcel, and the checks over all of them at once.

No per-parcel Python objects on the hot path: a parcel is a slot in each array,
found from its int64 key (detect/keys.py) through a sorted key array and
`np.searchsorted`. A batch of reads updates the state in a handful of vectorised
steps; a tick is a few comparisons of precomputed deadlines against `now`:

- delay: `now > deadline` (arrival at the stage + the stage standard for the
  parcel's class at that site), while it has a next stage;
- missing: `now > missing_at` (the later of the deadline and the last read, plus
  the missing window for the site and class);
- late: `now > late_at`, the moment it can no longer meet its delivery standard
  (accepted + J+n days) even at the learned median transit times;
- missort / misroute: flags set by the reads themselves (a chute or door other than
  the sort plan in force at the read's time assigns; a site that is neither its
  origin nor its destination) and cleared when it is read at the right place.

Hysteresis: an alert opens when its condition holds and closes only on positive
evidence (a read at the next stage, any read at all, the planned chute or door,
the destination site), never because a condition merely wobbles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detect.reference import ROLE_CHUTE, ROLE_OTHER, Reference
from parceltrack.alerts import PARCEL_KINDS, AlertKind

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

# One bit per parcel kind in `flags` and `open`, built once from the ground's kinds.
BIT: dict[AlertKind, np.uint8] = {k: np.uint8(1 << i) for i, k in enumerate(PARCEL_KINDS)}
UNTAGGED = np.uint8(1 << 7)  # in flags: no RFID tag, so tag-only read points miss it
INF = np.inf

# Columns of a parcel: (name, dtype, initial value).
_COLUMNS: tuple[tuple[str, type, float], ...] = (
    ("key", np.int64, 0),
    ("rp", np.int32, -1),  # current read point
    ("site", np.int16, -1),
    ("stage", np.int8, -1),
    ("svc", np.int8, 0),  # service class
    ("dest", np.int16, -1),  # destination code (sort plan key)
    ("origin", np.int16, -1),
    ("dest_site", np.int16, -1),
    ("planned_chute", np.int32, -1),  # under the plan in force at its last read
    ("last_seen", np.float64, np.nan),
    ("entered", np.float64, np.nan),  # arrival at the current stage
    ("deadline", np.float64, INF),  # next stage expected by
    ("missing_at", np.float64, INF),
    ("late_at", np.float64, INF),
    ("delivery_at", np.float64, INF),  # delivery standard
    ("eta", np.float64, np.nan),  # p50 arrival at the site's last stage
    ("eta_p90", np.float64, np.nan),
    ("flags", np.uint8, 0),  # missort / misroute conditions
    # Where (and when) a set missort / misroute condition was first seen: the wrong
    # chute, the first read at the wrong site. The alert names that place, not where
    # the parcel is by the tick that opens it (a burst of reads after an outage
    # brings the door read too).
    ("missort_rp", np.int32, -1),
    ("missort_at", np.float64, np.nan),
    ("misroute_rp", np.int32, -1),
    ("misroute_at", np.float64, np.nan),
    ("open", np.uint8, 0),  # kinds with a live alert
    ("dirty", np.bool_, False),  # ETA changed since the last flush
)


@dataclass(frozen=True, slots=True)
class LateArrivals:
    """Parcels that reached a later stage after its standard had passed, with where and
    since when they had been (the delay they had, now over)."""

    slots: I64
    read_point: I32
    entered: F64
    due: F64

    @classmethod
    def none(cls) -> LateArrivals:
        return cls(
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int32),
            np.empty(0, dtype=np.float64),
            np.empty(0, dtype=np.float64),
        )


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """What a batch of reads changed: per kind, the slots whose live alert it resolves,
    and the delays seen only once the parcel arrived."""

    resolved: dict[AlertKind, I64]
    late: LateArrivals


class ParcelState:
    """Arrays indexed by slot, plus a sorted key index; grows by doubling."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = max(capacity, 1)
        self.n = 0
        for name, dtype, init in _COLUMNS:
            setattr(self, name, np.full(self.capacity, init, dtype=dtype))
        self.sorted_keys = np.empty(0, dtype=np.int64)
        self.sorted_slots = np.empty(0, dtype=np.int32)
        # Typed aliases for mypy (setattr above creates them).
        self.key: I64
        self.rp: I32
        self.site: I16
        self.stage: npt.NDArray[np.int8]
        self.svc: npt.NDArray[np.int8]
        self.dest: I16
        self.origin: I16
        self.dest_site: I16
        self.planned_chute: I32
        self.last_seen: F64
        self.entered: F64
        self.deadline: F64
        self.missing_at: F64
        self.late_at: F64
        self.delivery_at: F64
        self.eta: F64
        self.eta_p90: F64
        self.flags: U8
        self.missort_rp: I32
        self.missort_at: F64
        self.misroute_rp: I32
        self.misroute_at: F64
        self.open: U8
        self.dirty: Mask

    def __len__(self) -> int:
        return self.n

    def bytes_per_parcel(self) -> float:
        """State bytes per active parcel: every column plus the key index."""
        per_slot = sum(np.dtype(d).itemsize for _, d, _ in _COLUMNS)
        return per_slot + self.sorted_keys.itemsize + self.sorted_slots.itemsize

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """Copies of every column of the occupied slots and of the key index (for a
        checkpoint, taken between ticks so it matches one feed position)."""
        out = {name: getattr(self, name)[: self.n].copy() for name, _d, _i in _COLUMNS}
        out["sorted_keys"] = self.sorted_keys.copy()
        out["sorted_slots"] = self.sorted_slots.copy()
        return out

    def restore(self, columns: dict[str, npt.NDArray[Any]]) -> None:
        """Take the state of `columns()`; raises ValueError on a column that is missing,
        of another type or of another length."""
        n = len(columns["key"])
        for name, dtype, _init in (*_COLUMNS, ("sorted_keys", np.int64, 0),
                                   ("sorted_slots", np.int32, 0)):  # fmt: skip
            col = columns.get(name)
            if col is None or col.dtype != np.dtype(dtype) or col.shape != (n,):
                raise ValueError(f"parcel column {name!r} is missing or malformed")
        self.n = 0
        self._reserve(n)
        for name, _dtype, init in _COLUMNS:
            target = getattr(self, name)
            target[:n] = columns[name]
            target[n:] = init
        self.n = n
        self.sorted_keys = columns["sorted_keys"].copy()
        self.sorted_slots = columns["sorted_slots"].copy()

    def find(self, keys: I64) -> I64:
        """Slot of each key, -1 for keys not in the state."""
        if len(self.sorted_keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted_keys, keys)
        safe = np.minimum(pos, len(self.sorted_keys) - 1)
        found = self.sorted_keys[safe] == keys
        return np.where(found, self.sorted_slots[safe], -1).astype(np.int64)

    def slots_for(self, keys: I64) -> tuple[I64, I64]:
        """Slot of each key, creating slots for new keys; also returns the new slots."""
        uniq, inverse = np.unique(keys, return_inverse=True)
        slots = self.find(uniq)
        missing = slots < 0
        fresh = uniq[missing]
        new_slots = np.arange(self.n, self.n + len(fresh), dtype=np.int64)
        if len(fresh):
            self._reserve(self.n + len(fresh))
            self.key[new_slots] = fresh
            self.n += len(fresh)
            at = np.searchsorted(self.sorted_keys, fresh)
            self.sorted_keys = np.insert(self.sorted_keys, at, fresh)
            self.sorted_slots = np.insert(self.sorted_slots, at, new_slots.astype(np.int32))
            slots[missing] = new_slots
        return slots[inverse.reshape(-1)], new_slots

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        new = max(needed, self.capacity * 2)
        for name, dtype, init in _COLUMNS:
            old = getattr(self, name)
            grown: npt.NDArray[Any] = np.full(new, init, dtype=dtype)
            grown[: self.capacity] = old
            setattr(self, name, grown)
        self.capacity = new

    def compact(self, keep: Mask) -> I64:
        """Drop the slots where `keep` is False (parcels no longer active); returns the
        new slot of every old one (-1 for dropped) so callers can remap."""
        keep = keep[: self.n]
        remap = np.full(self.n, -1, dtype=np.int64)
        kept = np.flatnonzero(keep)
        remap[kept] = np.arange(len(kept))
        for name, _dtype, init in _COLUMNS:
            col = getattr(self, name)
            col[: len(kept)] = col[kept]
            col[len(kept) : self.n] = init
        self.n = len(kept)
        order = np.argsort(self.key[: self.n], kind="stable")
        self.sorted_keys = self.key[: self.n][order].copy()
        self.sorted_slots = order.astype(np.int32)
        return remap

    def set_attributes(
        self,
        slots: I64,
        svc: npt.ArrayLike,
        dest: npt.ArrayLike,
        origin: npt.ArrayLike,
        dest_site: npt.ArrayLike,
        delivery_at: npt.ArrayLike,
        tagged: npt.ArrayLike = True,
    ) -> None:
        """Manifest facts of parcels (service class, destination ...), by slot."""
        self.flags[slots] = np.where(
            tagged, self.flags[slots] & ~UNTAGGED, self.flags[slots] | UNTAGGED
        )
        self.svc[slots] = svc
        self.dest[slots] = dest
        self.origin[slots] = origin
        self.dest_site[slots] = dest_site
        self.delivery_at[slots] = delivery_at


def _last_per_slot(slots: I64, order_by: F64, mask: Mask) -> tuple[I64, I64]:
    """Among rows where mask holds: each slot once, with the row of its largest order_by."""
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return np.empty(0, dtype=np.int64), rows.astype(np.int64)
    order = rows[np.lexsort((order_by[rows], slots[rows]))]
    s = slots[order]
    last = np.ones(len(order), dtype=np.bool_)
    last[:-1] = s[1:] != s[:-1]
    return s[last], order[last].astype(np.int64)


def apply_reads(state: ParcelState, ref: Reference, slots: I64, rp: I32, ts: F64) -> ReadOutcome:
    """Apply a batch of decoded reads (any order, duplicates welcome) to the state."""
    empty = np.empty(0, dtype=np.int64)
    if len(slots) == 0:
        return ReadOutcome({k: empty for k in PARCEL_KINDS}, LateArrivals.none())
    known = rp >= 0
    rp_safe = np.where(known, rp, 0)
    site = np.where(known, ref.rp_site[rp_safe], -1).astype(np.int16)
    rank = np.where(known, ref.rp_rank[rp_safe], 0).astype(np.float64)
    # One order for "which read is current": later stages win over slightly later
    # reads at earlier stages (clock skew); a clearly later earlier-stage read wins
    # (recirculation, re-induction).
    skew = ref.skew_at(site)  # per read: each site has its own tolerance
    eff = ts + rank * skew
    resolved: dict[AlertKind, list[I64]] = {k: [] for k in PARCEL_KINDS}

    # Sort-plan and route checks look at every read, the latest per parcel deciding.
    dest = state.dest[slots]
    role = np.where(known, ref.rp_role[rp_safe], ROLE_OTHER)
    chute, door = ref.planned(site, dest, ts)
    # A parcel leaves by the door its chute feeds: if the plan changed while it was
    # in the chute, the door of the plan before is right too.
    # Looking back past the site's first plan version means that version (a centre
    # that started sorting less than a chute's dwell ago).
    door_before = ref.planned(site, dest, ts - ref.door_lookback_s, earliest=True)[1]
    # A parcel held in its chute longer than that (a delay) left by the door of the plan
    # in force when it entered the chute.
    prev = np.maximum(state.rp[slots], 0)
    in_chute = (state.rp[slots] >= 0) & (ref.rp_role[prev] == ROLE_CHUTE)
    chute_entered = np.where(in_chute, state.entered[slots], ts)
    door_then = np.where(in_chute, ref.planned(site, dest, chute_entered)[1], -1)
    planned_here = np.where(role == 1, chute, door)
    judged = known & (role != ROLE_OTHER) & (planned_here >= 0)
    fresh = ~(ts < state.last_seen[slots] - skew)
    # Set by any wrong read not followed by a right one; cleared only by a read at the
    # place the plan in force names (a door that was right under the plan before is
    # not wrong, but no proof the parcel is back on track either).
    # Within the clock tolerance of a plan change either version may be the one in force.
    tol = skew
    early_chute, early_door = ref.planned(site, dest, ts - tol)
    late_chute, late_door = ref.planned(site, dest, ts + tol)
    near = np.where(role == 1, (rp == early_chute) | (rp == late_chute),
                    (rp == early_door) | (rp == late_door) | (rp == door_before)
                    | (rp == door_then))  # fmt: skip
    right = judged & fresh & (rp == planned_here)
    wrong = judged & fresh & ~right & ~near
    touched, at = np.unique(slots[wrong | right], return_inverse=True)
    last_wrong = np.full(len(touched), -np.inf)
    last_right = np.full(len(touched), -np.inf)
    sel_ts, sel_wrong = ts[wrong | right], wrong[wrong | right]
    np.maximum.at(last_wrong, at[sel_wrong], sel_ts[sel_wrong])
    np.maximum.at(last_right, at[~sel_wrong], sel_ts[~sel_wrong])
    # Where it went wrong: the first wrong read after the last right one, for a parcel
    # whose condition starts in this batch (one already set keeps its place).
    starts = (last_wrong > last_right) & (
        ((state.flags[touched] & BIT[AlertKind.MISSORT]) == 0) | (last_right > -np.inf)
    )
    w_at, w_rp, w_ts = at[sel_wrong], rp[wrong | right][sel_wrong], sel_ts[sel_wrong]
    _first_place(
        state.missort_rp, state.missort_at, touched, starts, w_at, w_rp, w_ts,
        w_ts > last_right[w_at],
    )  # fmt: skip
    _set_flag(
        state,
        AlertKind.MISSORT,
        touched[last_wrong > last_right],
        touched[last_right > last_wrong],
        resolved,
    )

    dsite = state.dest_site[slots]
    routed = known & (dsite >= 0) & fresh
    u, rows = _last_per_slot(slots, ts, routed)
    bad = (site[rows] != dsite[rows]) & (site[rows] != state.origin[u])
    at_dest = site[rows] == dsite[rows]
    # Its first read at the wrong site, for a parcel whose condition starts here.
    began = bad & ((state.flags[u] & BIT[AlertKind.MISROUTE]) == 0)
    r_rows = np.flatnonzero(routed)
    r_at = np.searchsorted(u, slots[r_rows])
    _first_place(
        state.misroute_rp, state.misroute_at, u, began,
        r_at, rp[r_rows], ts[r_rows], site[r_rows] == site[rows][r_at],
    )  # fmt: skip
    _set_flag(state, AlertKind.MISROUTE, u[bad], u[at_dest], resolved)

    # The journey in this batch, per parcel: its reads newer than what the state has,
    # in "current" order, cut into passes (consecutive reads at one stage, no gap
    # longer than a duplicate's). A pass that moved the parcel forward later than the
    # standards of the stages in between allow is a delay seen only on arrival.
    cur_rank = np.where(state.rp[slots] >= 0, ref.rp_rank[np.maximum(state.rp[slots], 0)], 0)
    cur_site = np.where(state.rp[slots] >= 0, state.site[slots], -1)
    cur_eff = state.last_seen[slots] + cur_rank * ref.skew_at(cur_site)
    take = np.flatnonzero(known & ~(eff <= cur_eff))  # NaN: never seen, so newer
    if len(take) == 0:
        out = {k: np.unique(np.concatenate(v)) if v else empty for k, v in resolved.items()}
        return ReadOutcome(out, LateArrivals.none())
    rows = take[np.lexsort((eff[take], slots[take]))]
    r_slot, r_rp, r_ts, r_site = slots[rows], rp[rows], ts[rows], site[rows]
    r_stage = ref.rp_stage[r_rp]
    first = np.ones(len(rows), dtype=np.bool_)
    first[1:] = r_slot[1:] != r_slot[:-1]
    gap = ref.gap_at(r_site)
    cont_state = (
        first
        & (state.rp[r_slot] >= 0)
        & (state.stage[r_slot] == r_stage)
        & (state.site[r_slot] == r_site)
        & (r_ts - state.last_seen[r_slot] <= gap)
    )
    moves = first & ~cont_state
    moves[1:] |= ~first[1:] & (
        (r_stage[1:] != r_stage[:-1])
        | (r_site[1:] != r_site[:-1])
        | (r_ts[1:] - r_ts[:-1] > gap[1:])
    )
    starts = np.flatnonzero(first | moves)  # one row per pass
    p_slot = r_slot[starts]
    p_stage = r_stage[starts].astype(np.int64)
    p_site = r_site[starts].astype(np.int64)
    p_move = moves[starts]
    p_start = np.where(cont_state[starts], state.entered[p_slot], r_ts[starts])
    # The pass before each pass: the previous one of the parcel, or the state's.
    from_state = first[starts]
    prev_ok = np.where(from_state, state.rp[p_slot] >= 0, True)
    prev_stage = np.where(from_state, state.stage[p_slot], np.roll(p_stage, 1)).astype(np.int64)
    prev_site = np.where(from_state, state.site[p_slot], np.roll(p_site, 1)).astype(np.int64)
    prev_start = np.where(from_state, state.entered[p_slot], np.roll(p_start, 1))
    prev_rp = np.where(from_state, state.rp[p_slot], np.roll(r_rp[starts], 1))
    prev_stage, prev_site = np.maximum(prev_stage, 0), np.maximum(prev_site, 0)
    svc = state.svc[p_slot].astype(np.int64)
    allowed = ref.cum_stage_s[p_site, p_stage, svc] - ref.cum_stage_s[p_site, prev_stage, svc]
    late_pass = (
        p_move
        & prev_ok
        & (prev_site == p_site)
        & (ref.stage_rank[p_site, p_stage] > ref.stage_rank[p_site, prev_stage])
        & (p_start > prev_start + allowed + ref.skew_at(p_site))
        # A delay still open is for the stage the state has: the batch's first move
        # resolves it, but a later pass of the same burst can be late anew.
        & (~from_state | ((state.open[p_slot] & BIT[AlertKind.DELAY]) == 0))
    )
    late_first = np.flatnonzero(late_pass)
    if len(late_first):
        keep_first = np.ones(len(late_first), dtype=np.bool_)
        keep_first[1:] = p_slot[late_first[1:]] != p_slot[late_first[:-1]]
        late_first = late_first[keep_first]
    retro = p_slot[late_first]
    retro_rp = prev_rp[late_first].astype(np.int32)
    retro_entered = prev_start[late_first]
    retro_due = retro_entered + ref.stage_s[prev_site, prev_stage, svc][late_first]

    # Where each parcel is now: its last pass.
    last_row = np.ones(len(rows), dtype=np.bool_)
    last_row[:-1] = r_slot[1:] != r_slot[:-1]
    last_pass = np.ones(len(starts), dtype=np.bool_)
    last_pass[:-1] = p_slot[1:] != p_slot[:-1]
    u = r_slot[last_row]
    w_rp, w_site = r_rp[last_row], r_site[last_row]
    w_stage = r_stage[last_row]
    w_entered = p_start[last_pass]
    w_ts = np.full(len(u), -np.inf)
    np.maximum.at(w_ts, np.searchsorted(u, r_slot), r_ts)
    moved = np.zeros(len(u), dtype=np.bool_)
    moved[np.searchsorted(u, p_slot[p_move])] = True
    had = state.open[u]
    resolved[AlertKind.MISSING].append(u[(had & BIT[AlertKind.MISSING]) != 0])
    resolved[AlertKind.DELAY].append(u[moved & ((had & BIT[AlertKind.DELAY]) != 0)])
    done = ref.next_stage[w_site, w_stage] < 0
    resolved[AlertKind.LATE].append(u[done & ((had & BIT[AlertKind.LATE]) != 0)])
    state.open[u] &= ~np.uint8(BIT[AlertKind.MISSING])
    state.open[u[moved]] &= ~np.uint8(BIT[AlertKind.DELAY])
    state.open[u[done]] &= ~np.uint8(BIT[AlertKind.LATE])

    state.rp[u], state.site[u], state.stage[u] = w_rp, w_site, w_stage
    state.last_seen[u] = np.fmax(state.last_seen[u], w_ts)
    state.entered[u] = w_entered
    state.planned_chute[u] = ref.planned(w_site, state.dest[u], w_ts)[0]
    refresh(state, ref, u)
    out = {k: np.unique(np.concatenate(v)) if v else empty for k, v in resolved.items()}
    return ReadOutcome(out, LateArrivals(retro, retro_rp, retro_entered, retro_due))


def _first_place(
    place: I32,
    when: F64,
    touched: I64,
    starts: Mask,
    row_at: I64,
    row_rp: I32,
    row_ts: F64,
    eligible: Mask,
) -> None:
    """For each touched slot where `starts`, the read point and time of its earliest
    eligible read (rows given by their index `row_at` into `touched`)."""
    pick = eligible & starts[row_at]
    if not pick.any():
        return
    at, rp, ts = row_at[pick], row_rp[pick], row_ts[pick]
    order = np.lexsort((ts, at))
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = at[order][1:] != at[order][:-1]
    chosen = order[first]
    place[touched[at[chosen]]] = rp[chosen]
    when[touched[at[chosen]]] = ts[chosen]


def _set_flag(
    state: ParcelState,
    kind: AlertKind,
    set_slots: I64,
    clear_slots: I64,
    resolved: dict[AlertKind, list[I64]],
) -> None:
    bit = BIT[kind]
    state.flags[set_slots] |= bit
    state.flags[clear_slots] &= ~np.uint8(bit)
    closing = clear_slots[(state.open[clear_slots] & bit) != 0]
    state.open[closing] &= ~np.uint8(bit)
    resolved[kind].append(closing)


def refresh(state: ParcelState, ref: Reference, slots: I64) -> None:
    """Recompute deadlines and ETA of slots from their position and class."""
    seen = state.rp[slots] >= 0
    slots = slots[seen]
    site, stage, svc = state.site[slots], state.stage[slots], state.svc[slots].astype(np.int64)
    entered = state.entered[slots]
    # A stage that reads tags only will not see an untagged parcel: for it, the stage
    # before is the last one it can be seen at.
    untagged = (state.flags[slots] & UNTAGGED) != 0
    has_next = (ref.next_stage[site, stage] >= 0) & ~(untagged & ref.next_tag_only[site, stage])
    # Late once past the standard (plus clock tolerance), and when the next stage may
    # pass a parcel unread, past the next stage's standard as well.
    due = entered + ref.stage_s[site, stage, svc] + ref.skew_at(site)
    deadline = np.where(has_next, due + ref.grace_s[site, stage, svc], INF)
    state.deadline[slots] = deadline
    window = ref.missing_s[site, stage, svc]
    state.missing_at[slots] = np.where(
        has_next, np.fmax(deadline, state.last_seen[slots]) + window, INF
    )
    eta_in = ref.eta_in_s[site, stage, svc]
    eta = entered + eta_in
    state.eta[slots] = eta
    state.eta_p90[slots] = entered + ref.eta_in_p90_s[site, stage, svc]
    dl = state.delivery_at[slots]
    # Can no longer make it: predicted arrival already past the standard, or from the
    # moment that even leaving now leaves too little time for the remaining stages.
    late_at = np.where(eta > dl, entered, dl - ref.eta_after_s[site, stage, svc])
    # At the last stage the parcel has left the site's hands: nothing left to predict.
    state.late_at[slots] = np.where(has_next, late_at, INF)
    state.dirty[slots] = True


def tick(state: ParcelState, now: float, suppress: bool = False) -> dict[AlertKind, I64]:
    """Slots whose condition holds and whose alert is not live yet, per kind.

    Marks them live unless `suppress` (used to look without acting).
    """
    n = state.n
    opened = state.open[:n]
    flags = state.flags[:n]
    cond = {
        AlertKind.DELAY: state.deadline[:n] < now,
        AlertKind.MISSING: state.missing_at[:n] < now,
        AlertKind.LATE: state.late_at[:n] < now,
        AlertKind.MISSORT: (flags & BIT[AlertKind.MISSORT]) != 0,
        AlertKind.MISROUTE: (flags & BIT[AlertKind.MISROUTE]) != 0,
    }
    out: dict[AlertKind, I64] = {}
    for kind, mask in cond.items():
        bit = BIT[kind]
        slots = np.flatnonzero(mask & ((opened & bit) == 0)).astype(np.int64)
        if not suppress and len(slots):
            state.open[slots] |= bit
        out[kind] = slots
    return out


def holds(state: ParcelState, kind: AlertKind, slots: I64, now: float) -> Mask:
    """Whether the condition of `kind` still holds for these slots at `now`."""
    out: Mask
    if kind == AlertKind.DELAY:
        out = state.deadline[slots] < now
    elif kind == AlertKind.MISSING:
        out = state.missing_at[slots] < now
    elif kind == AlertKind.LATE:
        out = state.late_at[slots] < now
    else:
        out = (state.flags[slots] & BIT[kind]) != 0
    return out


def inactive(
    state: ParcelState, ref: Reference, now: float, done_after_s: float, idle_after_s: float
) -> Mask:
    """Parcels no longer active: at a site's last stage for `done_after_s`, or unseen for
    `idle_after_s`, and without a live alert (a new read brings them back)."""
    n = state.n
    seen = state.rp[:n] >= 0
    site = np.where(seen, state.site[:n], 0)
    stage = np.where(seen, state.stage[:n], 0)
    last = ref.next_stage[site, stage] < 0
    age = now - state.last_seen[:n]
    # A parcel with a live alert stays: its alert must still resolve when it turns up.
    out: Mask = (
        seen & (state.open[:n] == 0) & ((last & (age > done_after_s)) | (age > idle_after_s))
    )
    return out
