"""The EPCIS query language's pure parts: parameters, named-query definitions, page
tokens, and the business-step rule that SQL and Python both state."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from api.epcis import SORTING_STEP, biz_step
from api.epcis_query import (
    _BIZ_STEP,
    PER_PAGE_MAX,
    Position,
    QueryParameterError,
    from_definition,
    page_token,
    parse,
    per_page,
    read_token,
)
from api.tracking import STAGE_CODES
from parceltrack.layout import Stage


def test_parameters_become_conditions() -> None:
    """URIs of ours become identifiers, lists split on |, times keep their offset."""
    query = parse(
        {
            "MATCH_epc": ["urn:parceltrack:s10:RR473124829GB|urn:epc:id:sscc:0614141.1234567890"],
            "EQ_bizLocation": ["urn:parceltrack:site:LHR1"],
            "EQ_readPoint": ["urn:parceltrack:rp:LHR1-IND1", "urn:parceltrack:rp:LHR1-TUN1"],
            "GE_eventTime": ["2026-11-28T09:00:00+08:00"],
            "EQ_bizStep": ["arriving"],
        }
    )
    assert query.tracking_ids == ("RR473124829GB",)
    assert query.epcs == ("urn:epc:id:sscc:0614141.1234567890",)
    assert query.sites == ("LHR1",)
    assert query.read_points == ("LHR1-IND1", "LHR1-TUN1")
    assert query.time_from == datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    assert query.biz_steps == ("arriving",) and not query.nothing


@pytest.mark.parametrize(
    "params",
    [
        {"eventType": ["AggregationEvent|TransactionEvent"]},
        {"EQ_action": ["ADD"]},
        {"EQ_bizLocation": ["urn:epc:id:sgln:0614141.07346.1234"]},
        {"GE_eventTime": ["2026-11-28T10:00:00Z"], "LT_eventTime": ["2026-11-28T10:00:00Z"]},
    ],
    ids=["other event types", "other action", "foreign location", "empty time range"],
)
def test_conditions_no_parcel_event_meets_need_no_sql(params: dict[str, list[str]]) -> None:
    """Another event type or action, locations not ours, an empty range: nothing matches."""
    assert parse(params).nothing


def test_a_named_query_is_checked_like_url_parameters() -> None:
    """A JSON definition gives the same query as the same URL parameters."""
    url = parse({"EQ_bizStep": ["arriving|departing"], "LT_eventTime": ["2026-11-28T10:00:00Z"]})
    named = from_definition(
        {"EQ_bizStep": ["arriving", "departing"], "LT_eventTime": "2026-11-28T10:00:00Z"}
    )
    assert named == url
    with pytest.raises(QueryParameterError, match=r"^EQ_bizStep:"):
        from_definition({"EQ_bizStep": "arriving|"})


def test_page_tokens_round_trip_and_belong_to_their_query() -> None:
    """A token names its position; with another query, or altered, it is refused."""
    query, other = parse({}), parse({"EQ_bizStep": ["arriving"]})
    position = Position(datetime(2026, 11, 28, 9, 0, 1, 5, tzinfo=UTC), "dev:1:42")
    token = page_token(position, query)
    assert read_token([token], query) == position
    assert read_token([], query) is None
    with pytest.raises(QueryParameterError, match="another query"):
        read_token([token], other)
    with pytest.raises(QueryParameterError, match=r"^nextPageToken:"):
        read_token([token[:-3] + "!!!"], query)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [([], 30), (["1"], 1), ([str(PER_PAGE_MAX)], PER_PAGE_MAX), (["0"], None), (["-1"], None),
     ([str(PER_PAGE_MAX + 1)], None), (["2.5"], None), (["5", "6"], None)],
)  # fmt: skip
def test_per_page_bounds(raw: list[str], ok: int | None) -> None:
    """perPage defaults to 30 and takes one whole number from 1 to the maximum."""
    if ok is None:
        with pytest.raises(QueryParameterError, match=r"^perPage:"):
            per_page(raw)
    else:
        assert per_page(raw) == ok


STAGES = [None, *[s.value for s in Stage]]


def test_the_sql_business_step_is_the_python_one(db_dsn: str) -> None:
    """For every stage (and none), first read at a site or not, PostgreSQL's CASE in the
    query interface decides the business step exactly as api/epcis.py's biz_step."""
    sql = (
        "SELECT " + _BIZ_STEP + " FROM (VALUES (%(stage)s::text)) AS rp (stage), "
        "(VALUES (%(prev)s::text)) AS prev (site_id), (VALUES ('HERE'::text)) AS s (site_id)"
    )
    seen = set()
    with psycopg.connect(db_dsn) as conn:
        for stage in STAGES:
            for first, prev in ((True, None), (True, "ELSEWHERE"), (False, "HERE")):
                params = {"stage": stage, "prev": prev, "coded_stages": sorted(STAGE_CODES)}
                row = conn.execute(sql.encode(), params).fetchone()
                assert row is not None
                assert row[0] == biz_step(stage, first), (stage, prev)
                seen.add(row[0])
    assert seen == {"arriving", "departing", "accepting", SORTING_STEP}


def test_an_unencoded_plus_in_a_time_gets_a_hint() -> None:
    """A time whose + offset was sent unencoded (so arrives as a space) is refused with
    the fix in the message; the encoded one is accepted."""
    with pytest.raises(QueryParameterError, match="%2B"):
        parse({"GE_eventTime": ["2026-11-28T09:00:00 08:00"]})
    assert parse({"GE_eventTime": ["2026-11-28T09:00:00+08:00"]}).time_from is not None
