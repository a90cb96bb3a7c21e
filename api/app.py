"""FastAPI application: everything under /v1/, documented by its OpenAPI schema.

Routers by audience: customers (public, rate-limited), controllers, managers and
administration (API key with a role). Database errors caused by the request
(a reference to a missing site, text PostgreSQL cannot store) become 409/422.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from api import (
    admin,
    alerts,
    customers,
    epcis_api,
    feedback,
    kpis,
    language,
    operations,
    pages,
    site_settings,
)
from api import subscriptions as customer_subscriptions
from api.handling import router as handling_router  # issue 16
from api.lane import LookupLane
from api.manager import router as manager_router  # issue 16
from api.metrics import ApiMetrics, MetricsMiddleware, serve_metrics
from api.models import Health
from api.queries import has_detector_eta
from api.replica import ReadRouting
from api.security import RateLimiter, ensure_key, rate_limited
from api.staff import router as staff_router  # issue 16
from parceltrack.config import BrokerAddress
from parceltrack.mqtt import MqttClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    dsn: str
    broker: BrokerAddress
    rate_per_s: float = 5.0  # public lookups per client, on average
    burst: float = 20.0  # ... and at once
    keepalive_s: float = 15.0  # SSE comment when no alert changed for this long
    offline_after_s: float = 120.0  # device silent this long counts as offline
    lost_after_s: float = 3600.0  # KPI: parcel unseen this long, never dispatched, is lost
    pool_max: int = 10
    bootstrap_admin_key: str | None = None  # registered as an admin key at start-up
    language: str = "en"  # of pages and messages when the request names none we speak
    read_dsn: str | None = None  # a streaming replica for reads (api/replica.py)
    replica_max_lag_s: float = 2.0

    def __repr__(self) -> str:  # never show the bootstrap key
        return f"ApiSettings(broker={self.broker!r}, rate_per_s={self.rate_per_s})"


def settings_from_env() -> ApiSettings:
    """The API's settings from the PARCELTRACK_* environment (read once, here)."""
    from parceltrack.config import Settings

    env = Settings()
    return ApiSettings(
        dsn=env.dsn,
        broker=env.broker(),
        rate_per_s=env.api_rate_per_s,
        burst=env.api_burst,
        bootstrap_admin_key=env.api_admin_key.get_secret_value() if env.api_admin_key else None,
        language=language.configured(env.language),
        read_dsn=env.read_dsn,
        replica_max_lag_s=env.replica_max_lag_s,
    )


def app_from_env() -> FastAPI:
    """uvicorn factory, for serving with several worker processes."""
    return create_app(settings_from_env())


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Autocommit: a read is one round trip, with no BEGIN before it and no
        # COMMIT when the connection goes back; writes of several statements open
        # their transaction explicitly.
        pool = await _open_pool(settings.dsn, settings.pool_max)
        replica = (
            await _open_pool(settings.read_dsn, settings.pool_max) if settings.read_dsn else None
        )
        app.state.reads = ReadRouting(pool, replica, max_lag_s=settings.replica_max_lag_s)
        probe = asyncio.create_task(app.state.reads.probe_forever()) if replica else None
        app.state.detector_eta = False
        try:
            async with asyncio.timeout(10), pool.connection() as conn:
                app.state.detector_eta = await has_detector_eta(conn)
        except Exception:  # the API still starts; healthz reports the database
            log.warning("database unreachable at start-up; detector ETA not used", exc_info=True)
        if settings.bootstrap_admin_key:
            async with pool.connection() as conn:
                await ensure_key(conn, settings.bootstrap_admin_key, "bootstrap", "admin")
        broker = MqttClient(f"api-{id(app):x}", settings.broker)
        broker.start()
        app.state.pool, app.state.broker = pool, broker
        try:
            yield
        finally:
            broker.stop()
            if probe is not None:
                probe.cancel()
            if replica is not None:
                await replica.close()
            await pool.close()

    app = FastAPI(
        title="parceltrack",
        version="1",
        summary="Where every parcel is, and what went wrong, in a postal sorting centre.",
        description="Customers look parcels up by tracking number (no key). Controllers, "
        "managers and administrators send `Authorization: Bearer <key>` or `X-API-Key`; "
        "each role may do what the roles below it may (customer < controller < manager "
        "< admin).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.rate_per_s, settings.burst)
    app.state.metrics = ApiMetrics(lambda: _pool_stats(app), lambda: app.state.limiter.refused)
    # The lookup's lean lane (api/lane.py) inside the metrics, which count it too.
    app.add_middleware(LookupLane, guard=rate_limited, serve=customers.parcel_response)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_api_route(
        "/metrics", serve_metrics, methods=["GET"], tags=["operations"], include_in_schema=False
    )
    for router in (
        customers.router,
        alerts.router,
        operations.router,
        feedback.router,
        kpis.router,
        admin.router,
        site_settings.router,
        staff_router,  # issue 16: staff ratings, complaint deadlines
        handling_router,  # issue 16: severities, assignment, escalation, on duty
        manager_router,  # issue 16: the manager page's figures and the floor view
        customer_subscriptions.router,
        customer_subscriptions.admin_router,
    ):
        app.include_router(router)
    pages.install(app)  # the tracking page and the control room (api/pages.py)
    language.install(app)  # errors in the caller's language (api/language.py)
    epcis_api.install(app)  # the EPCIS 2.0 query interface (api/epcis_api.py)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def integrity_error(
        _request: Request, exc: psycopg.errors.IntegrityError
    ) -> JSONResponse:
        diag = exc.diag
        detail = diag.message_detail or diag.message_primary or "conflicts with stored data"
        return JSONResponse({"detail": detail}, status_code=409)

    @app.exception_handler(psycopg.DataError)
    async def data_error(_request: Request, exc: psycopg.DataError) -> JSONResponse:
        return JSONResponse({"detail": f"value not accepted: {exc}"}, status_code=422)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz(request: Request) -> JSONResponse:
        database = await _database_ok(request.app.state.pool)
        broker_client: MqttClient = request.app.state.broker
        broker = broker_client.is_connected()
        body = Health(
            status="ok" if database and broker else "degraded", database=database, broker=broker
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)

    return app


async def _open_pool(dsn: str, size: int) -> AsyncConnectionPool[Any]:
    pool = AsyncConnectionPool(
        dsn, min_size=2, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=False)
    return pool


_PROBLEM = {
    "title": "Problem",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "description": "what is wrong: a sentence, or FastAPI's list of field errors",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
        }
    },
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus what every operation may answer: 422 with a `detail` that
    is a sentence (our checks) or a list (FastAPI's field validation), and 400 for a
    body that cannot be parsed at all."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM
    problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            if "parameters" in operation or "requestBody" in operation:
                described = responses.get("422", {}).get("description", "Invalid request")
                responses["422"] = {"description": described, "content": problem}
            if "requestBody" in operation:
                responses.setdefault(
                    "400", {"description": "Body cannot be parsed", "content": problem}
                )
    app.openapi_schema = schema
    return schema


def _pool_stats(app: FastAPI) -> dict[str, int]:
    pool: AsyncConnectionPool[Any] | None = getattr(app.state, "pool", None)
    return pool.get_stats() if pool is not None else {}


async def _database_ok(pool: AsyncConnectionPool[Any]) -> bool:
    try:
        async with asyncio.timeout(2):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
    except Exception:  # any failure to answer means "not healthy"; the reason is logged
        log.warning("health check: database unreachable", exc_info=True)
        return False
    return True
