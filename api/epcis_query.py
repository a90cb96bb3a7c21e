"""The EPCIS 2.0 query language, for the parts that fit parcels: parameters parsed and
checked, SQL built, pages cut. Pure: no I/O, so every rule is testable on its own.

Supported parameters (GS1 EPCIS 2.0, section 8.2.7.1; lists are pipe-delimited in a
URL, JSON arrays in a named query): `eventType`, `GE_eventTime`, `LT_eventTime`,
`MATCH_epc`, `EQ_bizStep`, `EQ_bizLocation`, `EQ_readPoint`, `EQ_action`. Any other
parameter is refused (QueryParameterException) rather than ignored: a filter that is
silently dropped would return events the caller asked not to see.

Matching is exact: `MATCH_epc` takes the URIs the events carry (`urn:epc:id:...` or
`urn:parceltrack:s10:<S10>`); EPC pattern URIs (`urn:epc:idpat:`) are not supported.

Paging is keyset: events come in (eventTime, scan id) order, and the `nextPageToken`
names the last event of the page and the query it belongs to. A token is stable: it
never expires and always resumes right after that event, so pages already read are
neither repeated nor skipped when events are recorded meanwhile (those later in
event time come on later pages); it is refused with a query other than its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from api.epcis import READ_POINT_URI, S10_URI, SITE_URI, SORTING_STEP
from api.tracking import STAGE_CODES
from parceltrack.i18n import N_
from parceltrack.layout import Stage

EVENT_TYPES = frozenset(
    {"ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent",
     "AssociationEvent"}
)  # fmt: skip
ACTIONS = frozenset({"OBSERVE", "ADD", "DELETE"})
LIST_PARAMETERS = (
    "eventType", "MATCH_epc", "EQ_bizStep", "EQ_bizLocation", "EQ_readPoint", "EQ_action",
)  # fmt: skip
TIME_PARAMETERS = ("GE_eventTime", "LT_eventTime")
QUERY_PARAMETERS = (*LIST_PARAMETERS, *TIME_PARAMETERS)
PAGING_PARAMETERS = ("perPage", "nextPageToken")
PER_PAGE_DEFAULT = 30
PER_PAGE_MAX = 1000
MAX_VALUES = 100  # per list parameter: a longer list is a different kind of request
MAX_VALUE_LENGTH = 500
NOT_A_URI = N_("{value!r} is not a URI")
NOT_A_TIME = N_("{value!r} is not a date-time such as 2026-11-28T09:00:00Z")
NOT_A_TIME_PLUS = N_(
    "{value!r} is not a date-time such as 2026-11-28T09:00:00Z (send the + of an offset as %2B)"
)


class QueryParameterError(ValueError):
    """A parameter the query cannot be run with; the message starts with its name.

    `problem` is a message id (gettext domain `api`) with `{name}` fields filled from
    `params`, so the answer can say it in the caller's language; the parameter's name
    is never translated."""

    def __init__(self, name: str, problem: str, **params: Any) -> None:
        super().__init__(f"{name}: {problem.format(**params)}")
        self.name, self.problem, self.params = name, problem, params


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A checked query. Empty tuples mean "no condition"; `nothing` means a condition
    no parcel event can meet (another event type or action), so no SQL need run."""

    time_from: datetime | None = None
    time_to: datetime | None = None
    tracking_ids: tuple[str, ...] = ()
    epcs: tuple[str, ...] = ()
    match_epc: bool = False
    biz_steps: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    read_points: tuple[str, ...] = ()
    nothing: bool = False
    definition: Mapping[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Identifies the query for its page tokens (the definition, canonically)."""
        canonical = json.dumps(self.definition, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _values(name: str, raw: Sequence[str]) -> list[str]:
    values = [v for item in raw for v in item.split("|")]
    if not values or any(v == "" for v in values):
        raise QueryParameterError(name, N_("empty value; give one or more values separated by |"))
    if len(values) > MAX_VALUES:
        raise QueryParameterError(name, N_("at most {most} values"), most=MAX_VALUES)
    for value in values:
        if len(value) > MAX_VALUE_LENGTH or any(ord(c) < 0x20 for c in value):
            raise QueryParameterError(
                name,
                N_("values are printable text up to {most} characters"),
                most=MAX_VALUE_LENGTH,
            )
    return values


def _time(name: str, raw: Sequence[str]) -> datetime:
    if len(raw) != 1:
        raise QueryParameterError(name, N_("give it once"))
    try:
        when = datetime.fromisoformat(raw[0])
    except ValueError:
        # A '+' sent unencoded in a URL arrives as a space.
        problem = NOT_A_TIME_PLUS if " " in raw[0] else NOT_A_TIME
        raise QueryParameterError(name, problem, value=raw[0][:40]) from None
    if when.tzinfo is None:
        raise QueryParameterError(name, N_("needs a UTC offset (Z or +hh:mm)"))
    return when


def _suffixes(name: str, values: Iterable[str], prefix: str) -> tuple[str, ...]:
    """Our identifiers inside URIs of one kind; other URIs can match no event."""
    for value in values:
        if ":" not in value:
            raise QueryParameterError(name, NOT_A_URI, value=value[:40])
    return tuple(v.removeprefix(prefix) for v in values if v.startswith(prefix))


def parse(params: Mapping[str, Sequence[str]]) -> EventQuery:
    """Check the query parameters (each name with all its values) and build the query."""
    for name in params:
        if name not in QUERY_PARAMETERS:
            supported = ", ".join(QUERY_PARAMETERS)
            raise QueryParameterError(
                name[:60], N_("not supported here; supported: {supported}"), supported=supported
            )
    lists = {n: _values(n, params[n]) for n in LIST_PARAMETERS if n in params}
    times = {n: _time(n, params[n]) for n in TIME_PARAMETERS if n in params}
    definition: dict[str, Any] = {n: sorted(set(v)) for n, v in lists.items()}
    definition.update({n: t.isoformat() for n, t in times.items()})
    nothing = False
    if "eventType" in lists:
        for value in lists["eventType"]:
            if value not in EVENT_TYPES and ":" not in value:
                raise QueryParameterError(
                    "eventType",
                    N_("{value!r} is neither an EPCIS event type nor a URI"),
                    value=value[:40],
                )
        nothing |= "ObjectEvent" not in lists["eventType"]
    if "EQ_action" in lists:
        if unknown := set(lists["EQ_action"]) - ACTIONS:
            raise QueryParameterError(
                "EQ_action", N_("{value!r}: OBSERVE, ADD or DELETE"), value=sorted(unknown)[0][:40]
            )
        nothing |= "OBSERVE" not in lists["EQ_action"]
    epcs = lists.get("MATCH_epc", [])
    for value in epcs:
        if ":" not in value:
            raise QueryParameterError("MATCH_epc", NOT_A_URI, value=value[:40])
    time_from, time_to = times.get("GE_eventTime"), times.get("LT_eventTime")
    sites = _suffixes("EQ_bizLocation", lists.get("EQ_bizLocation", ()), SITE_URI)
    read_points = _suffixes("EQ_readPoint", lists.get("EQ_readPoint", ()), READ_POINT_URI)
    # A location filter naming none of our locations matches nothing.
    nothing |= ("EQ_bizLocation" in lists and not sites) or (
        "EQ_readPoint" in lists and not read_points
    )
    return EventQuery(
        time_from=time_from,
        time_to=time_to,
        tracking_ids=tuple(v.removeprefix(S10_URI) for v in epcs if v.startswith(S10_URI)),
        epcs=tuple(v for v in epcs if v.startswith("urn:epc:id:")),
        match_epc="MATCH_epc" in lists,
        biz_steps=tuple(lists.get("EQ_bizStep", ())),
        sites=sites,
        read_points=read_points,
        nothing=nothing or bool(time_from and time_to and time_from >= time_to),
        definition=definition,
    )


def from_definition(query: Any) -> EventQuery:
    """A named query's JSON body (`{"EQ_bizStep": ["arriving"], ...}`), checked the same
    way as URL parameters: lists as arrays of strings, times as strings."""
    if not isinstance(query, dict):
        raise QueryParameterError("query", N_("must be a JSON object of query parameters"))
    params: dict[str, list[str]] = {}
    for name, value in query.items():
        if isinstance(value, str):
            params[name] = [value]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            params[name] = ["|".join(value)] if name in LIST_PARAMETERS else value
        else:
            raise QueryParameterError(str(name)[:60], N_("must be a string or a list of strings"))
    return parse(params)


def per_page(raw: Sequence[str]) -> int:
    if not raw:
        return PER_PAGE_DEFAULT
    try:
        n = int(raw[0])
    except ValueError:
        raise QueryParameterError(
            "perPage", N_("{value!r} is not a whole number"), value=raw[0][:20]
        ) from None
    if len(raw) != 1 or not 1 <= n <= PER_PAGE_MAX:
        raise QueryParameterError(
            "perPage", N_("give one number from 1 to {most}"), most=PER_PAGE_MAX
        )
    return n


@dataclass(frozen=True, slots=True)
class Position:
    """The last event of a page: where the next page starts after."""

    ts: datetime
    event_id: str


def page_token(position: Position, query: EventQuery) -> str:
    raw = json.dumps([position.ts.isoformat(), position.event_id, query.fingerprint()])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def read_token(raw: Sequence[str], query: EventQuery) -> Position | None:
    """The position a `nextPageToken` names; QueryParameterError for a token that is
    not one of ours or belongs to another query."""
    if not raw:
        return None
    token = raw[0]
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ts, event_id, fingerprint = json.loads(decoded)
        position = Position(datetime.fromisoformat(ts), str(event_id))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise QueryParameterError("nextPageToken", N_("not a token this repository gave")) from None
    if len(raw) != 1 or fingerprint != query.fingerprint() or position.ts.tzinfo is None:
        raise QueryParameterError(
            "nextPageToken", N_("belongs to another query; repeat the query it came with")
        )
    return position


# -- SQL ------------------------------------------------------------------------------

# The business step as api/epcis.py's biz_step decides it, for filtering in SQL.
_BIZ_STEP = f"""CASE
    WHEN rp.stage = '{Stage.DELIVERY.value}' THEN 'accepting'
    WHEN rp.stage = '{Stage.DISPATCH.value}' THEN 'departing'
    WHEN prev.site_id IS DISTINCT FROM s.site_id
         AND coalesce(rp.stage, '') <> ALL(%(coded_stages)s) THEN 'arriving'
    ELSE '{SORTING_STEP}' END"""

_EVENTS = f"""
SELECT * FROM (
    SELECT s.ts, s.event_id, s.tracking_id, s.site_id, s.read_point_id, s.ingested_at,
           CASE WHEN starts_with(p.epc, 'urn:epc:id:') THEN p.epc
                ELSE '{S10_URI}' || s.tracking_id END AS epc_uri,
           {_BIZ_STEP} AS biz_step
    FROM scans s
    LEFT JOIN parcels p ON p.tracking_id = s.tracking_id
    LEFT JOIN read_points rp ON rp.read_point_id = s.read_point_id
    -- The parcel's read before this one: a read at another site (or none) arrives.
    LEFT JOIN LATERAL (
        SELECT q.site_id FROM scans q
        WHERE q.tracking_id = s.tracking_id AND q.kind <> 'noread'
          AND (q.ts, q.event_id) < (s.ts, s.event_id)
        ORDER BY q.ts DESC, q.event_id DESC LIMIT 1
    ) prev ON TRUE
    WHERE s.kind <> 'noread' AND s.tracking_id IS NOT NULL {{inner}}
) e
WHERE TRUE {{outer}}
ORDER BY {{order}} LIMIT %(limit)s
"""


# The stages whose reads have a fixed business step, whatever came before.
_STEP_STAGES = {Stage.DELIVERY.value: "accepting", Stage.DISPATCH.value: "departing"}


def _stages_for(steps: Iterable[str]) -> set[str]:
    """Of the fixed-step stages, those whose step is among `steps`."""
    return {stage for stage, step in _STEP_STAGES.items() if step in steps}


@dataclass(frozen=True, slots=True)
class Feed:
    """Where a subscription's feed stands: events recorded after (record time, scan id),
    up to `until` (events recorded since are left for the next round)."""

    ingested: datetime
    event_id: str
    until: datetime


def events_sql(
    query: EventQuery,
    account: str | None,
    limit: int,
    after: Position | None = None,
    feed: Feed | None = None,
) -> tuple[str, dict[str, Any]]:
    """The statement and its parameters: at most `limit` events of `query`, only those
    of `account`'s parcels when given; in event-time order after `after`, or, for a
    subscription, in record-time order along `feed`."""
    inner, outer = [], []
    params: dict[str, Any] = {
        "coded_stages": sorted(STAGE_CODES),
        "limit": limit,
    }

    def where(sql: str, **values: Any) -> None:
        inner.append(sql)
        params.update(values)

    if account is not None:
        where("AND p.account = %(account)s", account=account)
    if query.time_from is not None:
        where("AND s.ts >= %(time_from)s", time_from=query.time_from)
    if query.time_to is not None:
        where("AND s.ts < %(time_to)s", time_to=query.time_to)
    if query.match_epc:
        # Narrowed by index first (tracking number, or the manifest's EPC), then the
        # URI the event carries is compared exactly.
        # One array, computed once: an OR with a subquery would defeat the index.
        where(
            "AND s.tracking_id = ANY(%(tracking_ids)s::text[] || "
            "ARRAY(SELECT tracking_id FROM parcels WHERE epc = ANY(%(epcs)s::text[])))",
            tracking_ids=list(query.tracking_ids),
            epcs=list(query.epcs),
        )
        outer.append("AND e.epc_uri = ANY(%(epc_uris)s)")
        params["epc_uris"] = [S10_URI + t for t in query.tracking_ids] + list(query.epcs)
    if query.sites:
        where("AND s.site_id = ANY(%(sites)s)", sites=list(query.sites))
    if query.read_points:
        where("AND s.read_point_id = ANY(%(read_points)s)", read_points=list(query.read_points))
    if query.biz_steps:
        # The step needs the parcel's previous read (a lateral lookup per row): the
        # stage alone narrows the rows first, so departures or deliveries are cheap.
        where(
            "AND coalesce(rp.stage, '') <> ALL(%(stages_out)s)",
            stages_out=sorted(_STEP_STAGES.keys() - _stages_for(query.biz_steps)),
        )
        if not {"arriving", SORTING_STEP} & set(query.biz_steps):
            where(
                "AND rp.stage = ANY(%(stages_in)s)",
                stages_in=sorted(_stages_for(query.biz_steps)),
            )
        outer.append("AND e.biz_step = ANY(%(biz_steps)s)")
        params["biz_steps"] = list(query.biz_steps)
    if feed is not None:
        where(
            # The plain range too, so the index on ingested_at is used.
            "AND s.ingested_at >= %(feed_at)s "
            "AND (s.ingested_at, s.event_id) > (%(feed_at)s, %(feed_event)s) "
            "AND s.ingested_at < %(feed_until)s",
            feed_at=feed.ingested,
            feed_event=feed.event_id,
            feed_until=feed.until,
        )
        order = "e.ingested_at, e.event_id"
    else:
        if after is not None:
            where(
                # The plain range too, so partitions and chunks before it are skipped.
                "AND s.ts >= %(after_ts)s AND (s.ts, s.event_id) > (%(after_ts)s, %(after_event)s)",
                after_ts=after.ts,
                after_event=after.event_id,
            )
        order = "e.ts, e.event_id"
    sql = _EVENTS.format(inner=" ".join(inner), outer=" ".join(outer), order=order)
    return sql, params
