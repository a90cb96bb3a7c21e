"""Ground truth: every injected fault, where it happened and from when a detector
can know it. The definitions of `detectable_at_s` follow the stage standards:

- delay:         arrival read at the stage + the stage standard for the parcel's class
- lost:          last read + the standard of the stage of that last read point
- missort:       the read at the wrong chute
- noread:        the moment the parcel passed the tunnel undecoded
- recirculation: the second read at the sorter
- misroute:      the first read at the wrong site (its induction line)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_sim.layout import ReadPointSpec
from firmware_sim.parcels import CHU, DOR, IND, SRT, SRT2, STAGE_SLOT, TUN, ManifestEntry
from parceltrack.errors import ParceltrackError

FAULT_KINDS = ("missort", "delay", "lost", "noread", "recirculation", "misroute")


@dataclass(frozen=True, slots=True)
class Fault:
    tracking_id: str
    kind: str  # one of FAULT_KINDS
    site: str
    read_point: str  # where: the wrong chute, the stage held at, the last read point ...
    stage: str
    at_s: float  # scenario seconds: when the fault happened (see docs/scenarios.md)
    detectable_at_s: float  # scenario seconds from which a detector can know it
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def after_read_point(self) -> str:
        """For lost parcels: the last read point that saw it (the foundation's name)."""
        return self.read_point

    def to_dict(self, start: datetime, speed: float = 1.0) -> dict[str, Any]:
        """The fault as in the scenario file; wall-clock fields for a playback that
        started at `start` at `speed` (the file itself: nominal start, speed 1)."""
        return {
            "tracking_id": self.tracking_id,
            "kind": self.kind,
            "site": self.site,
            "read_point": self.read_point,
            "stage": self.stage,
            "at_s": self.at_s,
            "detectable_at_s": self.detectable_at_s,
            "detectable_at": wall_clock(start, self.detectable_at_s, speed),
            "details": self.details,
            "at": wall_clock(start, self.at_s, speed),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fault:
        return cls(
            tracking_id=raw["tracking_id"],
            kind=raw["kind"],
            site=raw["site"],
            read_point=raw["read_point"],
            stage=raw["stage"],
            at_s=float(raw["at_s"]),
            detectable_at_s=float(raw["detectable_at_s"]),
            details=dict(raw.get("details", {})),
        )


def wall_clock(start: datetime, at_s: float, speed: float = 1.0) -> str:
    """Scenario seconds as wall-clock time, for a playback started at `start` at `speed`."""
    return (start + timedelta(seconds=at_s / speed)).isoformat(timespec="milliseconds")


class TruthFileError(ParceltrackError, ValueError):
    """A ground-truth JSON Lines file that cannot be read; the message says where."""


def read_truth_lines(path: Path) -> list[tuple[Fault, datetime]]:
    """A `--truth-out` file: each fault with its wall-clock `detectable_at`."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TruthFileError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            out.append((Fault.from_dict(raw), datetime.fromisoformat(raw["detectable_at"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise TruthFileError(f"{path}:{number}: not a fault record ({exc!r})") from exc
    return out


def record_faults(
    induction_lines: int,
    read_points: list[ReadPointSpec],
    manifest: list[ManifestEntry],
    kind_of: npt.NDArray[np.int8],
    site_of: npt.NDArray[np.int64],
    class_of: npt.NDArray[np.int64],
    delay_stage: npt.NDArray[np.int64],
    lost_slot: npt.NDArray[np.int64],
    t_ms: npt.NDArray[np.int64],
    rp: npt.NDArray[np.int32],
    assigned: npt.NDArray[np.int64],
    version_idx: npt.NDArray[np.int64],
    standard: npt.NDArray[np.float64],
    chutes: int,
    misroutes: dict[int, tuple[ReadPointSpec, float, str]],
) -> list[Fault]:
    """One Fault per faulty parcel; only those parcels are visited (a few percent)."""
    faults = []
    per_site = induction_lines + 2 + 2 * chutes
    for i in np.flatnonzero(kind_of >= 0).tolist():
        kind = FAULT_KINDS[int(kind_of[i])]
        m = manifest[i]
        site, cls = int(site_of[i]), int(class_of[i])

        def at(slot: int, i: int = i) -> float:
            return int(t_ms[i, slot]) / 1000.0

        def point(slot: int, i: int = i) -> ReadPointSpec:
            return read_points[int(rp[i, slot])]

        first_chute = site * per_site + induction_lines + 2
        expected_chute = read_points[first_chute + 2 * int(assigned[i])]
        if kind == "missort":
            where = point(CHU)
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(CHU), at(CHU),
                {
                    "destination": m.destination,
                    "expected_chute": expected_chute.read_point,
                    "plan_version": int(version_idx[i]) + 1,
                },
            )  # fmt: skip
        elif kind == "delay":
            stage = int(delay_stage[i])
            slot = STAGE_SLOT[stage]
            where = point(slot)
            limit = float(standard[site, stage, cls])
            next_slot = {IND: TUN, TUN: SRT, SRT: CHU, CHU: DOR}[slot]
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(slot), round(at(slot) + limit, 3),
                {
                    "standard_s": limit,
                    "held_s": round(at(next_slot) - at(slot), 3),
                    "next_read_point": point(next_slot).read_point,
                    "next_read_at_s": at(next_slot),
                },
            )  # fmt: skip
        elif kind == "lost":
            slot = int(lost_slot[i])
            where = point(slot)
            stage = STAGE_SLOT.index(slot)
            limit = float(standard[site, stage, cls])
            expected_next = {
                IND: point(TUN).read_point,
                TUN: point(SRT).read_point,
                SRT: expected_chute.read_point,
                CHU: point(DOR).read_point,
            }[slot]
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(slot), round(at(slot) + limit, 3),
                {"standard_s": limit, "expected_next_read_point": expected_next},
            )  # fmt: skip
        elif kind == "noread":
            where = point(TUN)
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(TUN), at(TUN), {"protocol": where.protocol},
            )  # fmt: skip
        elif kind == "misroute":
            where, when, home = misroutes[i]
            fault = Fault(
                m.tracking_id, kind, where.site, where.read_point, where.stage, when, when,
                {
                    "origin_site": m.origin_site,
                    "destination_site": home,
                    "left_by": point(DOR).read_point,
                },
            )  # fmt: skip
        else:  # recirculation
            where = point(SRT)
            fault = Fault(
                m.tracking_id, kind, m.origin_site, where.read_point, where.stage,
                at(SRT), at(SRT2), {"loops": 1},
            )  # fmt: skip
        faults.append(fault)
    faults.sort(key=lambda f: (f.detectable_at_s, f.tracking_id, f.kind))
    return faults
