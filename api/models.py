"""Response bodies, as the OpenAPI schema publishes them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Location(BaseModel):
    site: str
    read_point: str
    zone: str | None
    description: str | None
    device: str
    time: datetime


class TimelineEvent(BaseModel):
    time: datetime
    site: str
    read_point: str
    zone: str | None
    description: str | None
    device: str
    kind: str


class ParcelView(BaseModel):
    tracking_id: str
    service_class: str | None
    destination: str | None
    last_location: Location | None
    timeline: list[TimelineEvent]


class Health(BaseModel):
    status: str
    database: bool
    broker: bool
