"""Public endpoints: a parcel's status, location and timeline; EPCIS; feedback.

Nothing here lists parcels: every endpoint needs the full tracking number, and an
unknown number gets the same 404 whatever the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api import queries, tracking
from api.epcis import document
from api.models import (
    DeliveryPromise,
    FeedbackIn,
    FeedbackReceipt,
    Location,
    ParcelView,
    Segment,
    TimelineEvent,
    UpuEvent,
)
from api.replica import reading
from api.security import rate_limited
from parceltrack.errors import InvalidTrackingNumber
from parceltrack.identifiers import parse_s10

router = APIRouter(tags=["customers"], dependencies=[Depends(rate_limited)])

NOT_FOUND = "no parcel with that tracking number"
RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown parcel (reveals nothing else)"},
    422: {"description": "Malformed or check-digit-invalid S10 number; the detail says which"},
    429: {"description": "Too many requests from this client; see Retry-After"},
}
TrackingId = Annotated[str, Path(max_length=64, description="UPU S10 number, e.g. RR473124829GB")]


def s10_or_422(tracking_id: str) -> str:
    try:
        return str(parse_s10(tracking_id))
    except InvalidTrackingNumber as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ParcelRecord:
    """Everything the lookup read from the database for one parcel."""

    manifest: dict[str, Any] | None
    rows: list[dict[str, Any]]
    scans: list[tracking.Scan]
    open_alert_kinds: list[str]
    standards: dict[tuple[str, str], float]


async def read_parcel(
    conn: AsyncConnection[Any], s10: str, detector_eta: bool = False
) -> ParcelRecord | None:
    manifest, rows, kinds, standards = await queries.lookup(conn, s10, detector_eta)
    if manifest is None and not rows:
        return None
    return ParcelRecord(manifest, rows, [tracking.scan_from_row(r) for r in rows], kinds, standards)


def parcel_view(s10: str, record: ParcelRecord, now: datetime) -> ParcelView:
    manifest, scans = record.manifest, record.scans
    promised = tracking.promise(
        manifest["accepted_at"] if manifest else None,
        manifest["delivery_days"] if manifest else None,
        scans,
        record.standards,
        now,
    )
    timeline: list[TimelineEvent] = []
    if manifest is not None:
        timeline.append(
            TimelineEvent(
                time=manifest["accepted_at"],
                kind="accepted",
                site=manifest["origin_site"],
                read_point=None,
                zone=None,
                description="Manifest received",
                device=None,
                upu_event=UpuEvent(code="EMA", description=tracking.UPU_EVENTS["EMA"]),
            )
        )
    # Scans come typed from the database: construct without re-validating each one
    # (the lookup is the hot path; the response is serialised by the same model).
    for scan, code in zip(scans, tracking.upu_codes(scans), strict=True):
        timeline.append(
            TimelineEvent.model_construct(
                time=scan.ts,
                kind=scan.kind,
                site=scan.site,
                read_point=scan.read_point,
                zone=scan.zone,
                description=scan.description,
                device=scan.device,
                upu_event=UpuEvent.model_construct(code=code, description=tracking.UPU_EVENTS[code])
                if code
                else None,
            )
        )
    location = None
    if scans:
        last, last_row = scans[-1], record.rows[-1]
        seg = tracking.segment(scans, record.standards.get((last.site, last.stage or "")))
        location = Location(
            site=last.site,
            site_name=last_row.get("site_name"),
            zone=last.zone,
            read_point=last.read_point,
            description=last.description,
            device=last.device,
            time=last.ts,
            segment=Segment(
                from_read_point=seg.from_read_point,
                from_description=seg.from_description,
                to_read_point=seg.to_read_point,
                to_description=seg.to_description,
                since=seg.since,
                expected_by=seg.expected_by,
            )
            if seg
            else None,
        )
    return ParcelView(
        tracking_id=s10,
        status=tracking.status(scans, record.open_alert_kinds, promised, record.standards, now),
        service_class=manifest["service_class"] if manifest else None,
        destination=manifest["destination"] if manifest else None,
        last_location=location,
        delivery=DeliveryPromise(
            delivery_days=promised.delivery_days,
            due=promised.due,
            eta=promised.eta,
            eta_source=promised.eta_source,
            on_time=promised.on_time,
            leaves_site_eta=manifest.get("detector_eta") if manifest else None,
        ),
        timeline=timeline,
    )


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


@router.get("/v1/parcels/{tracking_id}", response_model=ParcelView, responses=RESPONSES)
async def get_parcel(request: Request, tracking_id: TrackingId) -> Response:
    """Where the parcel is, since when, its status, timeline with UPU codes, and ETA."""
    s10 = s10_or_422(tracking_id)
    async with reading(request) as read:
        record = await read_parcel(read.conn, s10, request.app.state.detector_eta)
        headers = await read.headers()
    if record is None:
        raise HTTPException(status_code=404, detail=NOT_FOUND, headers=headers or None)
    # Built as a ParcelView already: serialise once instead of re-validating it.
    view = parcel_view(s10, record, datetime.now(UTC))
    return Response(view.model_dump_json(), media_type="application/json", headers=headers)


@router.get(
    "/v1/parcels/{tracking_id}/epcis",
    responses={
        **RESPONSES,
        200: {
            "description": "GS1 EPCIS 2.0 document (JSON-LD) of the parcel's scans",
            "content": {"application/ld+json": {"schema": {"type": "object"}}},
        },
    },
)
async def get_parcel_epcis(request: Request, tracking_id: TrackingId) -> JSONResponse:
    """The parcel's scans as GS1 EPCIS 2.0 ObjectEvents, for partners' systems."""
    s10 = s10_or_422(tracking_id)
    async with reading(request) as read:
        record = await read_parcel(read.conn, s10, request.app.state.detector_eta)
        headers = await read.headers()
    if record is None:
        raise HTTPException(status_code=404, detail=NOT_FOUND, headers=headers or None)
    epc = record.manifest["epc"] if record.manifest else None
    body = document(s10, epc, record.scans, [r["event_id"] for r in record.rows], datetime.now(UTC))
    return JSONResponse(body, media_type="application/ld+json", headers=headers)


@router.post(
    "/v1/parcels/{tracking_id}/feedback",
    response_model=FeedbackReceipt,
    status_code=201,
    responses=RESPONSES,
)
async def post_feedback(
    request: Request, tracking_id: TrackingId, feedback: FeedbackIn
) -> FeedbackReceipt:
    """A complaint or praise about a parcel; stored with the parcel's telemetry now,
    and queued for the controllers to answer."""
    s10 = s10_or_422(tracking_id)
    now = datetime.now(UTC)
    async with _pool(request).connection() as conn:
        record = await read_parcel(conn, s10, request.app.state.detector_eta)
        if record is None or record.manifest is None:
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        view = parcel_view(s10, record, now)
        site = view.last_location.site if view.last_location else record.manifest["origin_site"]
        cur = await conn.execute(
            "INSERT INTO feedback (tracking_id, kind, message, contact, snapshot, site_id) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING feedback_id, created_at",
            (
                s10,
                feedback.kind,
                feedback.message,
                feedback.contact,
                Jsonb(view.model_dump(mode="json")),
                site,
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    return FeedbackReceipt(
        feedback_id=row[0], tracking_id=s10, kind=feedback.kind, created_at=row[1]
    )
