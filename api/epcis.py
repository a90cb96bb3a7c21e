"""A parcel's scans as a GS1 EPCIS 2.0 JSON-LD document (ObjectEvents, action OBSERVE).

Identifiers: the parcel is its EPC pure-identity URI when the manifest holds one
(`urn:epc:id:sscc:...`), else `urn:parceltrack:s10:<S10 number>`; read points and
sites are `urn:parceltrack:rp:<id>` and `urn:parceltrack:site:<id>`. Business steps
come from the CBV where one fits (first read at a site: arriving; outbound door:
departing; delivery: accepting) and from our own vocabulary otherwise
(`urn:parceltrack:bizstep:sorting`), since the CBV has no sorting step. Event ids
are name-based UUIDs of the scan's event id, so the same scan always gets the same one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from api.tracking import STAGE_CODES, Scan, upu_codes
from parceltrack.layout import Stage

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
OUR_VOCABULARY = "urn:parceltrack:voc:"
SORTING_STEP = "urn:parceltrack:bizstep:sorting"
S10_URI = "urn:parceltrack:s10:"
READ_POINT_URI = "urn:parceltrack:rp:"
SITE_URI = "urn:parceltrack:site:"
CONTEXT: list[Any] = [EPCIS_CONTEXT, {"pt": OUR_VOCABULARY}]
_EVENT_NAMESPACE = uuid.UUID("6f1c2a7e-5b0e-4d43-9a55-0c1d2f7b9e10")


def parcel_uri(tracking_id: str, epc: str | None) -> str:
    if epc and epc.startswith("urn:epc:id:"):
        return epc
    return f"{S10_URI}{tracking_id}"


def biz_step(stage: str | None, first_at_site: bool) -> str:
    """The event's business step: delivery accepts, the outbound door departs, the
    first read at a site arrives (unless its stage has a UPU code of its own, as an
    office of exchange does), everything else is sorting. The query interface
    (api/epcis_query.py) states the same rule in SQL; a test keeps the two equal."""
    if stage == Stage.DELIVERY:
        return "accepting"
    if stage == Stage.DISPATCH:
        return "departing"
    if first_at_site and (stage is None or stage not in STAGE_CODES):
        return "arriving"
    return SORTING_STEP


def epcis_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def object_event(
    ts: datetime, event_id: str, what: str, step: str, read_point: str, site: str
) -> dict[str, Any]:
    """One scan as an ObjectEvent; its eventID is derived from the scan's own id."""
    return {
        "type": "ObjectEvent",
        "eventTime": epcis_time(ts),
        "eventTimeZoneOffset": "+00:00",
        "eventID": uuid.uuid5(_EVENT_NAMESPACE, event_id).urn,
        "epcList": [what],
        "action": "OBSERVE",
        "bizStep": step,
        "readPoint": {"id": f"{READ_POINT_URI}{read_point}"},
        "bizLocation": {"id": f"{SITE_URI}{site}"},
    }


def document(
    tracking_id: str,
    epc: str | None,
    scans: Sequence[Scan],
    event_ids: Sequence[str],
    now: datetime,
) -> dict[str, Any]:
    """The EPCIS document; `event_ids` are the scans' own ids, in the same order."""
    what = parcel_uri(tracking_id, epc)
    events = []
    previous_site: str | None = None
    for scan, event_id, upu in zip(scans, event_ids, upu_codes(scans), strict=True):
        step = biz_step(scan.stage, scan.site != previous_site)
        previous_site = scan.site
        event = object_event(scan.ts, event_id, what, step, scan.read_point, scan.site)
        if upu is not None:
            event["pt:upuEventCode"] = upu
        events.append(event)
    return envelope("EPCISDocument", {"eventList": events}, now)


def envelope(kind: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An EPCIS document of `kind` (EPCISDocument, EPCISQueryDocument) around `body`."""
    return {
        "@context": CONTEXT,
        "type": kind,
        "schemaVersion": "2.0",
        "creationDate": epcis_time(now),
        "epcisBody": body,
    }


def event_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event of a row of the query interface's SQL (api/epcis_query.py)."""
    return object_event(
        row["ts"], row["event_id"], row["epc_uri"], row["biz_step"],
        row["read_point_id"], row["site_id"],
    )  # fmt: skip


def query_document(
    name: str, events: list[dict[str, Any]], now: datetime, subscription_id: str | None = None
) -> dict[str, Any]:
    """An EPCISQueryDocument holding `events`, the results of query `name`."""
    results: dict[str, Any] = {"queryName": name}
    if subscription_id is not None:
        results["subscriptionID"] = subscription_id
    results["resultsBody"] = {"eventList": events}
    return envelope("EPCISQueryDocument", {"queryResults": results}, now)
