"""The parcel lookup's hot path: one statement, tuple rows, plain dicts, msgspec bytes.

`GET /v1/parcels/{id}` is the public, high-volume endpoint (goal: 1,000 lookups/s on
two cores). Building ~21 pydantic timeline objects and serialising them cost about as
much CPU as the rest of the request, so this path builds the same JSON from plain
dicts and encodes it with msgspec; the rules stay in api/tracking.py. The pydantic
`ParcelView` (api/customers.py:parcel_view) remains the published schema and the
reference: tests/api/test_lookup_equivalence.py compares the two field by field for
parcels in every status.

Hooks for what the lookup will grow: a caller's language (error texts only; the body
carries codes and names, no prose to translate) and a partner's scope (a filter on the
manifest row, checked before anything is built) go into `get_parcel`, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncCursor

from api import queries, tracking
from api.security import Caller, visible

_encode = msgspec.json.Encoder().encode

# Column positions of the lookup statement (api/queries.py), found once per statement.
_positions: dict[str, dict[str, int]] = {}


def _columns(sql: str, cur: AsyncCursor[Any]) -> dict[str, int]:
    found = _positions.get(sql)
    if found is None:  # reading cur.description builds column objects: only once
        found = _positions[sql] = {d.name: i for i, d in enumerate(cur.description or ())}
    return found


def _upu(code: str | None) -> dict[str, str] | None:
    return None if code is None else {"code": code, "description": tracking.UPU_EVENTS[code]}


async def parcel_json(
    conn: AsyncConnection[Any],
    s10: str,
    detector_eta: bool,
    now: datetime,
    who: Caller | None = None,
) -> bytes | None:
    """The ParcelView of `s10` as JSON bytes, or None for an unknown parcel (or one
    hidden from a partner `who`: security.visible, as read_parcel applies it)."""
    sql = queries.LOOKUP_WITH_DETECTOR_ETA if detector_eta else queries.LOOKUP
    async with conn.cursor() as cur:
        await cur.execute(sql, {"t": s10})
        rows = await cur.fetchall()
        c = _columns(sql, cur)
    first = rows[0]
    known = first[c["manifest_tracking_id"]] is not None
    i_ts = c["ts"]
    reads = [r for r in rows if r[i_ts] is not None]
    if not known and not reads:
        return None
    if not visible(who, first[c["account"]] if known else None):
        return None
    scans = [
        tracking.Scan(
            r[i_ts], r[c["site_id"]], r[c["read_point_id"]], r[c["device_id"]], r[c["kind"]],
            r[c["zone"]], r[c["stage"]], r[c["description"]], r[c["next_read_point_id"]],
            r[c["next_description"]],
        )
        for r in reads
    ]  # fmt: skip
    standards = {
        (str(site), str(stage)): float(seconds)
        for site, stage, seconds in zip(
            first[c["std_sites"]] or (),
            first[c["std_stages"]] or (),
            first[c["std_seconds"]] or (),
            strict=True,
        )
    }
    kinds = [str(k) for k in first[c["open_alert_kinds"]] or ()]
    accepted_at = first[c["accepted_at"]] if known else None
    promised = tracking.promise(
        accepted_at, first[c["delivery_days"]] if known else None, scans, standards, now
    )
    timeline: list[dict[str, Any]] = []
    if known:
        timeline.append(
            {
                "time": accepted_at,
                "kind": "accepted",
                "site": first[c["origin_site"]],
                "read_point": None,
                "zone": None,
                "description": "Manifest received",
                "device": None,
                "upu_event": _upu("EMA"),
            }
        )
    for scan, code in zip(scans, tracking.upu_codes(scans), strict=True):
        timeline.append(
            {
                "time": scan.ts,
                "kind": scan.kind,
                "site": scan.site,
                "read_point": scan.read_point,
                "zone": scan.zone,
                "description": scan.description,
                "device": scan.device,
                "upu_event": _upu(code),
            }
        )
    view = {
        "tracking_id": s10,
        "status": tracking.status(scans, kinds, promised, standards, now),
        "service_class": first[c["service_class"]] if known else None,
        "destination": first[c["destination"]] if known else None,
        "last_location": _location(scans, reads[-1][c["site_name"]], standards) if scans else None,
        "delivery": {
            "delivery_days": promised.delivery_days,
            "due": promised.due,
            "eta": promised.eta,
            "eta_source": promised.eta_source,
            "on_time": promised.on_time,
            "leaves_site_eta": first[c["detector_eta"]] if known and detector_eta else None,
        },
        "timeline": timeline,
    }
    return _encode(view)


def _location(
    scans: Sequence[tracking.Scan], site_name: str | None, standards: dict[tuple[str, str], float]
) -> dict[str, Any]:
    last = scans[-1]
    seg = tracking.segment(scans, standards.get((last.site, last.stage or "")))
    segment = None
    if seg is not None:
        segment = {
            "from_read_point": seg.from_read_point,
            "from_description": seg.from_description,
            "to_read_point": seg.to_read_point,
            "to_description": seg.to_description,
            "since": seg.since,
            "expected_by": seg.expected_by,
        }
    return {
        "site": last.site,
        "site_name": site_name,
        "zone": last.zone,
        "read_point": last.read_point,
        "description": last.description,
        "device": last.device,
        "time": last.ts,
        "segment": segment,
    }
