"""Reference data as an operator supplies it, in wall-clock terms: sites, read points,
devices, service classes, stage standards, missing windows, device thresholds, site
tolerances, sort plans and the manifest.

Value objects that validate themselves: a zone or stage outside the ground's
enumerations, or a sort plan time without a UTC offset, is refused where the object
is made, so the loader refuses what the admin API refuses. Whoever produces reference
data (the simulator, an operator's file, the admin API) builds these; the repository
(storage/reference.py) stores them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from parceltrack.errors import ParceltrackError
from parceltrack.layout import Protocol, Stage, Zone, allowed


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


def positive(value: float, what: str, zero_ok: bool = False) -> None:
    """Refuse a duration or rate that is not a finite number above zero (or at least 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReferenceDataError(f"{what} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = "0 or more" if zero_ok else "more than 0"
        raise ReferenceDataError(f"{what} must be {bound}, not {value!r}")


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
    # Every read point a parcel may reach next (a sorter feeds many chutes). Given one
    # way or the other: a lone next hop is the one successor, and one successor is
    # the next hop.
    successors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", word(Zone, self.zone, "zone"))
        object.__setattr__(self, "stage", word(Stage, self.stage, "stage"))
        successors = tuple(self.successors)
        if self.next_read_point_id is not None and not successors:
            successors = (self.next_read_point_id,)
        if len(set(successors)) != len(successors):
            raise ReferenceDataError(f"read point {self.read_point_id!r} lists a successor twice")
        if self.read_point_id in successors:
            raise ReferenceDataError(f"read point {self.read_point_id!r} cannot follow itself")
        if self.next_read_point_id is not None and self.next_read_point_id not in successors:
            raise ReferenceDataError(
                f"next read point {self.next_read_point_id!r} is not among the successors"
            )
        object.__setattr__(self, "successors", successors)
        if len(successors) == 1:
            object.__setattr__(self, "next_read_point_id", successors[0])


def never_applies(site: str, stage: str, what: str = "a standard") -> str:
    """Why a setting for a stage the site has no read point at is refused."""
    return (
        f"site {site!r} has no read point at stage {str(stage)!r}: {what} for it would never apply"
    )


def successor_problems(
    read_point: str, site: str, successors: Sequence[str], site_of: Mapping[str, str]
) -> list[str]:
    """Why these successors cannot follow `read_point` of `site`, given the site of every
    read point known (`site_of`): the site file and the admin API both ask this."""
    problems = []
    for nxt in successors:
        if nxt not in site_of:
            problems.append(f"successor {nxt!r} of {read_point!r} is not a known read point")
        elif site_of[nxt] != site:
            problems.append(
                f"successor {nxt!r} of {read_point!r} belongs to site {site_of[nxt]!r}, "
                f"not {site!r}"
            )
    return problems


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    site_id: str
    read_point_id: str | None
    kind: Protocol  # the protocol it speaks: barcode, mercury, r2000
    description: str = ""
    # The driver's settings as the operator gives them (baud rate, region, power ...).
    settings: Mapping[str, str | int | float | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", word(Protocol, self.kind, "protocol"))
        for key, value in self.settings.items():
            if not isinstance(value, str | int | float | bool):
                raise ReferenceDataError(
                    f"device setting {key!r} must be text, a number or true/false"
                )


@dataclass(frozen=True, slots=True)
class ServiceClass:
    service_class: str
    description: str
    delivery_days: int  # J+n working days

    def __post_init__(self) -> None:
        days = self.delivery_days
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 60:
            raise ReferenceDataError(f"delivery_days must be a whole number 0-60, not {days!r}")


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
        positive(self.max_seconds, "max_seconds")


@dataclass(frozen=True, slots=True)
class MissingWindow:
    """How long, after its stage deadline, a parcel unseen anywhere counts as lost; for
    the whole site, or one class and/or stage of it (the most specific row wins)."""

    site_id: str
    window_s: float
    service_class: str | None = None
    stage: Stage | None = None

    def __post_init__(self) -> None:
        if self.stage is not None:
            object.__setattr__(self, "stage", word(Stage, self.stage, "stage"))
        positive(self.window_s, "window_s")


@dataclass(frozen=True, slots=True)
class DeviceThresholds:
    """Per site: how long a device may stay quiet, and what a no-read spike is (the
    defaults are migration 40's column defaults)."""

    site_id: str
    silence_s: float = 60.0
    bin_s: float = 10.0
    window_bins: int = 6
    bins: int = 60
    open_rate: float = 0.2
    close_rate: float = 0.1
    jump: float = 3.0
    min_reads: int = 20
    min_noreads: int = 8

    def __post_init__(self) -> None:
        for name in ("silence_s", "bin_s", "jump"):
            positive(getattr(self, name), name)
        for name in ("window_bins", "bins", "min_reads", "min_noreads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReferenceDataError(f"{name} must be a whole number, not {value!r}")
        if self.window_bins < 1 or self.bins <= self.window_bins:
            raise ReferenceDataError("bins must be more than window_bins, and window_bins >= 1")
        for name in ("open_rate", "close_rate"):
            rate = getattr(self, name)
            positive(rate, name)
            if rate > 1:
                raise ReferenceDataError(f"{name} is a share of reads: at most 1, not {rate!r}")
        if self.close_rate >= self.open_rate:
            raise ReferenceDataError("close_rate must be below open_rate")


THRESHOLD_FIELDS = ("silence_s", "bin_s", "window_bins", "bins", "open_rate", "close_rate",
                    "jump", "min_reads", "min_noreads")  # fmt: skip


@dataclass(frozen=True, slots=True)
class SiteTolerances:
    """Per site: how far device clocks may disagree, and how close repeated reads at one
    stage must be to count as duplicates rather than a new pass."""

    site_id: str
    skew_tolerance_s: float
    duplicate_gap_s: float

    def __post_init__(self) -> None:
        positive(self.skew_tolerance_s, "skew_tolerance_s", zero_ok=True)
        positive(self.duplicate_gap_s, "duplicate_gap_s")


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
        seen: set[str] = set()
        for e in self.entries:
            if e.destination in seen:
                raise ReferenceDataError(destination_twice(e.destination, self.effective_from))
            seen.add(e.destination)


def destination_twice(destination: str, effective_from: datetime) -> str:
    """Why a plan version naming a destination twice is refused (files and API alike)."""
    return (
        f"destination {destination!r} appears twice in the version in force from "
        f"{effective_from.isoformat()}"
    )


def plan_point_problem(read_point: str, want: Zone, zone: str | None) -> str | None:
    """Why `read_point` (of zone `zone`; None: not a read point of the site) cannot be a
    plan's chute or door (`want`); None when it can."""
    if zone == want:
        return None
    known = "" if zone is None else f" (it is a {zone} read point)"
    return f"{read_point!r} is not a {want.value} read point of this site{known}"


def overlapping_versions(effective_from: datetime, version: int) -> str:
    return (
        f"overlapping plan versions: version {version} is already in force from "
        f"{effective_from.isoformat()}"
    )


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
    missing_windows: Sequence[MissingWindow] = ()
    device_thresholds: Sequence[DeviceThresholds] = ()
    site_tolerances: Sequence[SiteTolerances] = ()
