"""Parcels and their reads: manifest rows, the reads as columns, identifiers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware_sim.epc import SSCC96
from firmware_sim.hubs import DEFAULT_COUNTRY
from firmware_sim.layout import SiteSpec
from firmware_sim.standards import ServiceClass
from parceltrack.identifiers import S10

# A parcel's reads, in order, as columns of the per-parcel matrix: the sorter read
# twice when the parcel is recirculated (slot SRT2).
SLOTS = ("induction", "tunnel", "sorter", "sorter_again", "chute", "door")
IND, TUN, SRT, SRT2, CHU, DOR = range(6)
# Which slot's read starts each timed stage (induction, tunnel, sort, chute).
STAGE_SLOT = (IND, TUN, SRT, CHU)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    tracking_id: str
    service_class: str
    destination: str
    origin_site: str = ""
    destination_site: str = ""
    epc: str | None = None  # SSCC-96 hex for RFID-tagged items
    inducted_at_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ScheduledRead:
    at: float  # seconds of scenario time from the start
    device: str
    read_point: str
    code: str | None  # barcode: the S10 number; None: seen but not decoded (or RFID)
    epc: str | None = None  # RFID reads: the tag's EPC hex
    tracking_id: str = ""  # the parcel, whatever the device could read (truth)
    protocol: str = "barcode"


@dataclass(frozen=True)
class Reads:
    """Every read of the scenario as columns, ordered by time: milliseconds from the
    start, index into read_points, index into the manifest, decoded or not."""

    at_ms: npt.NDArray[np.int64]
    read_point: npt.NDArray[np.int32]
    parcel: npt.NDArray[np.int32]
    decoded: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.at_ms)


def s10_serial(seed: int, n: int) -> int:
    """A distinct eight-digit serial per parcel (distinct for n < 89,999,999)."""
    return 10_000_000 + (seed * 7_919_111 + n) % 89_999_999


def build_manifest(
    seed: int,
    company_prefix: str,
    destination_names: tuple[str, ...],
    classes: tuple[ServiceClass, ...],
    site_of: npt.NDArray[np.int64],
    dest_of: npt.NDArray[np.int64],
    class_of: npt.NDArray[np.int64],
    inducted_ms: npt.NDArray[np.int64],
    sites: list[SiteSpec],
    destinations: dict[str, str],
    countries: list[str] | None = None,
) -> list[ManifestEntry]:
    """One manifest row per parcel: a distinct S10 number of its class ending in the
    country of its origin site (`countries`, per site; GB by default), an SSCC-96 tag
    when its origin site is an RFID site."""
    country = countries or [DEFAULT_COUNTRY] * len(sites)
    rfid = [s.rfid for s in sites]
    dest_names = list(destination_names)
    out = []
    inducted = inducted_ms.tolist()
    for i, (s, d, c, at) in enumerate(
        zip(site_of.tolist(), dest_of.tolist(), class_of.tolist(), inducted, strict=True)
    ):
        serial = s10_serial(seed, i)
        klass = classes[c]
        epc = SSCC96(company_prefix, f"0{serial:09d}").hex if rfid[s] else None
        out.append(
            ManifestEntry(
                str(S10.make(klass.s10_prefix, serial, country[s])),
                klass.service_class,
                dest_names[d],
                sites[s].site,
                destinations[dest_names[d]],
                epc,
                at / 1000.0,
            )
        )
    return out
