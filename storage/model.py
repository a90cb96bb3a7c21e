"""Reference data as an operator supplies it, in wall-clock terms: sites, read points,
devices, service classes, stage standards, sort plans and the manifest.

Value objects that validate themselves: a zone or stage outside the ground's
enumerations, or a sort plan time without a UTC offset, is refused where the object
is made, so the loader refuses what the admin API refuses. Whoever produces reference
data (the simulator, an operator's file, the admin API) builds these; the repository
(storage/reference.py) stores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from parceltrack.errors import ParceltrackError
from parceltrack.layout import Stage, Zone, allowed


class ReferenceDataError(ParceltrackError, ValueError):
    """Reference data that is refused: an unknown word, or a contradiction with what
    the database already holds."""


W = TypeVar("W", bound=StrEnum)


def word(enum: type[W], value: str, what: str) -> W:
    """`value` as a member of `enum`, or ReferenceDataError listing the allowed ones."""
    try:
        return enum(value)
    except ValueError:
        raise ReferenceDataError(f"unknown {what} {value!r}; allowed: {allowed(enum)}") from None


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    name: str
    timezone: str = "UTC"  # IANA name: days and shifts of the scorecards are local


@dataclass(frozen=True, slots=True)
class ReadPoint:
    read_point_id: str
    site_id: str
    zone: Zone
    stage: Stage
    description: str = ""
    position: int = 0
    next_read_point_id: str | None = None  # the fixed next hop on the conveyor, if any

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", word(Zone, self.zone, "zone"))
        object.__setattr__(self, "stage", word(Stage, self.stage, "stage"))


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    site_id: str
    read_point_id: str | None
    kind: str  # the protocol it speaks: barcode, mercury, r2000
    description: str = ""


@dataclass(frozen=True, slots=True)
class ServiceClass:
    service_class: str
    description: str
    delivery_days: int  # J+n working days


@dataclass(frozen=True, slots=True)
class StageStandard:
    """The longest a parcel of the class may take from arriving at the stage to
    reaching the next read point, at the site (wall-clock seconds)."""

    site_id: str
    stage: Stage
    service_class: str
    max_seconds: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", word(Stage, self.stage, "stage"))


@dataclass(frozen=True, slots=True)
class SortPlanEntry:
    destination: str
    chute_read_point_id: str
    door_read_point_id: str | None = None


@dataclass(frozen=True, slots=True)
class SortPlan:
    """One version of a site's sort plan, in force from `effective_from` until the
    site's next version. Without a version, it is saved as the site's next one."""

    site_id: str
    effective_from: datetime
    entries: tuple[SortPlanEntry, ...]
    version: int | None = None

    def __post_init__(self) -> None:
        if self.effective_from.tzinfo is None:
            raise ReferenceDataError("a sort plan's effective_from needs a UTC offset")
        destinations = [e.destination for e in self.entries]
        if len(set(destinations)) != len(destinations):
            raise ReferenceDataError("a destination appears twice in the sort plan")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """A parcel announced before it arrives."""

    tracking_id: str
    service_class: str
    destination: str
    destination_site: str | None = None
    origin_site: str | None = None
    epc: str | None = None  # the RFID tag it carries (SSCC-96 hex), if any
    account: str | None = None  # the partner (shipper) whose parcel it is, if any


@dataclass(frozen=True, slots=True)
class ReferenceData:
    """Everything the pipeline needs to know beforehand, in the order it is stored."""

    sites: Sequence[Site] = ()
    read_points: Sequence[ReadPoint] = ()
    devices: Sequence[Device] = ()
    service_classes: Sequence[ServiceClass] = ()
    stage_standards: Sequence[StageStandard] = ()
    sort_plans: Sequence[SortPlan] = ()
    manifest: Sequence[ManifestEntry] = ()
