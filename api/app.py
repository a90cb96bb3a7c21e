"""FastAPI application: parcel lookup and health, under /v1/."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import paho.mqtt.client as mqtt
from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from api import queries
from api.models import Health, Location, ParcelView, TimelineEvent
from parceltrack.config import BrokerAddress
from parceltrack.errors import InvalidTrackingNumber
from parceltrack.identifiers import parse_s10
from parceltrack.mqtt import connect, make_client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    dsn: str
    broker: BrokerAddress


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(settings.dsn, min_size=2, max_size=10, open=False)
        await pool.open(wait=False)
        broker = make_client(f"api-{id(app):x}", settings.broker)
        connect(broker)
        broker.loop_start()
        app.state.pool, app.state.broker = pool, broker
        try:
            yield
        finally:
            broker.loop_stop()
            broker.disconnect()
            await pool.close()

    app = FastAPI(
        title="parceltrack",
        version="1",
        summary="Where every parcel is, and what went wrong, in a postal sorting centre.",
        lifespan=lifespan,
    )

    @app.get(
        "/v1/parcels/{tracking_id}",
        response_model=ParcelView,
        tags=["customers"],
        responses={
            404: {"description": "Unknown parcel"},
            422: {"description": "Malformed or check-digit-invalid S10 number"},
        },
    )
    async def get_parcel(
        request: Request,
        tracking_id: Annotated[str, Path(max_length=64, description="UPU S10 number")],
    ) -> ParcelView:
        try:
            s10 = str(parse_s10(tracking_id))
        except InvalidTrackingNumber as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        pool: AsyncConnectionPool[Any] = request.app.state.pool
        async with pool.connection() as conn:
            manifest = await queries.parcel(conn, s10)
            events = await queries.timeline(conn, s10)
        if manifest is None and not events:
            raise HTTPException(status_code=404, detail="no parcel with that tracking number")
        timeline = [
            TimelineEvent(
                time=e["ts"],
                site=e["site_id"],
                read_point=e["read_point_id"],
                zone=e["zone"],
                description=e["description"],
                device=e["device_id"],
                kind=e["kind"],
            )
            for e in events
        ]
        last = timeline[-1] if timeline else None
        return ParcelView(
            tracking_id=s10,
            service_class=manifest["service_class"] if manifest else None,
            destination=manifest["destination"] if manifest else None,
            last_location=Location(
                site=last.site,
                read_point=last.read_point,
                zone=last.zone,
                description=last.description,
                device=last.device,
                time=last.time,
            )
            if last
            else None,
            timeline=timeline,
        )

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz(request: Request) -> JSONResponse:
        database = await _database_ok(request.app.state.pool)
        broker_client: mqtt.Client = request.app.state.broker
        broker = broker_client.is_connected()
        body = Health(
            status="ok" if database and broker else "degraded", database=database, broker=broker
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)

    return app


async def _database_ok(pool: AsyncConnectionPool[Any]) -> bool:
    try:
        async with asyncio.timeout(2):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
    except Exception:  # any failure to answer means "not healthy"; the reason is logged
        log.warning("health check: database unreachable", exc_info=True)
        return False
    return True
