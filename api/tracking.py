"""What a customer is told about a parcel, derived purely from its manifest row and scans.

No I/O here: the handlers fetch rows and these functions decide the status, the UPU
event codes, the conveyor segment and the ETA, so the rules are testable on their own.

Status, in order of precedence:

| status | when |
| --- | --- |
| delivered | a scan at a read point whose stage is `delivery` |
| exception | an open parcel alert other than a delay (mis-sort, mis-route, missing) |
| delayed | an open delay alert (`parceltrack.alerts.DELAY_KINDS`: `delay`, `late`), an |
|         | ETA past the due time, or longer at its stage than the stage standard allows |
| dispatched | last scan at a `dispatch` stage (outbound door) |
| sorted | last scan at a `chute` stage |
| in_sorting | any other scan (induction, tunnel, sorter ...) |
| accepted | known from the manifest, never scanned |

UPU event codes (EMSEVT) on timeline events:

| code | event | rule |
| --- | --- | --- |
| EMA | posting / acceptance | the manifest's `accepted_at` |
| EDD | item into sorting centre | first scan at a site (after a scan elsewhere, or none) |
| EDE | item out of sorting centre | first scan at a `dispatch` stage of that visit |
| EMB / EMC | at / from outward office of exchange | stages `exchange_out_in` / `exchange_out` |
| EMD / EMF | at / from inward office of exchange | stages `exchange_in` / `exchange_in_out` |
| EME | held by customs | stage `customs` |
| EMG | arrival at delivery office | stage `delivery_office` |
| EDG | out for delivery | stage `out_for_delivery` |
| EMH | unsuccessful delivery attempt | stage `delivery_attempt` |
| EMI | final delivery | stage `delivery` |

Internal sorting-centre scans (tunnel, sorter, chute) carry no UPU code.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from parceltrack.alerts import DELAY_KINDS, DEVICE_KINDS, PARCEL_KINDS
from parceltrack.layout import Stage, Zone

Status = Literal[
    "accepted", "in_sorting", "sorted", "dispatched", "delayed", "exception", "delivered"
]
STATUSES: tuple[Status, ...] = (
    "accepted", "in_sorting", "sorted", "dispatched", "delayed", "exception", "delivered",
)  # fmt: skip

# What an open alert of each kind tells the customer: late but on its way, or something
# went wrong. Device alerts are never about one parcel, so they tell nothing. Keyed by
# AlertKind; typed by str so the kinds read from the database look up directly.
ALERT_STATUS: Mapping[str, Status | None] = {
    **{kind: "delayed" if kind in DELAY_KINDS else "exception" for kind in PARCEL_KINDS},
    **dict.fromkeys(DEVICE_KINDS, None),
}

UPU_EVENTS: Mapping[str, str] = {
    "EMA": "Posting/collection",
    "EMB": "Arrival at outward office of exchange",
    "EMC": "Departure from outward office of exchange",
    "EMD": "Arrival at inward office of exchange",
    "EME": "Held by customs",
    "EMF": "Departure from inward office of exchange",
    "EDD": "Item into sorting centre",
    "EDE": "Item out of sorting centre",
    "EMG": "Arrival at delivery office",
    "EDG": "Item out for delivery",
    "EMH": "Unsuccessful delivery attempt",
    "EMI": "Final delivery",
}

# Keyed by Stage; typed by str so the stages read from the database look up directly.
STAGE_CODES: Mapping[str, str] = {
    Stage.EXCHANGE_OUT_IN: "EMB",
    Stage.EXCHANGE_OUT: "EMC",
    Stage.EXCHANGE_IN: "EMD",
    Stage.EXCHANGE_IN_OUT: "EMF",
    Stage.CUSTOMS: "EME",
    Stage.DELIVERY_OFFICE: "EMG",
    Stage.OUT_FOR_DELIVERY: "EDG",
    Stage.DELIVERY_ATTEMPT: "EMH",
    Stage.DELIVERY: "EMI",
}


@dataclass(frozen=True, slots=True)
class Scan:
    """One read of the parcel, with what the read point table says about it."""

    ts: datetime
    site: str
    read_point: str
    device: str
    kind: str
    zone: str | None
    stage: str | None
    description: str | None
    next_read_point: str | None = None
    next_description: str | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """The conveyor between two read points the parcel is travelling on."""

    from_read_point: str
    from_description: str | None
    to_read_point: str
    to_description: str | None
    since: datetime
    expected_by: datetime | None


@dataclass(frozen=True, slots=True)
class Promise:
    """Delivery standard, due time, ETA and whether the parcel is on time."""

    delivery_days: int | None
    due: datetime | None
    eta: datetime | None
    on_time: bool | None
    eta_source: str


def add_working_days(start: datetime, days: int) -> datetime:
    """J+n: n working days (Monday to Friday, in UTC) after `start`, same time of day.

    The SQL function `add_working_days` (migration 50) computes the same; a test
    keeps the two equal.
    """
    current, left = start, days
    while left > 0:
        current += timedelta(days=1)
        if current.astimezone(UTC).isoweekday() < 6:
            left -= 1
    return current


def upu_codes(scans: Sequence[Scan]) -> list[str | None]:
    """The UPU event code of each scan, or None for internal sorting-centre scans."""
    codes: list[str | None] = []
    previous_site: str | None = None
    dispatched_here = False
    for scan in scans:
        code: str | None = None
        if scan.site != previous_site:
            dispatched_here = False
            code = "EDD"
        if scan.stage is not None and scan.stage in STAGE_CODES:
            code = STAGE_CODES[scan.stage]
        elif scan.stage == Stage.DISPATCH and not dispatched_here:
            dispatched_here = True
            code = "EDE"
        previous_site = scan.site
        codes.append(code)
    return codes


def segment(scans: Sequence[Scan], standard_s: float | None) -> Segment | None:
    """The conveyor the parcel is on: from its last read point to that point's next one."""
    if not scans:
        return None
    last = scans[-1]
    if last.next_read_point is None:
        return None
    return Segment(
        from_read_point=last.read_point,
        from_description=last.description,
        to_read_point=last.next_read_point,
        to_description=last.next_description,
        since=last.ts,
        expected_by=last.ts + timedelta(seconds=standard_s) if standard_s else None,
    )


def lateness(
    scans: Sequence[Scan], standards: Mapping[tuple[str, str], float], now: datetime
) -> timedelta:
    """How far behind the stage standards the parcel is: the sum of the overruns
    of each stage it passed, and of the stage it is at now (unless delivered)."""
    late = timedelta()
    for here, there in itertools.pairwise(scans):
        limit = standards.get((here.site, here.stage or ""))
        if limit is not None:
            late += max(timedelta(), there.ts - here.ts - timedelta(seconds=limit))
    if scans and scans[-1].stage != Stage.DELIVERY:
        limit = standards.get((scans[-1].site, scans[-1].stage or ""))
        if limit is not None:
            late += max(timedelta(), now - scans[-1].ts - timedelta(seconds=limit))
    return late


def promise(
    accepted_at: datetime | None,
    delivery_days: int | None,
    scans: Sequence[Scan],
    standards: Mapping[tuple[str, str], float],
    now: datetime,
) -> Promise:
    """Due time from the delivery standard; ETA = due + the lateness against stage
    standards so far, never earlier than now while not delivered (the fallback used
    until detection publishes its own ETA)."""
    delivered = next((s.ts for s in scans if s.stage == Stage.DELIVERY), None)
    if accepted_at is None or delivery_days is None:
        return Promise(delivery_days, None, delivered, None, "unknown")
    due = add_working_days(accepted_at, delivery_days)
    if delivered is not None:
        return Promise(delivery_days, due, delivered, delivered <= due, "delivered")
    eta = max(due + lateness(scans, standards, now), now)
    return Promise(delivery_days, due, eta, eta <= due, "stage_standards")


def status(
    scans: Sequence[Scan],
    open_alert_kinds: Sequence[str],
    promised: Promise,
    standards: Mapping[tuple[str, str], float],
    now: datetime,
) -> Status:
    """The customer-facing status; the module docstring gives the rules."""
    if any(s.stage == Stage.DELIVERY for s in scans):
        return "delivered"
    # A kind this version does not know is shown as the exception it may well be.
    told = {ALERT_STATUS.get(kind, "exception") for kind in open_alert_kinds}
    if "exception" in told:
        return "exception"
    if "delayed" in told or promised.on_time is False:
        return "delayed"
    if not scans:
        return "accepted"
    last = scans[-1]
    limit = standards.get((last.site, last.stage or ""))
    if limit is not None and now - last.ts > timedelta(seconds=limit):
        return "delayed"
    if last.stage == Stage.DISPATCH:
        return "dispatched"
    if last.stage == Stage.CHUTE or last.zone == Zone.CHUTE:
        return "sorted"
    return "in_sorting"


def scan_from_row(row: Mapping[str, Any]) -> Scan:
    return Scan(
        ts=row["ts"],
        site=row["site_id"],
        read_point=row["read_point_id"],
        device=row["device_id"],
        kind=row["kind"],
        zone=row.get("zone"),
        stage=row.get("stage"),
        description=row.get("description"),
        next_read_point=row.get("next_read_point_id"),
        next_description=row.get("next_description"),
    )
