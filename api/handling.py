"""Alert handling: severity per kind and site, assigning an alert to a controller,
escalation rules and who is on duty.

Severities and escalation rules have a default row (no site) per kind, made by the
migration; a site's own row wins. The escalation itself runs in `parceltrack
quality` (quality/escalation.py), which reads these tables.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from api.alerts import ALERT_COLUMNS, AUTH, NO_SUCH_ALERT, Controller
from api.language import Problem
from api.models import Alert, Text
from api.security import Caller, require
from parceltrack.alerts import AlertKind
from parceltrack.i18n import N_

router = APIRouter(tags=["controllers"])
Manager = Annotated[Caller, Depends(require("manager"))]
SiteId = Annotated[str, Path(max_length=200, pattern=r"^[^\x00-\x1f/]+$")]
Severity = Literal["minor", "major", "critical"]
Channel = Literal["email", "webhook"]
SITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH,
    409: {"description": "No such site"},
}


class KindSeverity(BaseModel):
    kind: AlertKind
    severity: Severity
    site_default: bool = Field(description="true where the site has no row of its own")


class SeverityIn(BaseModel):
    severity: Severity


class EscalationRule(BaseModel):
    kind: AlertKind
    after_s: float = Field(gt=0, le=7 * 86400, description="unacknowledged this long: escalate")
    repeat_s: float = Field(gt=0, le=7 * 86400, description="then remind this often")
    site_default: bool = False


class EscalationIn(BaseModel):
    after_s: float = Field(gt=0, le=7 * 86400)
    repeat_s: float = Field(gt=0, le=7 * 86400)


class OnDutyBase(BaseModel):
    name: str = Text
    channel: Channel
    address: str = Field(
        min_length=3,
        max_length=2000,
        pattern=r"^(https?://\S+|[^@\s]+@[^@\s]+)$",
        description="an e-mail address, or an http(s) URL for webhooks",
    )
    min_severity: Severity = "minor"
    language: Literal["en", "zh-CN"] = "en"


class OnDutyIn(OnDutyBase):
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="webhooks: the key their HMAC signature is made with (never shown again)",
    )


class OnDuty(OnDutyBase):
    duty_id: int
    site_id: str


RESOLVED = N_("the alert is resolved")


class AssignIn(BaseModel):
    controller: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="who takes the alert; default: the caller (its key's name)",
    )


def _pool(request: Request) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


# The rows in force for a site, per kind: its own where it has one, else the default.
_IN_FORCE = """
SELECT DISTINCT ON (kind) {columns}, site_id IS NULL AS site_default
FROM {table} WHERE site_id = %(site)s OR site_id IS NULL
ORDER BY kind, site_id NULLS LAST
"""


async def _in_force(request: Request, table: str, columns: str, site: str) -> list[Any]:
    sql = _IN_FORCE.format(table=table, columns=columns)  # fixed names only
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, {"site": site})
        return [r for r in await cur.fetchall() if r["kind"] in set(AlertKind)]


@router.get(
    "/v1/sites/{site_id}/alert-severities", response_model=list[KindSeverity], responses=AUTH
)
async def get_severities(request: Request, _who: Controller, site_id: SiteId) -> Any:
    """The severity of each alert kind at the site."""
    return await _in_force(request, "alert_severities", "kind, severity", site_id)


@router.put(
    "/v1/sites/{site_id}/alert-severities/{kind}",
    response_model=list[KindSeverity],
    responses=SITE_RESPONSES,
)
async def put_severity(
    request: Request, _who: Manager, site_id: SiteId, kind: AlertKind, body: SeverityIn
) -> Any:
    """Set the severity of one alert kind at the site."""
    async with _pool(request).connection() as conn:
        await conn.execute(
            "INSERT INTO alert_severities (site_id, kind, severity) VALUES (%s, %s, %s) "
            "ON CONFLICT (coalesce(site_id, ''), kind) DO UPDATE SET severity = EXCLUDED.severity",
            (site_id, kind.value, body.severity),
        )
    return await _in_force(request, "alert_severities", "kind, severity", site_id)


@router.get(
    "/v1/sites/{site_id}/escalation-rules", response_model=list[EscalationRule], responses=AUTH
)
async def get_escalation(request: Request, _who: Controller, site_id: SiteId) -> Any:
    """After how long each kind escalates at the site, and how often it reminds."""
    return await _in_force(request, "escalation_rules", "kind, after_s, repeat_s", site_id)


@router.put(
    "/v1/sites/{site_id}/escalation-rules/{kind}",
    response_model=list[EscalationRule],
    responses=SITE_RESPONSES,
)
async def put_escalation(
    request: Request, _who: Manager, site_id: SiteId, kind: AlertKind, body: EscalationIn
) -> Any:
    """Set when one alert kind escalates at the site and how often it reminds."""
    async with _pool(request).connection() as conn:
        await conn.execute(
            "INSERT INTO escalation_rules (site_id, kind, after_s, repeat_s) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (coalesce(site_id, ''), kind) "
            "DO UPDATE SET after_s = EXCLUDED.after_s, repeat_s = EXCLUDED.repeat_s",
            (site_id, kind.value, body.after_s, body.repeat_s),
        )
    return await _in_force(request, "escalation_rules", "kind, after_s, repeat_s", site_id)


_DUTY_COLUMNS = "duty_id, site_id, name, channel, address, min_severity, language"


@router.get("/v1/sites/{site_id}/on-duty", response_model=list[OnDuty], responses=AUTH)
async def list_on_duty(request: Request, _who: Controller, site_id: SiteId) -> Any:
    """Who escalations at the site go to."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_DUTY_COLUMNS} FROM on_duty WHERE site_id = %s ORDER BY duty_id", (site_id,)
        )
        return await cur.fetchall()


@router.post(
    "/v1/sites/{site_id}/on-duty", response_model=OnDuty, status_code=201, responses=SITE_RESPONSES
)
async def add_on_duty(request: Request, _who: Manager, site_id: SiteId, body: OnDutyIn) -> Any:
    """Put someone on the site's on-duty list (one row per channel and address)."""
    if body.channel == "webhook" and not body.address.startswith(("http://", "https://")):
        raise Problem(422, N_("address: a webhook needs an http(s) URL"))
    if body.channel == "email" and "@" not in body.address:
        raise Problem(422, N_("address: an e-mail address needs an @"))
    if body.channel == "webhook" and body.secret is None:
        raise Problem(422, N_("secret: a webhook needs a signing secret"))
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO on_duty (site_id, name, channel, address, min_severity, language, "
            "secret) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (site_id, channel, address) DO UPDATE SET name = EXCLUDED.name, "
            "min_severity = EXCLUDED.min_severity, language = EXCLUDED.language, "
            f"secret = EXCLUDED.secret RETURNING {_DUTY_COLUMNS}",
            (
                site_id,
                body.name,
                body.channel,
                body.address,
                body.min_severity,
                body.language,
                body.secret,
            ),
        )
        return await cur.fetchone()


@router.delete(
    "/v1/sites/{site_id}/on-duty/{duty_id}",
    status_code=204,
    responses={**AUTH, 404: {"description": "Not on the list"}},
)
async def remove_on_duty(
    request: Request,
    _who: Manager,
    site_id: SiteId,
    duty_id: Annotated[int, Path(ge=1, le=2**62)],
) -> None:
    """Take someone off the site's on-duty list."""
    async with _pool(request).connection() as conn:
        cur = await conn.execute(
            "DELETE FROM on_duty WHERE site_id = %s AND duty_id = %s", (site_id, duty_id)
        )
    if cur.rowcount == 0:
        raise Problem(404, N_("not on the on-duty list"))


AlertId = Annotated[int, Path(ge=1, le=2**62)]
ASSIGN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH,
    404: {"description": "No such alert"},
    409: {"description": "Resolved"},
}


async def _set_assignee(request: Request, alert_id: int, assignee: str | None) -> Alert:
    """The live alert with its new assignee (None: nobody); 404 unknown, 409 resolved.
    The change reaches the alert stream as `alert.updated` (the alerts trigger)."""
    async with _pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE alerts SET assigned_to = %s, assigned_at = CASE WHEN %s::text IS NULL "
            "THEN NULL ELSE now() END "
            f"WHERE alert_id = %s AND state <> 'resolved' RETURNING {ALERT_COLUMNS}",
            (assignee, assignee, alert_id),
        )
        row = await cur.fetchone()
        if row is None:
            await cur.execute("SELECT state FROM alerts WHERE alert_id = %s", (alert_id,))
            found = await cur.fetchone()
            if found is None:
                raise Problem(404, NO_SUCH_ALERT)
            raise Problem(409, RESOLVED)
    return Alert(**row)


@router.post("/v1/alerts/{alert_id}/assign", response_model=Alert, responses=ASSIGN_RESPONSES)
async def assign_alert(
    request: Request, who: Controller, alert_id: AlertId, body: AssignIn
) -> Alert:
    """Assign a live alert to a controller, the caller when the body names nobody
    (reassigning replaces the assignee)."""
    return await _set_assignee(request, alert_id, body.controller or who.name)


@router.delete("/v1/alerts/{alert_id}/assign", response_model=Alert, responses=ASSIGN_RESPONSES)
async def unassign_alert(request: Request, _who: Controller, alert_id: AlertId) -> Alert:
    """Take a live alert's assignee away: nobody holds it (unassigning twice is harmless)."""
    return await _set_assignee(request, alert_id, None)
