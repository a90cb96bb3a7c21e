"""`parcel_eta` for the API, written off the alerting path.

The tick thread only takes the changed rows out of the state (`take`: copies of a
few columns of the dirty slots, a few ms for 10,000 parcels) and hands them over;
another thread, on a connection of its own, writes them (`write`): one binary COPY
built with numpy (fixed-width rows: the S10 number's 13 bytes, indices into the
layout's names, float seconds) into a temporary table, then one upsert that turns
indices into names and seconds into times. Rows of tracking ids that are not
S10-shaped (rare) go through a row-by-row COPY of their own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from detect.core import ParcelState
from detect.keys import KeyCodec, s10_codes
from detect.reference import Reference

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_TIMES = ("entered", "due", "eta", "eta_p90", "delivery")


@dataclass(frozen=True, slots=True)
class EtaRows:
    """Changed parcels' positions and times, with the names their indices point to."""

    keys: I64
    site: npt.NDArray[np.int16]
    read_point: npt.NDArray[np.int32]
    stage: npt.NDArray[np.int16]
    next_stage: npt.NDArray[np.int16]  # -1: none (the last stage)
    times: F64  # (n, 5): entered, next due, eta, eta p90, delivery due; non-finite: NULL
    others: dict[int, str]  # tracking ids of negative (non-S10) keys
    names: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # sites, rps, stages

    def __len__(self) -> int:
        return len(self.keys)


def take(state: ParcelState, ref: Reference, codec: KeyCodec) -> EtaRows | None:
    """The rows of parcels whose position changed since the last take; clears their
    dirty marks (the caller must write what it took)."""
    n = state.n
    slots = np.flatnonzero(state.dirty[:n] & (state.rp[:n] >= 0))
    if len(slots) == 0:
        return None
    site, stage = state.site[slots], state.stage[slots]
    keys = state.key[slots]
    times = np.column_stack(
        [state.entered[slots], state.deadline[slots], state.eta[slots], state.eta_p90[slots],
         state.delivery_at[slots]]
    )  # fmt: skip
    state.dirty[slots] = False
    return EtaRows(
        keys,
        site.astype(np.int16),
        state.rp[slots].astype(np.int32),
        stage.astype(np.int16),
        ref.next_stage[site, stage].astype(np.int16),
        times,
        {k: codec.decode(k) for k in keys[keys < 0].tolist()},
        (ref.sites, ref.read_points, ref.stages),
    )


# One binary COPY row: field count, then (length, value) per field, big-endian.
_ROW = np.dtype(
    [("fields", ">i2"), ("l_id", ">i4"), ("id", "S13"), ("l_site", ">i4"), ("site", ">i2"),
     ("l_rp", ">i4"), ("rp", ">i4"), ("l_stage", ">i4"), ("stage", ">i2"),
     ("l_next", ">i4"), ("next", ">i2")]
    + [(f, x) for t in _TIMES for f, x in ((f"l_{t}", ">i4"), (t, ">f8"))]
)  # fmt: skip
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)


def copy_payload(rows: EtaRows) -> bytes:
    """The binary COPY data (header, rows, trailer) of the S10-keyed rows."""
    s10 = rows.keys >= 0
    out = np.empty(int(s10.sum()), dtype=_ROW)
    out["fields"] = 5 + len(_TIMES)
    out["l_id"], out["l_site"], out["l_rp"], out["l_stage"], out["l_next"] = 13, 2, 4, 2, 2
    out["id"] = s10_codes(rows.keys[s10]).view("S13").reshape(-1)
    out["site"], out["rp"] = rows.site[s10], rows.read_point[s10]
    out["stage"], out["next"] = rows.stage[s10], rows.next_stage[s10]
    for i, t in enumerate(_TIMES):
        out[f"l_{t}"] = 8
        out[t] = rows.times[s10, i]
    return _HEADER + out.tobytes() + _TRAILER


_STAGE_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS eta_rows (tracking_id text, site smallint, rp integer, "
    "stage smallint, next_stage smallint, entered float8, due float8, eta float8, "
    "eta_p90 float8, delivery float8) ON COMMIT DELETE ROWS"
)


def _time(col: str) -> str:
    finite = f"{col} NOT IN ('Infinity', '-Infinity', 'NaN')"
    return f"CASE WHEN {finite} THEN to_timestamp({col}) END"


# Array subscripts start at 1; subscript 0 (a next stage of -1) is NULL.
_UPSERT = f"""
INSERT INTO parcel_eta (tracking_id, site_id, read_point_id, stage, entered_at, next_stage,
                        next_due, eta, eta_p90, delivery_due, updated_at)
SELECT tracking_id, (%(sites)s::text[])[site + 1], (%(rps)s::text[])[rp + 1],
       (%(stages)s::text[])[stage + 1], {_time("entered")}, (%(stages)s::text[])[next_stage + 1],
       {_time("due")}, {_time("eta")}, {_time("eta_p90")}, {_time("delivery")}, now()
FROM eta_rows
ON CONFLICT (tracking_id) DO UPDATE SET site_id = EXCLUDED.site_id,
    read_point_id = EXCLUDED.read_point_id, stage = EXCLUDED.stage,
    entered_at = EXCLUDED.entered_at, next_stage = EXCLUDED.next_stage,
    next_due = EXCLUDED.next_due, eta = EXCLUDED.eta, eta_p90 = EXCLUDED.eta_p90,
    delivery_due = EXCLUDED.delivery_due, updated_at = now()
"""


def write(conn: psycopg.Connection[Any], batches: list[EtaRows]) -> int:
    """Upsert the rows of `batches` (oldest first: a later row of a parcel wins) in one
    transaction; returns the rows written."""
    written = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE_TABLE)
        for rows in batches:
            with cur.copy("COPY eta_rows FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(copy_payload(rows))
            if rows.others:
                with cur.copy("COPY eta_rows FROM STDIN") as copy:
                    for i in np.flatnonzero(rows.keys < 0).tolist():
                        copy.write_row(
                            (rows.others[int(rows.keys[i])], int(rows.site[i]),
                             int(rows.read_point[i]), int(rows.stage[i]),
                             int(rows.next_stage[i]), *rows.times[i].tolist())
                        )  # fmt: skip
            sites, rps, stages = rows.names
            cur.execute(_UPSERT, {"sites": list(sites), "rps": list(rps), "stages": list(stages)})
            cur.execute("TRUNCATE eta_rows")
            written += len(rows)
    return written
