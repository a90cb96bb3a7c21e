"""Standards set beforehand: service classes with their delivery standard (J+n working
days) and, per site, stage and class, the longest a parcel may take from arriving at a
stage to reaching the next read point."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceClass:
    service_class: str
    description: str
    delivery_days: int  # J+n
    s10_prefix: str  # the S10 service indicator letters its items carry
    # Stage standard = nominal transit of the stage x site factor x this slack. Normal
    # transits vary by at most +-20 %, so every slack >= 1.25 keeps on-time parcels
    # within their standard; only injected delays exceed it.
    slack: float
    share: float  # fraction of parcels of this class


SERVICE_CLASSES: tuple[ServiceClass, ...] = (
    ServiceClass("express", "Express (EMS), next working day", 1, "EE", 1.25, 0.15),
    ServiceClass("priority", "Priority parcel, J+2", 2, "CP", 1.5, 0.25),
    ServiceClass("standard", "Standard parcel, J+3", 3, "CA", 2.0, 0.45),
    ServiceClass("economy", "Economy parcel, J+5", 5, "CB", 3.0, 0.15),
)


@dataclass(frozen=True, slots=True)
class StageStandard:
    site: str
    stage: str
    service_class: str
    max_seconds: float


def stage_standards(
    site: str,
    site_factor: float,
    transit_s: dict[str, float],
    classes: tuple[ServiceClass, ...],
) -> list[StageStandard]:
    return [
        StageStandard(site, stage, c.service_class, round(nominal * site_factor * c.slack, 3))
        for stage, nominal in transit_s.items()
        for c in classes
    ]
