"""Public endpoints: a parcel's status, location and timeline; EPCIS; feedback.

Nothing here lists parcels: every endpoint needs the full tracking number, and an
unknown number gets the same 404 whatever the reason. A partner's key narrows the
lookups to its own account's parcels (`security.visible`): another's is that 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api import lookup, queries, tracking
from api.epcis import document
from api.language import Problem, declared_language
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
from api.replica import Read, read_with
from api.security import Caller, caller, rate_limited, visible
from api.staff import FEEDBACK_INSERT, feedback_row, named_staff_or_422
from parceltrack.errors import InvalidTrackingNumber
from parceltrack.i18n import N_
from parceltrack.identifiers import parse_s10

# The lean lane (api/lane.py) runs these dependencies itself for GET /v1/parcels/{id}:
# one added here must be added there too (tests/api/test_lookup_lane.py checks).
# declared_language only documents ?lang= (the error handlers read the language).
router = APIRouter(
    tags=["customers"], dependencies=[Depends(rate_limited), Depends(declared_language)]
)

NOT_FOUND = N_("no parcel with that tracking number")
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
        raise Problem(422, exc.template, **exc.params) from exc  # said in the caller's language


@dataclass(frozen=True, slots=True)
class ParcelRecord:
    """Everything the lookup read from the database for one parcel."""

    manifest: dict[str, Any] | None
    rows: list[dict[str, Any]]
    scans: list[tracking.Scan]
    open_alert_kinds: list[str]
    standards: dict[tuple[str, str], float]


async def read_parcel(
    conn: AsyncConnection[Any], s10: str, detector_eta: bool = False, who: Caller | None = None
) -> ParcelRecord | None:
    """The parcel as stored, or None when unknown, or hidden from a partner `who`."""
    manifest, rows, kinds, standards = await queries.lookup(conn, s10, detector_eta)
    if manifest is None and not rows:
        return None
    if not visible(who, manifest["account"] if manifest else None):
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


async def parcel_response(request: Request, tracking_id: str) -> Response:
    """The lookup's body, shared by the route below and the lean lane (api/lane.py)."""
    s10 = s10_or_422(tracking_id)
    who = await caller(request)  # known already: the rate limiter looked the key up

    async def look_up(read: Read) -> tuple[bytes | None, dict[str, str]]:
        # The hot path (api/lookup.py): the same ParcelView, built without pydantic.
        body = await lookup.parcel_json(
            read.conn, s10, request.app.state.detector_eta, datetime.now(UTC), who
        )
        return body, await read.headers()

    body, headers = await read_with(request, look_up)  # a replica's, when one is configured
    if body is None:
        raise Problem(404, NOT_FOUND, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/v1/parcels/{tracking_id}", response_model=ParcelView, responses=RESPONSES)
async def get_parcel(request: Request, tracking_id: TrackingId) -> Response:
    """Where the parcel is, since when, its status, timeline with UPU codes, and ETA."""
    return await parcel_response(request, tracking_id)


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
    who = await caller(request)

    async def look_up(read: Read) -> tuple[ParcelRecord | None, dict[str, str]]:
        record = await read_parcel(read.conn, s10, request.app.state.detector_eta, who)
        return record, await read.headers()

    record, headers = await read_with(request, look_up)
    if record is None:
        raise Problem(404, NOT_FOUND, headers=headers)
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
            raise Problem(404, NOT_FOUND)
        view = parcel_view(s10, record, now)
        site = view.last_location.site if view.last_location else record.manifest["origin_site"]
        await named_staff_or_422(conn, feedback.staff_id)
        cur = await conn.execute(FEEDBACK_INSERT, feedback_row(s10, feedback, view, site))
        row = await cur.fetchone()
    assert row is not None
    return FeedbackReceipt(
        feedback_id=row[0], tracking_id=s10, kind=feedback.kind, created_at=row[1], deadline=row[2]
    )
