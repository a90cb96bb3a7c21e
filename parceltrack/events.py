"""The scan event: one read (or no-read) at one read point, as every stage sees it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    """What a device reported."""

    READ = "read"  # a barcode decoded, or a single RFID tag read
    NOREAD = "noread"  # the scan point saw an item but decoded nothing
    SEEN = "seen"  # an RFID tag's pass through a read point, smoothed from many reads


def event_id(device: str, boot: int, seq: int) -> str:
    """World-unique, replay-stable id: the device, its agent's boot epoch, the sequence."""
    return f"{device}:{boot}:{seq}"


@dataclass(frozen=True, slots=True)
class ScanEvent:
    """One event from one device at one read point, with the identifier as read."""

    device: str
    boot: int
    seq: int
    ts: datetime
    site: str
    read_point: str
    kind: EventKind
    code: str | None = None
    symbology: str | None = None
    tracking_id: str | None = None
    epc: str | None = None
    rssi: float | None = None
    antenna: int | None = None
    read_count: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    direction: str | None = None

    @property
    def id(self) -> str:
        return event_id(self.device, self.boot, self.seq)
