"""The ground: what every process of parceltrack agrees on, and nothing else of the
project. Identifiers (UPU S10), the scan event, wire format v1 and its JSON Schema
(`wire`, `schemas/`), topic names and patterns (`topics`), health and agent-status
codecs (`health`), alert kinds (`alerts`), stages and zones (`layout`), settings and
the broker address (`config`), errors, the MQTT client wrapper (`mqtt`) and process
signals (`process`). The names below are the ones most code needs."""

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
