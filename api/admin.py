"""Administration: manifests, service classes and stage standards, versioned sort
plans, sites, read points, devices and API keys."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Annotated, Any, LiteralString, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.alerts import AUTH
from api.language import Problem
from api.models import (
    ApiKeyIn,
    ApiKeyInfo,
    DeviceIn,
    ManifestRejection,
    ManifestReport,
    NewApiKey,
    ReadPoint,
    ReadPointIn,
    ServiceClass,
    ServiceClassIn,
    SiteIn,
    SortPlan,
    SortPlanEntry,
    SortPlanIn,
    StageStandard,
    StageStandardIn,
)
from api.security import PARTNER, Caller, create_key, require
from parceltrack.errors import InvalidTrackingNumber
from parceltrack.i18n import N_
from parceltrack.identifiers import parse_s10
from storage import model
from storage.model import ManifestEntry, ReferenceDataError
from storage.reference import (
    Query,
    Step,
    run_async,
    save_devices,
    save_manifest,
    save_read_points,
    save_service_classes,
    save_sites,
    save_sort_plan,
    save_stage_standards,
)

router = APIRouter(tags=["administration"], prefix="/v1/admin")
Admin = Annotated[Caller, Depends(require("admin"))]
Ident = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f/]+$")]
MANIFEST_COLUMNS = ("tracking_id", "service_class", "destination")
OPTIONAL_COLUMNS = ("destination_site", "origin_site", "epc", "account")
MAX_MANIFEST_BYTES = 20 * 1024 * 1024
T = TypeVar("T")
CONFLICT: dict[int | str, dict[str, Any]] = {
    **AUTH,
    409: {"description": "Refers to something that does not exist, or conflicts"},
}


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


def _model(make: Callable[[], T]) -> T:
    """A reference-model object; what it refuses is a 422 with the model's own words
    (the words a site file gets)."""
    try:
        return make()
    except ReferenceDataError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


async def _save(request: Request, step: Step[T]) -> T:
    """Run a repository rule on a pooled connection; what it refuses is a 422."""
    async with _pool(request).connection() as conn:
        try:
            return await run_async(conn, step)
        except ReferenceDataError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc


def parse_manifest(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """Rows of a CSV (header line naming the columns) or JSON (list of objects) upload."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Problem(422, N_("the manifest is not UTF-8")) from exc
    if "json" in content_type:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Problem(422, N_("invalid JSON: {error}"), error=exc) from exc
        if not isinstance(data, list):
            raise Problem(422, N_("JSON manifest must be a list of rows"))
        return [r if isinstance(r, dict) else {"_row": r} for r in data]
    if "csv" in content_type:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise Problem(
                422, N_("CSV header lacks column(s): {columns}"), columns=", ".join(missing)
            )
        return [dict(r) for r in reader]
    raise Problem(415, N_("send text/csv or application/json"))


def check_row(
    row: dict[str, Any], classes: set[str], sites: set[str]
) -> tuple[dict[str, Any] | None, list[str]]:
    """A manifest row, validated: the clean row, or None and every reason it is rejected."""
    errors: list[str] = []
    clean: dict[str, Any] = {}
    for column in (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS):
        value = row.get(column)
        if value is None or value == "":
            if column in MANIFEST_COLUMNS:
                errors.append(f"{column} is missing")
            clean[column] = None
            continue
        if not isinstance(value, str) or "\x00" in value or len(value) > 200:
            errors.append(f"{column} must be text up to 200 characters")
            continue
        clean[column] = value.strip()
    if clean.get("tracking_id"):
        try:
            clean["tracking_id"] = str(parse_s10(clean["tracking_id"]))
        except InvalidTrackingNumber as exc:
            errors.append(str(exc))
    if clean.get("service_class") and clean["service_class"] not in classes:
        errors.append(f"unknown service class {clean['service_class']!r}")
    for column in ("origin_site", "destination_site"):
        if clean.get(column) and clean[column] not in sites:
            errors.append(f"unknown {column} {clean[column]!r}")
    return (None if errors else clean), errors


@router.post(
    "/manifests",
    response_model=ManifestReport,
    responses={**AUTH, 415: {"description": "Neither CSV nor JSON"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": list(MANIFEST_COLUMNS),
                            "properties": {
                                c: {"type": "string"}
                                for c in (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS)
                            },
                        },
                    }
                },
            },
        }
    },
)
async def upload_manifest(request: Request, _who: Admin) -> ManifestReport:
    """Bulk upload of parcels (CSV or JSON), validated row by row: valid rows are
    loaded (existing parcels updated), the rest reported with every reason."""
    body = await request.body()
    if len(body) > MAX_MANIFEST_BYTES:
        raise Problem(413, N_("manifest over {mib} MiB; split it"), mib=MAX_MANIFEST_BYTES >> 20)
    rows = parse_manifest(body, request.headers.get("content-type", ""))
    async with _pool(request).connection() as conn:
        cur = await conn.execute("SELECT service_class FROM service_classes")
        classes = {str(c) for (c,) in await cur.fetchall()}
        cur = await conn.execute("SELECT site_id FROM sites")
        sites = {str(s) for (s,) in await cur.fetchall()}
        checked = [check_row(row, classes, sites) for row in rows]
        epcs = [c["epc"] for c, _ in checked if c and c["epc"]]
        cur = await conn.execute(
            "SELECT epc, tracking_id FROM parcels WHERE epc = ANY(%s)", (epcs,)
        )
        epc_owner: dict[str, str] = {str(e): str(t) for e, t in await cur.fetchall()}
        good: list[dict[str, Any]] = []
        rejected: list[ManifestRejection] = []
        for number, (row, (clean, errors)) in enumerate(zip(rows, checked, strict=True), 1):
            if clean and clean["epc"]:
                owner = epc_owner.setdefault(clean["epc"], clean["tracking_id"])
                if owner != clean["tracking_id"]:
                    errors = [f"epc {clean['epc']!r} belongs to {owner}"]
                    clean = None
            if clean is None:
                tid = row.get("tracking_id")
                rejected.append(
                    ManifestRejection(
                        row=number,
                        tracking_id=tid[:64] if isinstance(tid, str) else None,
                        errors=errors,
                    )
                )
            else:
                good.append(clean)
        if good:
            await run_async(conn, save_manifest(ManifestEntry(**row) for row in good))
    return ManifestReport(accepted=len(good), rejected=rejected)


@router.get("/service-classes", response_model=list[ServiceClass], responses=AUTH)
async def list_service_classes(request: Request, _who: Admin) -> list[ServiceClass]:
    """Service classes with their delivery standard (J+n working days)."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT service_class, description, delivery_days FROM service_classes ORDER BY 1"
        )
        return [ServiceClass(**r) for r in await cur.fetchall()]


@router.put("/service-classes/{service_class}", response_model=ServiceClass, responses=AUTH)
async def put_service_class(
    request: Request, _who: Admin, service_class: Ident, body: ServiceClassIn
) -> ServiceClass:
    """Create or change a service class and its delivery standard."""
    await _save(
        request,
        save_service_classes(
            [model.ServiceClass(service_class, body.description, body.delivery_days)]
        ),
    )
    return ServiceClass(service_class=service_class, **body.model_dump())


@router.get("/stage-standards", response_model=list[StageStandard], responses=AUTH)
async def list_stage_standards(request: Request, _who: Admin) -> list[StageStandard]:
    """Per site, stage and service class, the longest a parcel may take at the stage."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT site_id, stage, service_class, max_seconds FROM stage_standards "
            "ORDER BY 1, 2, 3"
        )
        return [StageStandard(**r) for r in await cur.fetchall()]


@router.put("/stage-standards", response_model=StageStandard, responses=CONFLICT)
async def put_stage_standard(request: Request, _who: Admin, body: StageStandardIn) -> StageStandard:
    """Set one stage standard (the service class must exist, and the site must have a
    read point at the stage: 422 otherwise, as the standard would never apply)."""
    standard = model.StageStandard(body.site_id, body.stage, body.service_class, body.max_seconds)
    await _save(request, save_stage_standards([standard]))
    return StageStandard(**body.model_dump())


async def _plans(request: Request, where: LiteralString, value: str | int) -> list[SortPlan]:
    """Stored sort plans with their entries; `where` is a condition written here."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT sort_plan_id, site_id, version, effective_from FROM sort_plans WHERE " + where,
            (value,),
        )
        plans = await cur.fetchall()
        found = []
        for plan in plans:
            await cur.execute(
                "SELECT destination, chute_read_point_id, door_read_point_id "
                "FROM sort_plan_entries WHERE sort_plan_id = %s ORDER BY destination",
                (plan["sort_plan_id"],),
            )
            entries = [SortPlanEntry(**e) for e in await cur.fetchall()]
            found.append(SortPlan(**plan, entries=entries))
        return found


@router.post(
    "/sites/{site}/sort-plans", response_model=SortPlan, status_code=201, responses=CONFLICT
)
async def create_sort_plan(
    request: Request, _who: Admin, site: Ident, body: SortPlanIn
) -> SortPlan:
    """A new version of the site's sort plan, in force from `effective_from`."""
    try:
        plan = model.SortPlan(
            site,
            body.effective_from,
            tuple(
                model.SortPlanEntry(e.destination, e.chute_read_point_id, e.door_read_point_id)
                for e in body.entries
            ),
        )
    except ReferenceDataError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    plan_id = await _save(request, save_sort_plan(plan))
    return (await _plans(request, "sort_plan_id = %s", plan_id))[0]


@router.get("/sites/{site}/sort-plans", response_model=list[SortPlan], responses=AUTH)
async def list_sort_plans(request: Request, _who: Admin, site: Ident) -> list[SortPlan]:
    """Every version of the site's sort plan, newest first."""
    return await _plans(request, "site_id = %s ORDER BY version DESC", site)


@router.put("/sites/{site}", response_model=SiteIn, responses=AUTH)
async def put_site(request: Request, _who: Admin, site: Ident, body: SiteIn) -> SiteIn:
    """Create or change a site (name, IANA time zone for days and shifts)."""
    await _save(request, save_sites([model.Site(site, body.name, body.timezone)]))
    return body


@router.get("/read-points", response_model=list[ReadPoint], responses=AUTH)
async def list_read_points(request: Request, _who: Admin) -> list[ReadPoint]:
    """Read points with their zone, stage, the next read point on the conveyor (when it
    is the only one) and every successor."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT read_point_id, site_id, zone, stage, description, position, "
            "next_read_point_id, coalesce((SELECT array_agg(successor_id ORDER BY successor_id) "
            "FROM read_point_successors s WHERE s.read_point_id = r.read_point_id), '{}') "
            "AS successors FROM read_points r ORDER BY site_id, position, read_point_id"
        )
        return [ReadPoint(**r) for r in await cur.fetchall()]


@router.put("/read-points/{read_point}", response_model=ReadPoint, responses=CONFLICT)
async def put_read_point(
    request: Request, _who: Admin, read_point: Ident, body: ReadPointIn
) -> ReadPoint:
    """Create or change a read point (its site and next read point must exist). Without a
    next read point, the successors it has (PUT .../successors) are kept."""

    def step() -> Step[tuple[str, ...]]:
        kept: tuple[str, ...] = ()
        if body.next_read_point_id is None:
            rows = yield Query(
                "SELECT successor_id FROM read_point_successors WHERE read_point_id = %s "
                "ORDER BY 1",
                (read_point,),
            )
            kept = tuple(str(r) for (r,) in rows)
        rp = model.ReadPoint(read_point, body.site_id, body.zone, body.stage, body.description,
                             body.position, body.next_read_point_id, kept)  # fmt: skip
        yield from save_read_points([rp])
        return rp.successors

    successors = await _save(request, step())
    return ReadPoint(read_point_id=read_point, successors=list(successors), **body.model_dump())


@router.put("/devices/{device}", response_model=DeviceIn, responses=CONFLICT)
async def put_device(request: Request, _who: Admin, device: Ident, body: DeviceIn) -> DeviceIn:
    """Register or change a device (its site and read point must exist)."""
    await _save(
        request,
        save_devices(
            [
                model.Device(
                    device,
                    body.site_id,
                    body.read_point_id,
                    body.kind,
                    body.description,
                    body.settings,
                )
            ]
        ),
    )
    return body


@router.get("/api-keys", response_model=list[ApiKeyInfo], responses=AUTH)
async def list_api_keys(request: Request, _who: Admin) -> list[ApiKeyInfo]:
    """Keys by name, role and prefix; the secrets themselves are not stored."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT key_id, name, role, account, prefix, created_at, revoked_at FROM api_keys "
            "ORDER BY key_id"
        )
        return [ApiKeyInfo(**r) for r in await cur.fetchall()]


@router.post("/api-keys", response_model=NewApiKey, status_code=201, responses=AUTH)
async def post_api_key(request: Request, _who: Admin, body: ApiKeyIn) -> NewApiKey:
    """A new key for a person or system; the response is the only time it is shown.
    A partner key names the account whose parcels it sees."""
    if (body.role == PARTNER) != (body.account is not None):
        raise Problem(422, N_("account: required for role partner, and only for it"))
    async with _pool(request).connection() as conn:
        key_id, key = await create_key(conn, body.name, body.role, body.account)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT key_id, name, role, account, prefix, created_at, revoked_at "
                "FROM api_keys "
                "WHERE key_id = %s",
                (key_id,),
            )
            row = await cur.fetchone()
    assert row is not None
    return NewApiKey(**row, key=key)


@router.delete(
    "/api-keys/{key_id}",
    response_model=ApiKeyInfo,
    responses={**AUTH, 404: {"description": "No such key"}},
)
async def revoke_api_key(
    request: Request, _who: Admin, key_id: Annotated[int, Path(ge=1, le=2**62)]
) -> ApiKeyInfo:
    """Revoke a key at once; revoking again changes nothing."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s "
            "RETURNING key_id, name, role, account, prefix, created_at, revoked_at",
            (key_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise Problem(404, N_("no such key"))
    return ApiKeyInfo(**row)
