"""Sorting-centre layouts: read points in flow order, each with its device, and the
versioned sort plans that say which chute and door serve each destination."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from parceltrack.layout import Stage, Zone

Protocol = Literal["barcode", "mercury", "r2000"]
RFID_PROTOCOLS: frozenset[str] = frozenset({"mercury", "r2000"})


@dataclass(frozen=True, slots=True)
class SiteSpec:
    site: str
    name: str
    rfid: bool  # parcels inducted here carry SSCC-96 tags; tunnel and doors are RFID gates
    timezone: str = "UTC"
    language: str = "en"  # of its read points' descriptions, as its operators name them


@dataclass(frozen=True, slots=True)
class ReadPointSpec:
    read_point: str
    site: str
    zone: Zone
    stage: Stage  # of a centre: parceltrack.layout.CENTRE_STAGES
    description: str
    position: int
    next_read_point: str | None  # the fixed next hop; None after the sorter (plan decides)
    device: str
    protocol: str = "barcode"  # "barcode" | "mercury" | "r2000"

    @property
    def is_rfid(self) -> bool:
        return self.protocol in RFID_PROTOCOLS


@dataclass(frozen=True, slots=True)
class SortPlanEntry:
    destination: str
    chute: str  # read point id
    door: str  # read point id


@dataclass(frozen=True, slots=True)
class SortPlan:
    """One version of a site's sort plan, in force from `effective_from_s` (scenario
    seconds) until the next version of the same site."""

    site: str
    version: int
    effective_from_s: float
    entries: tuple[SortPlanEntry, ...]

    def chute_for(self, destination: str) -> str:
        return next(e.chute for e in self.entries if e.destination == destination)


def plan_in_force(plans: list[SortPlan], site: str, at_s: float) -> SortPlan:
    """The latest version of the site's plan whose effective time is at or before `at_s`."""
    candidates = [p for p in plans if p.site == site and p.effective_from_s <= at_s]
    if not candidates:
        raise LookupError(f"no sort plan in force at {site} at {at_s}s")
    return max(candidates, key=lambda p: p.version)


# Read points as a site's operators name them, in the site's language.
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "en": {
        "induction": "Induction line {n}",
        "tunnel": "Scan tunnel 1",
        "sorter": "Tilt-tray sorter 1 induction scanner",
        "chute": "Chute {n}",
        "door": "Outbound door {n}",
        "rfid": " (RFID gate)",
    },
    "zh-CN": {
        "induction": "供件线 {n}",
        "tunnel": "扫描通道 1",
        "sorter": "翻盘式分拣机 1 供件扫描器",
        "chute": "格口 {n}",
        "door": "发运口 {n}",
        "rfid": "（RFID 门）",
    },
}


def site_layout(site: SiteSpec, chutes: int, induction_lines: int) -> list[ReadPointSpec]:
    """Induction lines -> scan tunnel -> sorter -> chutes, each chute to its outbound door.

    On an RFID site the tunnel is an R2000 gate and the doors are Mercury gates; the
    induction lines, the sorter's induction scanner and the chutes scan barcodes."""
    s = site.site
    words = DESCRIPTIONS[site.language]
    gate = words["rfid"] if site.rfid else ""
    tunnel_protocol: Protocol = "r2000" if site.rfid else "barcode"
    door_protocol: Protocol = "mercury" if site.rfid else "barcode"
    rps = [
        ReadPointSpec(
            f"{s}-IND{i}",
            s,
            Zone.INDUCTION,
            Stage.INDUCTION,
            words["induction"].format(n=i),
            1,
            f"{s}-TUN1",
            f"{s}-scan-ind{i}",
        )
        for i in range(1, induction_lines + 1)
    ]
    rps.append(
        ReadPointSpec(
            f"{s}-TUN1",
            s,
            Zone.TUNNEL,
            Stage.TUNNEL,
            words["tunnel"] + gate,
            2,
            f"{s}-SRT1",
            f"{s}-rfid-tun1" if site.rfid else f"{s}-scan-tun1",
            tunnel_protocol,
        )
    )
    rps.append(
        ReadPointSpec(
            f"{s}-SRT1",
            s,
            Zone.SORTER,
            Stage.SORT,
            words["sorter"],
            3,
            None,
            f"{s}-scan-srt1",
        )
    )
    for i in range(1, chutes + 1):
        rps.append(
            ReadPointSpec(
                f"{s}-CHU{i:02d}",
                s,
                Zone.CHUTE,
                Stage.CHUTE,
                words["chute"].format(n=i),
                4,
                f"{s}-DOR{i:02d}",
                f"{s}-scan-chu{i:02d}",
            )
        )
        rps.append(
            ReadPointSpec(
                f"{s}-DOR{i:02d}",
                s,
                Zone.DOOR,
                Stage.DISPATCH,
                words["door"].format(n=i) + gate,
                5,
                None,
                f"{s}-rfid-dor{i:02d}" if site.rfid else f"{s}-scan-dor{i:02d}",
                door_protocol,
            )
        )
    return rps


def sort_plans(
    site: str, destinations: tuple[str, ...], chutes: int, change_at_s: float | None
) -> list[SortPlan]:
    """Version 1 sends destination i to chute i; version 2 (from `change_at_s`) moves
    every destination one chute along, so each one's chute really changes."""

    def version(n: int, shift: int, at: float) -> SortPlan:
        entries = []
        for i, dest in enumerate(destinations):
            c = (i + shift) % chutes + 1
            entries.append(SortPlanEntry(dest, f"{site}-CHU{c:02d}", f"{site}-DOR{c:02d}"))
        return SortPlan(site, n, at, tuple(entries))

    plans = [version(1, 0, 0.0)]
    if change_at_s is not None:
        plans.append(version(2, 1, change_at_s))
    return plans
