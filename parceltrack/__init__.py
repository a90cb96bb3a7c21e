"""What every stage of parceltrack agrees on: identifiers, the scan event, the wire format."""

from parceltrack.errors import InvalidTrackingNumber, ParceltrackError, WireFormatError
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import S10, parse_s10

__all__ = [
    "S10",
    "EventKind",
    "InvalidTrackingNumber",
    "ParceltrackError",
    "ScanEvent",
    "WireFormatError",
    "parse_s10",
]
