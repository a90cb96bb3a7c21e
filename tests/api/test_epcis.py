"""The EPCIS 2.0 query interface: events, filters, paging, named queries, problem
details, and partners seeing only their own parcels; against a real server and
PostgreSQL, every document validated by the GS1 EPCIS 2.0 JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest

from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind
from storage.migrations import has_timescale
from tests.api.conftest import SCENARIO, SITE, Seeded, SharedApi, _scan, auth

DATA = Path(__file__).resolve().parents[1] / "data"
S10 = "urn:parceltrack:s10:"


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DATA / "epcis-2.0-json-schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@dataclass(frozen=True, slots=True)
class Partners:
    """Two partner accounts of the shared server, with a key each."""

    http: httpx.Client
    seeded: Seeded
    staff: str  # a controller's key
    shop_a: str  # the key of account shop-a: the dispatched and mis-sorted parcels
    shop_b: str  # the key of account shop-b: the parcel in sorting


@pytest.fixture(scope="module")
def partners(shared_api: SharedApi) -> Iterator[Partners]:
    seeded, admin = shared_api.seeded, auth(shared_api.keys["admin"])
    manifest = {m.tracking_id: m for m in SCENARIO.manifest}
    accounts = {
        seeded.dispatched: "shop-a",
        seeded.missorted: "shop-a",
        seeded.in_sorting: "shop-b",
    }
    rows = [
        {"tracking_id": t, "service_class": manifest[t].service_class,
         "destination": manifest[t].destination, "account": account}
        for t, account in accounts.items()
    ]  # fmt: skip
    with httpx.Client(base_url=shared_api.server.url, timeout=30) as http:
        loaded = http.post("/v1/admin/manifests", json=rows, headers=admin)
        assert loaded.status_code == 200 and loaded.json()["accepted"] == 3, loaded.text
        keys = {}
        for account in ("shop-a", "shop-b"):
            made = http.post(
                "/v1/admin/api-keys",
                json={"name": account, "role": "partner", "account": account},
                headers=admin,
            )
            assert made.status_code == 201, made.text
            keys[account] = made.json()["key"]
        yield Partners(http, seeded, shared_api.keys["controller"], keys["shop-a"], keys["shop-b"])


def events(
    p: Partners, key: str, path: str = "/epcis/events", **params: Any
) -> list[dict[str, Any]]:
    """Every event of the query, following the Link header page by page."""
    found: list[dict[str, Any]] = []
    url: str | None = path
    sent: dict[str, Any] | None = params
    while url is not None:
        # params={} would drop a query the URL already has (httpx), hence None.
        response = p.http.get(url, params=sent or None, headers=auth(key))
        assert response.status_code == 200, response.text
        found += response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        url, sent = response.links.get("next", {}).get("url"), None
    return found


def parcels_of(found: list[dict[str, Any]]) -> set[str]:
    return {e["epcList"][0].removeprefix(S10) for e in found}


def test_events_validate_and_equal_each_parcels_own_export(
    partners: Partners, validator: jsonschema.protocols.Validator
) -> None:
    """GET /epcis/events is an EPCISQueryDocument the GS1 schema accepts, with the
    version headers, and its events are exactly the per-parcel exports' events
    (same ids, business steps, places), without our UPU extension."""
    response = partners.http.get("/epcis/events", headers=auth(partners.staff))
    assert response.status_code == 200
    assert response.headers["GS1-EPCIS-Version"] == "2.0.0"
    doc = response.json()
    validator.validate(doc)
    assert doc["type"] == "EPCISQueryDocument"
    assert doc["epcisBody"]["queryResults"]["queryName"] == "SimpleEventQuery"
    seeded = partners.seeded
    expected = []
    for parcel in (seeded.in_sorting, seeded.on_conveyor, seeded.dispatched, seeded.missorted):
        export = partners.http.get(f"/v1/parcels/{parcel}/epcis").json()
        for event in export["epcisBody"]["eventList"]:
            event.pop("pt:upuEventCode", None)
            expected.append(event)
    got = events(partners, partners.staff, perPage=1000)
    key = lambda e: (e["eventTime"], e["eventID"])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
    times = [e["eventTime"] for e in got]
    assert times == sorted(times)  # oldest first


def test_a_partner_sees_only_the_events_of_its_own_account(partners: Partners) -> None:
    """Each partner's key returns only the parcels whose manifest row names its account."""
    seeded = partners.seeded
    assert parcels_of(events(partners, partners.shop_a)) == {seeded.dispatched, seeded.missorted}
    assert parcels_of(events(partners, partners.shop_b)) == {seeded.in_sorting}
    other = events(partners, partners.shop_b, MATCH_epc=S10 + seeded.dispatched)
    assert other == []


def test_paging_walks_every_event_once_with_stable_tokens(partners: Partners) -> None:
    """perPage=2 pages through the Link header give the same events as one page; the
    same token gives the same page again; the last page has no next link."""
    everything = events(partners, partners.staff, perPage=1000)
    assert len(everything) > 4
    paged = events(partners, partners.staff, perPage=2)
    assert paged == everything
    first = partners.http.get("/epcis/events", params={"perPage": 2}, headers=auth(partners.staff))
    following = first.links["next"]["url"]
    again = [partners.http.get(following, headers=auth(partners.staff)) for _ in range(2)]
    assert again[0].json()["epcisBody"] == again[1].json()["epcisBody"]
    assert (
        again[0].json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        == (everything[2:4])
    )
    last = partners.http.get(
        "/epcis/events", params={"perPage": 1000}, headers=auth(partners.staff)
    )
    assert "next" not in last.links


def test_a_page_token_is_refused_with_another_query(partners: Partners) -> None:
    """A token used with other filters is a 400 QueryParameterException naming nextPageToken."""
    first = partners.http.get("/epcis/events", params={"perPage": 1}, headers=auth(partners.staff))
    token = first.links["next"]["url"].split("nextPageToken=")[1]
    response = partners.http.get(
        "/epcis/events",
        params={"perPage": 1, "nextPageToken": token, "EQ_bizStep": "arriving"},
        headers=auth(partners.staff),
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "epcisException:QueryParameterException"
    assert problem["detail"].startswith("nextPageToken:")


def _filtered(everything: list[dict[str, Any]], name: str, value: str) -> list[dict[str, Any]]:
    """What a filter must keep, decided in Python from the unfiltered events."""
    values = value.split("|")
    if name == "MATCH_epc":
        return [e for e in everything if e["epcList"][0] in values]
    if name == "EQ_bizStep":
        return [e for e in everything if e["bizStep"] in values]
    if name == "EQ_bizLocation":
        return [e for e in everything if e["bizLocation"]["id"] in values]
    if name == "EQ_readPoint":
        return [e for e in everything if e["readPoint"]["id"] in values]
    if name == "eventType":
        return [e for e in everything if e["type"] in values]
    raise AssertionError(name)


FILTERS = {
    "bizStep arriving": ("EQ_bizStep", "arriving"),
    "bizStep two": ("EQ_bizStep", "departing|urn:parceltrack:bizstep:sorting"),
    "bizStep departing": ("EQ_bizStep", "departing"),
    "bizStep arriving or departing": ("EQ_bizStep", "arriving|departing"),
    "bizStep not ours": ("EQ_bizStep", "shipping"),
    "bizLocation": ("EQ_bizLocation", f"urn:parceltrack:site:{SITE}"),
    "bizLocation elsewhere": ("EQ_bizLocation", "urn:parceltrack:site:NOWHERE"),
    "readPoint": ("EQ_readPoint", f"urn:parceltrack:rp:{SITE}-TUN1|urn:parceltrack:rp:{SITE}-SRT1"),
    "foreign readPoint": ("EQ_readPoint", "urn:epc:id:sgln:0614141.07346.1234"),
    "object events": ("eventType", "ObjectEvent"),
    "aggregation events": ("eventType", "AggregationEvent"),
}


@pytest.mark.parametrize("case", sorted(FILTERS))
def test_filters_keep_exactly_the_matching_events(partners: Partners, case: str) -> None:
    """Each filter returns what filtering the whole event list in Python keeps."""
    name, value = FILTERS[case]
    everything = events(partners, partners.staff, perPage=1000)
    assert events(partners, partners.staff, **{name: value}) == _filtered(everything, name, value)


def test_epc_and_time_filters(partners: Partners) -> None:
    """MATCH_epc picks one parcel's events; GE_/LT_eventTime bound them, LT exclusive."""
    seeded = partners.seeded
    uri = S10 + seeded.dispatched
    mine = events(partners, partners.staff, MATCH_epc=f"{uri}|urn:epc:id:sscc:0614141.1234567890")
    assert mine and parcels_of(mine) == {seeded.dispatched}
    times = sorted(datetime.fromisoformat(e["eventTime"]) for e in mine)
    middle = events(
        partners,
        partners.staff,
        MATCH_epc=uri,
        GE_eventTime=times[1].isoformat(),
        LT_eventTime=times[-1].isoformat(),
    )
    assert [datetime.fromisoformat(e["eventTime"]) for e in middle] == times[1:-1]
    later = events(
        partners, partners.staff, GE_eventTime=(times[-1] + timedelta(days=1)).isoformat()
    )
    assert later == []


BAD = {
    "unknown parameter": ({"EQ_disposition": "in_transit"}, "EQ_disposition"),
    "time without offset": ({"GE_eventTime": "2026-11-28T09:00:00"}, "GE_eventTime"),
    "not a time": ({"LT_eventTime": "yesterday"}, "LT_eventTime"),
    "empty list item": ({"EQ_bizStep": "arriving|"}, "EQ_bizStep"),
    "not a uri": ({"MATCH_epc": "RR473124829GB"}, "MATCH_epc"),
    "bad event type": ({"eventType": "Parcel"}, "eventType"),
    "bad action": ({"EQ_action": "LOOK"}, "EQ_action"),
    "perPage zero": ({"perPage": "0"}, "perPage"),
    "perPage text": ({"perPage": "ten"}, "perPage"),
    "perPage huge": ({"perPage": "100000"}, "perPage"),
    "forged token": ({"nextPageToken": "not-a-token"}, "nextPageToken"),
    "control character": ({"EQ_readPoint": "urn:x:\x01"}, "EQ_readPoint"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_parameters_get_a_problem_naming_them(partners: Partners, case: str) -> None:
    """A wrong parameter is a 400 RFC 7807 QueryParameterException whose detail names it."""
    params, name = BAD[case]
    response = partners.http.get("/epcis/events", params=params, headers=auth(partners.staff))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "epcisException:QueryParameterException"
    assert problem["status"] == 400 and problem["title"]
    assert problem["detail"].startswith(f"{name}:")


def test_named_queries_are_stored_run_and_kept_per_owner(
    partners: Partners, validator: jsonschema.protocols.Validator
) -> None:
    """A partner names a query, runs it (its own parcels only, the name in the document),
    lists it; the same name again is 409; another partner does not see it (404)."""
    http, seeded = partners.http, partners.seeded
    body = {"name": "departures", "query": {"EQ_bizStep": ["departing"]}}
    made = http.post("/epcis/queries", json=body, headers=auth(partners.shop_a))
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == "/epcis/queries/departures"
    again = http.post("/epcis/queries", json=body, headers=auth(partners.shop_a))
    assert again.status_code == 409
    assert again.json()["type"] == "epcisException:ResourceAlreadyExistsException"
    run = http.get("/epcis/queries/departures/events", headers=auth(partners.shop_a))
    assert run.status_code == 200
    doc = run.json()
    validator.validate(doc)
    assert doc["epcisBody"]["queryResults"]["queryName"] == "departures"
    found = doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert [e["epcList"][0] for e in found] == [S10 + seeded.dispatched]
    assert {e["bizStep"] for e in found} == {"departing"}
    listed = http.get("/epcis/queries", headers=auth(partners.shop_a)).json()
    assert {"name": "departures", "query": {"EQ_bizStep": ["departing"]}} in listed
    staff = http.get("/epcis/queries", headers=auth(partners.staff)).json()
    assert "departures" not in {q["name"] for q in staff}
    for path in ("/epcis/queries/departures", "/epcis/queries/departures/events"):
        hidden = http.get(path, headers=auth(partners.shop_b))
        assert hidden.status_code == 404
        assert hidden.json()["type"] == "epcisException:NoSuchNameException"
    # The other partner may use the same name for a query of its own.
    theirs = http.post("/epcis/queries", json=body, headers=auth(partners.shop_b))
    assert theirs.status_code == 201
    own = http.get("/epcis/queries/departures/events", headers=auth(partners.shop_b)).json()
    assert own["epcisBody"]["queryResults"]["resultsBody"]["eventList"] == []


def test_an_empty_named_query_is_all_of_a_partners_parcels(partners: Partners) -> None:
    """A named query without conditions gives a partner every event of its own parcels,
    a page at a time."""
    http = partners.http
    made = http.post(
        "/epcis/queries", json={"name": "all", "query": {}}, headers=auth(partners.shop_a)
    )
    assert made.status_code == 201
    first = http.get(
        "/epcis/queries/all/events", params={"perPage": 3}, headers=auth(partners.shop_a)
    )
    assert first.status_code == 200 and "next" in first.links
    paged = events(partners, partners.shop_a, "/epcis/queries/all/events", perPage=3)
    assert paged == events(partners, partners.shop_a)
    assert len(paged) > 3


BAD_DEFINITIONS = {
    "no name": ({"query": {}}, "ValidationException", "name:"),
    "bad name": ({"name": "a b", "query": {}}, "ValidationException", "name:"),
    "extra field": ({"name": "x", "query": {}, "owner": "me"}, "ValidationException", "owner:"),
    "query not an object": ({"name": "x", "query": []}, "QueryValidationException", "query."),
    "unknown parameter": (
        {"name": "x", "query": {"EQ_quantity": ["3"]}},
        "QueryValidationException",
        "query.EQ_quantity:",
    ),
    "list of numbers": (
        {"name": "x", "query": {"EQ_bizStep": [1]}},
        "QueryValidationException",
        "query.EQ_bizStep:",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DEFINITIONS))
def test_bad_named_queries_get_a_problem_naming_the_field(partners: Partners, case: str) -> None:
    """A named query that cannot be stored is a 400 problem whose detail names the field."""
    body, kind, start = BAD_DEFINITIONS[case]
    response = partners.http.post("/epcis/queries", json=body, headers=auth(partners.staff))
    assert response.status_code == 400, response.text
    assert response.json()["type"] == f"epcisException:{kind}"
    assert response.json()["detail"].startswith(start)


def test_a_body_that_is_not_json_is_a_problem(partners: Partners) -> None:
    """Bytes that are not JSON are a 400 ValidationException, not a 5xx."""
    response = partners.http.post("/epcis/queries", content=b"\xff{", headers=auth(partners.staff))
    assert response.status_code == 400
    assert response.json()["detail"] == "body: not JSON"


def test_a_token_resumes_after_its_event_while_new_events_arrive(partners: Partners) -> None:
    """Events recorded between two pages neither repeat the first page nor get lost:
    the token resumes after its event and the new read comes on a later page."""
    seeded, staff = partners.seeded, partners.staff
    first = partners.http.get("/epcis/events", params={"perPage": 2}, headers=auth(staff))
    seen = first.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    new = _scan(seeded.accepted, f"{SITE}-IND1", 950, datetime.now(UTC), EventKind.READ)
    with psycopg.connect(seeded.dsn) as conn, conn.transaction():
        write_scans(conn, [new], ScanPartitions(has_timescale(conn)))
    rest = events(partners, staff, first.links["next"]["url"])
    assert not {e["eventID"] for e in seen} & {e["eventID"] for e in rest}
    assert rest[-1]["epcList"] == [S10 + seeded.accepted]
    assert seen + rest == events(partners, staff, perPage=1000)


@pytest.mark.parametrize(
    ("accept", "status"),
    [("application/xml", 406), ("text/html, application/xml;q=0.9", 406),
     ("application/json", 200), ("application/ld+json", 200), ("text/html, */*;q=0.8", 200)],
)  # fmt: skip
def test_documents_are_json_and_other_accept_headers_get_406(
    partners: Partners, accept: str, status: int
) -> None:
    """An Accept header that rules out JSON is a 406 NotAcceptableException problem."""
    headers = {**auth(partners.staff), "Accept": accept}
    response = partners.http.get("/epcis/events", headers=headers)
    assert response.status_code == status, response.text
    if status == 406:
        assert response.json()["type"] == "epcisException:NotAcceptableException"


def test_a_parcel_with_an_epc_uri_is_matched_by_it(partners: Partners) -> None:
    """A parcel whose manifest holds an EPC URI carries it in epcList, MATCH_epc finds
    its events by it (not by its S10 URI), as in its own export."""
    seeded, epc = partners.seeded, "urn:epc:id:sscc:0614141.1234567890"
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        before = conn.execute(
            "SELECT epc FROM parcels WHERE tracking_id = %s", (seeded.on_conveyor,)
        ).fetchone()
        conn.execute(
            "UPDATE parcels SET epc = %s WHERE tracking_id = %s", (epc, seeded.on_conveyor)
        )
    try:
        found = events(partners, partners.staff, MATCH_epc=epc)
        export = partners.http.get(f"/v1/parcels/{seeded.on_conveyor}/epcis").json()
        assert found and {e["epcList"][0] for e in found} == {epc}
        assert [e["eventID"] for e in found] == [
            e["eventID"] for e in export["epcisBody"]["eventList"]
        ]
        assert events(partners, partners.staff, MATCH_epc=S10 + seeded.on_conveyor) == []
    finally:
        with psycopg.connect(seeded.dsn, autocommit=True) as conn:
            conn.execute(  # as it was, for the module's other tests
                "UPDATE parcels SET epc = %s WHERE tracking_id = %s",
                (before[0] if before else None, seeded.on_conveyor),
            )
