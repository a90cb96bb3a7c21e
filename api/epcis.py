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
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from api.tracking import Scan, upu_codes
from parceltrack.layout import Stage

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
OUR_VOCABULARY = "urn:parceltrack:voc:"
SORTING_STEP = "urn:parceltrack:bizstep:sorting"
_EVENT_NAMESPACE = uuid.UUID("6f1c2a7e-5b0e-4d43-9a55-0c1d2f7b9e10")


def parcel_uri(tracking_id: str, epc: str | None) -> str:
    if epc and epc.startswith("urn:epc:id:"):
        return epc
    return f"urn:parceltrack:s10:{tracking_id}"


def _biz_step(scan: Scan, upu: str | None) -> str:
    if scan.stage == Stage.DELIVERY:
        return "accepting"
    if scan.stage == Stage.DISPATCH:
        return "departing"
    if upu == "EDD":
        return "arriving"
    return SORTING_STEP


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
    for scan, event_id, upu in zip(scans, event_ids, upu_codes(scans), strict=True):
        event: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventTime": scan.ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "eventTimeZoneOffset": "+00:00",
            "eventID": uuid.uuid5(_EVENT_NAMESPACE, event_id).urn,
            "epcList": [what],
            "action": "OBSERVE",
            "bizStep": _biz_step(scan, upu),
            "readPoint": {"id": f"urn:parceltrack:rp:{scan.read_point}"},
            "bizLocation": {"id": f"urn:parceltrack:site:{scan.site}"},
        }
        if upu is not None:
            event["pt:upuEventCode"] = upu
        events.append(event)
    return {
        "@context": [EPCIS_CONTEXT, {"pt": OUR_VOCABULARY}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "epcisBody": {"eventList": events},
    }
