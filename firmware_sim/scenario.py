"""A sorting-centre scenario: layout, sort plan, manifest, the reads each device will
make, and the ground truth about every injected fault. Deterministic for a seed."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from parceltrack.identifiers import S10


@dataclass(frozen=True, slots=True)
class ReadPointSpec:
    read_point: str
    site: str
    zone: str  # induction, tunnel, sorter, chute, door
    stage: str
    description: str
    position: int
    next_read_point: str | None
    device: str


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    tracking_id: str
    service_class: str
    destination: str


@dataclass(frozen=True, slots=True)
class ScheduledRead:
    at: float  # seconds of scenario time from the start
    device: str
    read_point: str
    code: str | None  # None: the scanner saw an item but decoded nothing


@dataclass(frozen=True, slots=True)
class Fault:
    tracking_id: str
    kind: str  # "lost"
    after_read_point: str
    detectable_at: float  # scenario seconds from which a detector can know it


@dataclass
class Scenario:
    seed: int
    site: str
    read_points: list[ReadPointSpec]
    sort_plan: dict[str, str]  # destination -> chute read point
    manifest: list[ManifestEntry]
    reads: list[ScheduledRead]
    faults: list[Fault] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> Scenario:
        raw = json.loads(path.read_text())
        return cls(
            seed=raw["seed"],
            site=raw["site"],
            read_points=[ReadPointSpec(**r) for r in raw["read_points"]],
            sort_plan=raw["sort_plan"],
            manifest=[ManifestEntry(**m) for m in raw["manifest"]],
            reads=[ScheduledRead(**r) for r in raw["reads"]],
            faults=[Fault(**f) for f in raw["faults"]],
        )


DESTINATIONS = ("LON", "MAN", "BHX", "GLA")
# Seconds a parcel travels between consecutive read points on the conveyors.
TRANSIT_S = {"induction": 4.0, "tunnel": 6.0, "sorter": 8.0, "chute": 30.0}


def single_site_layout(site: str = "LHR1") -> tuple[list[ReadPointSpec], dict[str, str]]:
    """Induction -> scan tunnel -> sorter -> one chute per destination -> outbound doors."""
    rps = [
        ReadPointSpec(
            f"{site}-IND1",
            site,
            "induction",
            "induction",
            "Induction line 1",
            1,
            f"{site}-TUN1",
            f"{site}-scan-ind1",
        ),
        ReadPointSpec(
            f"{site}-TUN1",
            site,
            "tunnel",
            "tunnel",
            "Scan tunnel 1",
            2,
            f"{site}-SRT1",
            f"{site}-scan-tun1",
        ),
        ReadPointSpec(
            f"{site}-SRT1",
            site,
            "sorter",
            "sort",
            "Tilt-tray sorter 1 induction scanner",
            3,
            None,
            f"{site}-scan-srt1",
        ),
    ]
    plan: dict[str, str] = {}
    for i, dest in enumerate(DESTINATIONS, start=1):
        chute, door = f"{site}-CHU{i:02d}", f"{site}-DOR{i:02d}"
        rps.append(
            ReadPointSpec(
                chute,
                site,
                "chute",
                "chute",
                f"Chute {i} ({dest})",
                4,
                door,
                f"{site}-scan-chu{i:02d}",
            )
        )
        rps.append(
            ReadPointSpec(
                door,
                site,
                "door",
                "dispatch",
                f"Outbound door {i} ({dest})",
                5,
                None,
                f"{site}-scan-dor{i:02d}",
            )
        )
        plan[dest] = chute
    return rps, plan


def generate(
    seed: int = 1,
    parcels: int = 50,
    rate_per_s: float = 2.0,
    lost_rate: float = 0.1,
    noread_rate: float = 0.02,
    site: str = "LHR1",
) -> Scenario:
    """Parcels arrive at induction at `rate_per_s` and flow to their chute and door."""
    rng = random.Random(seed)
    rps, plan = single_site_layout(site)
    by_id = {r.read_point: r for r in rps}
    manifest: list[ManifestEntry] = []
    reads: list[ScheduledRead] = []
    faults: list[Fault] = []
    t = 0.0
    for n in range(parcels):
        t += rng.expovariate(rate_per_s)
        tracking = str(S10.make("CP", 10_000_000 + seed * 100_000 + n, "GB"))
        dest = rng.choice(DESTINATIONS)
        manifest.append(ManifestEntry(tracking, rng.choice(("standard", "express")), dest))
        route = [
            f"{site}-IND1",
            f"{site}-TUN1",
            f"{site}-SRT1",
            plan[dest],
            by_id[plan[dest]].next_read_point or "",
        ]
        lost_after = rng.randrange(1, len(route) - 1) if rng.random() < lost_rate else None
        at = t
        for i, rp_id in enumerate(route):
            rp = by_id[rp_id]
            decoded = rng.random() >= noread_rate or rp.zone != "tunnel"
            reads.append(
                ScheduledRead(round(at, 3), rp.device, rp_id, tracking if decoded else None)
            )
            if lost_after is not None and i == lost_after:
                # Detectable once the slowest normal transit to the next point has passed.
                latest = at + TRANSIT_S[rp.zone] * 1.2
                faults.append(Fault(tracking, "lost", rp_id, round(latest, 3)))
                break
            at += TRANSIT_S.get(rp.zone, 0.0) * rng.uniform(0.8, 1.2)
    reads.sort(key=lambda r: r.at)
    return Scenario(seed, site, rps, plan, manifest, reads, faults)
