"""Administration of every detection setting a site file holds (docs/site-files.md),
one at a time: read-point successors, missing windows, device thresholds and
tolerances per site. Values are checked by the reference model and the repository, so
what a site file refuses is refused here with the same words (422)."""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Request
from psycopg.rows import dict_row

from api.admin import CONFLICT, Admin, Ident, _model, _pool, _save
from api.alerts import AUTH
from api.language import Problem
from api.models import (
    DeviceThresholds,
    DeviceThresholdsIn,
    MissingWindow,
    MissingWindowIn,
    SiteTolerances,
    SiteTolerancesIn,
    Successors,
    SuccessorsIn,
)
from parceltrack.i18n import N_
from parceltrack.layout import Stage
from storage import model
from storage.model import THRESHOLD_FIELDS, ReferenceDataError, successor_problems
from storage.reference import (
    Query,
    Step,
    save_device_thresholds,
    save_missing_windows,
    save_read_points,
    save_site_tolerances,
)

router = APIRouter(tags=["administration"], prefix="/v1/admin")


@router.get("/read-points/{read_point}/successors", response_model=Successors, responses=AUTH)
async def get_successors(request: Request, _who: Admin, read_point: Ident) -> Successors:
    """Every read point a parcel may reach next from this one."""
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "SELECT successor_id FROM read_point_successors WHERE read_point_id = %s ORDER BY 1",
            (read_point,),
        )
        found = [str(s) for (s,) in await cur.fetchall()]
    return Successors(read_point_id=read_point, successors=found)


@router.put(
    "/read-points/{read_point}/successors",
    response_model=Successors,
    responses={**CONFLICT, 404: {"description": "No such read point"}},
)
async def put_successors(
    request: Request, _who: Admin, read_point: Ident, body: SuccessorsIn
) -> Successors:
    """Replace the read point's successors (one or many: a sorter feeds every chute); each
    must be a read point of the same site, as in a site file."""

    def step() -> Step[None]:
        rows = yield Query(
            "SELECT read_point_id, site_id, zone, stage, description, position "
            "FROM read_points WHERE read_point_id = %s",
            (read_point,),
        )
        if not rows:
            raise Problem(404, N_("no read point {read_point!r}"), read_point=read_point)
        rp_id, site, zone, stage, description, position = rows[0]
        known = yield Query(
            "SELECT read_point_id, site_id FROM read_points WHERE read_point_id = ANY(%s)",
            (body.successors,),
        )
        if problems := successor_problems(
            rp_id, site, body.successors, {str(r): str(s) for r, s in known}
        ):
            raise ReferenceDataError(problems[0])
        updated = _model(
            lambda: model.ReadPoint(
                rp_id, site, zone, stage, description, position, successors=tuple(body.successors)
            )
        )
        yield from save_read_points([updated])

    await _save(request, step())
    return Successors(read_point_id=read_point, successors=body.successors)


@router.get("/sites/{site}/missing-windows", response_model=list[MissingWindow], responses=AUTH)
async def list_missing_windows(request: Request, _who: Admin, site: Ident) -> list[MissingWindow]:
    """The site's missing windows; where none applies, detection derives one from the
    stage standard and the learned transit times (docs/architecture.md)."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT site_id, stage, service_class, window_s FROM missing_windows "
            "WHERE site_id = %s ORDER BY stage NULLS FIRST, service_class NULLS FIRST",
            (site,),
        )
        return [MissingWindow(**r) for r in await cur.fetchall()]


@router.put("/sites/{site}/missing-windows", response_model=MissingWindow, responses=CONFLICT)
async def put_missing_window(
    request: Request, _who: Admin, site: Ident, body: MissingWindowIn
) -> MissingWindow:
    """Set the window for the site, or one stage and/or class of it (the most specific
    window wins)."""
    # The model checks the stage word itself, so the message is a site file's.
    stage = cast(Stage | None, body.stage)
    window = _model(lambda: model.MissingWindow(site, body.window_s, body.service_class, stage))
    await _save(request, save_missing_windows([window]))
    return MissingWindow(site_id=site, **body.model_dump())


@router.delete(
    "/sites/{site}/missing-windows",
    status_code=204,
    responses={**AUTH, 404: {"description": "No such window"}},
)
async def delete_missing_window(
    request: Request,
    _who: Admin,
    site: Ident,
    stage: str | None = None,
    service_class: str | None = None,
) -> None:
    """Remove a window: detection derives that one again."""
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "DELETE FROM missing_windows WHERE site_id = %s AND stage IS NOT DISTINCT FROM %s "
            "AND service_class IS NOT DISTINCT FROM %s",
            (site, stage, service_class),
        )
        if cur.rowcount == 0:
            raise Problem(404, N_("no such missing window"))


async def _site_row(request: Request, table: str, columns: str, site: str) -> dict[str, Any]:
    """The site's one row of a per-site settings table (names written here), or 404."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT site_id, {columns} FROM {table} WHERE site_id = %s",
            (site,),
        )
        row = await cur.fetchone()
    if row is None:
        raise Problem(404, N_("no {table} set for {site!r}"), table=table, site=site)
    found: dict[str, Any] = row
    return found


@router.get(
    "/sites/{site}/device-thresholds",
    response_model=DeviceThresholds,
    responses={**AUTH, 404: {"description": "None set: the defaults apply"}},
)
async def get_device_thresholds(request: Request, _who: Admin, site: Ident) -> DeviceThresholds:
    """The site's silence window and no-read spike limits."""
    columns = ", ".join(THRESHOLD_FIELDS)
    row = await _site_row(request, "device_thresholds", columns, site)
    return DeviceThresholds(**row)


@router.put("/sites/{site}/device-thresholds", response_model=DeviceThresholds, responses=CONFLICT)
async def put_device_thresholds(
    request: Request, _who: Admin, site: Ident, body: DeviceThresholdsIn
) -> DeviceThresholds:
    """Set the site's silence window and no-read spike limits (unset fields: defaults)."""
    given = {k: v for k, v in body.model_dump().items() if v is not None}
    thresholds = _model(lambda: model.DeviceThresholds(site, **given))
    await _save(request, save_device_thresholds([thresholds]))
    return DeviceThresholds(**{k: getattr(thresholds, k) for k in ("site_id", *THRESHOLD_FIELDS)})


@router.get(
    "/sites/{site}/tolerances",
    response_model=SiteTolerances,
    responses={**AUTH, 404: {"description": "None set: the detector's defaults apply"}},
)
async def get_tolerances(request: Request, _who: Admin, site: Ident) -> SiteTolerances:
    """The site's clock-skew tolerance and duplicate gap."""
    row = await _site_row(request, "site_tolerances", "skew_tolerance_s, duplicate_gap_s", site)
    return SiteTolerances(**row)


@router.put("/sites/{site}/tolerances", response_model=SiteTolerances, responses=CONFLICT)
async def put_tolerances(
    request: Request, _who: Admin, site: Ident, body: SiteTolerancesIn
) -> SiteTolerances:
    """Set how far the site's device clocks may disagree and its duplicate gap."""
    tolerances = _model(
        lambda: model.SiteTolerances(site, body.skew_tolerance_s, body.duplicate_gap_s)
    )
    await _save(request, save_site_tolerances([tolerances]))
    return SiteTolerances(site_id=site, **body.model_dump())
