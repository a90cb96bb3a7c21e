"""The ground truth of a generated scenario: one Fault per faulty parcel, from the
per-parcel matrices the generator built (only faulty parcels are visited)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from firmware_sim.layout import ReadPointSpec
from firmware_sim.parcels import CHU, DOR, IND, SRT, SRT2, STAGE_SLOT, TUN, ManifestEntry
from firmware_sim.truth import FAULT_KINDS, Fault


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
