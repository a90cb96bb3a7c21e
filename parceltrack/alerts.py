"""Alert kinds: what detection raises and every reader of alerts (API, pages,
notifications, dashboards) must understand. Each reader maps every member; a contract
test walks this enumeration, so a new kind cannot be missed by one of them."""

from __future__ import annotations

from enum import StrEnum


class AlertKind(StrEnum):
    """An alert's kind as stored in `alerts.kind` and published on MQTT."""

    # About one parcel.
    DELAY = "delay"  # longer at its stage than the stage standard allows
    MISSING = "missing"  # not seen within the missing window after its deadline: lost?
    LATE = "late"  # can no longer meet its delivery standard, even at median stage times
    MISSORT = "missort"  # left by a chute or door the sort plan does not assign
    MISROUTE = "misroute"  # reached a facility that is not on its way
    # About one device.
    SILENCE = "silence"  # a device has sent nothing for its silence window
    NOREAD = "noread"  # a device's no-read rate is above its threshold


PARCEL_KINDS: tuple[AlertKind, ...] = (
    AlertKind.DELAY,
    AlertKind.MISSING,
    AlertKind.LATE,
    AlertKind.MISSORT,
    AlertKind.MISROUTE,
)
DEVICE_KINDS: tuple[AlertKind, ...] = (AlertKind.SILENCE, AlertKind.NOREAD)
# Kinds that mean "late but on its way": a customer sees `delayed`, not `exception`.
DELAY_KINDS: frozenset[AlertKind] = frozenset({AlertKind.DELAY, AlertKind.LATE})
