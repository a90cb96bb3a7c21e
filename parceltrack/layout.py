"""Stages and zones of a read point: fixed words that detection, the API and the pages
all act on, so a value outside these enumerations is refused where it enters."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where a parcel is in its journey; stage standards are set per stage."""

    # Inside a sorting centre, in flow order.
    INDUCTION = "induction"
    TUNNEL = "tunnel"  # a scan tunnel: optional, a parcel may bypass it
    SORT = "sort"
    CHUTE = "chute"
    DISPATCH = "dispatch"  # outbound door: the parcel leaves the centre (UPU EDE)
    # Beyond the centre, with their UPU EMSEVT codes (api/tracking.py).
    EXCHANGE_OUT_IN = "exchange_out_in"  # EMB
    EXCHANGE_OUT = "exchange_out"  # EMC
    EXCHANGE_IN = "exchange_in"  # EMD
    EXCHANGE_IN_OUT = "exchange_in_out"  # EMF
    CUSTOMS = "customs"  # EME
    DELIVERY_OFFICE = "delivery_office"  # EMG
    OUT_FOR_DELIVERY = "out_for_delivery"  # EDG
    DELIVERY_ATTEMPT = "delivery_attempt"  # EMH
    DELIVERY = "delivery"  # EMI: the journey ends here


# Stages a centre times (arrival at the stage until the next read point); dispatch is
# the last one inside the centre and has no standard of its own.
CENTRE_STAGES: tuple[Stage, ...] = (
    Stage.INDUCTION,
    Stage.TUNNEL,
    Stage.SORT,
    Stage.CHUTE,
    Stage.DISPATCH,
)
TIMED_STAGES: tuple[Stage, ...] = CENTRE_STAGES[:-1]
# Stages a parcel may skip without being late for the next one (tunnel bypass lines).
SKIPPABLE_STAGES: tuple[Stage, ...] = (Stage.TUNNEL,)


class Zone(StrEnum):
    """The kind of equipment at a read point; the mis-sort checks act on chutes and doors."""

    INDUCTION = "induction"
    TUNNEL = "tunnel"
    SORTER = "sorter"
    CHUTE = "chute"  # the sort plan assigns one per destination
    DOOR = "door"  # outbound door fed by chutes
    # A read point outside a sorting centre (exchange office, delivery office, van).
    FACILITY = "facility"


class Protocol(StrEnum):
    """What a device speaks on its serial line: the edge agent has a driver for each."""

    BARCODE = "barcode"  # ASCII barcode scanner
    MERCURY = "mercury"  # ThingMagic/JADAK Mercury RFID reader
    R2000 = "r2000"  # R2000-module RFID gate


def allowed(enum: type[StrEnum]) -> str:
    """The allowed values, for an error message: 'a, b, c'."""
    return ", ".join(member.value for member in enum)
