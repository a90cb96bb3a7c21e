"""EPCIS problem details in the caller's language: `type` and `status` are the GS1
binding's whatever the language, while `title` and `detail` follow ?lang=, then
Accept-Language, then the configured default; the detail still starts with the name
of the parameter or member it is about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.conftest import SharedApi, auth

ZH_HEADER = {"Accept-Language": "zh-CN,zh;q=0.9"}


@dataclass(frozen=True, slots=True)
class EpcisRefusal:
    """One refused EPCIS request and its problem in both languages."""

    method: str
    path: str
    role: str | None  # whose key is sent; None: no key
    status: int
    kind: str
    english: tuple[str, str]  # title, detail
    chinese: tuple[str, str]
    params: dict[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None


REFUSALS = {
    "unknown-parameter": EpcisRefusal(
        "GET",
        "/epcis/events",
        "controller",
        400,
        "QueryParameterException",
        ("Invalid query parameter", "EQ_action: 'LOOK': OBSERVE, ADD or DELETE"),
        ("查询参数无效", "EQ_action: 'LOOK'：应为 OBSERVE、ADD 或 DELETE"),
        params={"EQ_action": "LOOK"},
    ),
    "time-without-offset": EpcisRefusal(
        "GET",
        "/epcis/events",
        "controller",
        400,
        "QueryParameterException",
        ("Invalid query parameter", "GE_eventTime: needs a UTC offset (Z or +hh:mm)"),
        ("查询参数无效", "GE_eventTime: 需要 UTC 时差（Z 或 +hh:mm）"),
        params={"GE_eventTime": "2026-11-28T09:00:00"},
    ),
    "per-page-too-big": EpcisRefusal(
        "GET",
        "/epcis/events",
        "controller",
        400,
        "QueryParameterException",
        ("Invalid query parameter", "perPage: give one number from 1 to 1000"),
        ("查询参数无效", "perPage: 请给出一个 1 到 1000 之间的数"),
        params={"perPage": "100000"},
    ),
    "no-key": EpcisRefusal(
        "GET",
        "/epcis/events",
        None,
        401,
        "SecurityException",
        (
            "Unauthorised request",
            "this needs an API key: a partner's, or a controller's or above",
        ),
        ("请求未获授权", "此操作需要 API 密钥：合作伙伴的，或 controller 及以上角色的"),
    ),
    "unknown-key": EpcisRefusal(
        "GET",
        "/epcis/events",
        None,
        401,
        "SecurityException",
        ("Unauthorised request", "unknown or revoked API key"),
        ("请求未获授权", "API 密钥未知或已被吊销"),
        headers=auth("pt_not-a-key"),
    ),
    "customer-key": EpcisRefusal(
        "GET",
        "/epcis/events",
        "customer",
        403,
        "SecurityException",
        (
            "Access to resource forbidden",
            "role customer may not query EPCIS events; needs partner or controller",
        ),
        ("禁止访问该资源", "角色 customer 无权查询 EPCIS 事件；需要 partner 或 controller"),
    ),
    "xml-only": EpcisRefusal(
        "GET",
        "/epcis/events",
        "controller",
        406,
        "NotAcceptableException",
        (
            "Not acceptable",
            "Accept: this repository answers application/json (EPCIS 2.0 JSON) only",
        ),
        ("无法提供可接受的格式", "Accept: 本存储库只以 application/json（EPCIS 2.0 JSON）作答"),
        headers={"Accept": "application/xml"},
    ),
    "body-not-json": EpcisRefusal(
        "POST",
        "/epcis/queries",
        "controller",
        400,
        "ValidationException",
        ("Invalid request body", "body: not JSON"),
        ("请求正文无效", "body: 不是 JSON"),
        content=b"\xff{",
    ),
    "query-unknown-parameter": EpcisRefusal(
        "POST",
        "/epcis/queries",
        "controller",
        400,
        "QueryValidationException",
        ("Invalid query", "query.EQ_bizStep: must be a string or a list of strings"),
        ("查询无效", "query.EQ_bizStep: 必须是字符串或字符串列表"),
        json={"name": "numbers", "query": {"EQ_bizStep": [1]}},
    ),
    "unknown-named-query": EpcisRefusal(
        "GET",
        "/epcis/queries/nothing-by-this-name/events",
        "controller",
        404,
        "NoSuchNameException",
        ("Resource not found", "no named query 'nothing-by-this-name'"),
        ("未找到资源", "没有命名查询 'nothing-by-this-name'"),
    ),
    "scheduled-subscription": EpcisRefusal(
        "POST",
        "/epcis/queries/lang-test/subscriptions",
        "controller",
        400,
        "SubscriptionControlsException",
        (
            "Subscription error",
            "stream: set it to true; scheduled subscriptions are not offered here",
        ),
        ("订阅错误", "stream: 请设为 true；此处不提供定时订阅"),
        json={"dest": "https://example.com/epcis", "signatureToken": "t" * 20, "stream": False},
    ),
    "existing-named-query": EpcisRefusal(
        "POST",
        "/epcis/queries",
        "controller",
        409,
        "ResourceAlreadyExistsException",
        ("Resource already exists", "a named query 'lang-test' exists"),
        ("资源已存在", "命名查询 'lang-test' 已存在"),
        json={"name": "lang-test", "query": {}},
    ),
}


@pytest.fixture(scope="module")
def epcis(shared_api: SharedApi) -> SharedApi:
    """The shared server with the staff's named query `lang-test`."""
    made = httpx.post(
        shared_api.server.url + "/epcis/queries",
        json={"name": "lang-test", "query": {}},
        headers=auth(shared_api.keys["controller"]),
        timeout=10,
    )
    assert made.status_code in (201, 409), made.text
    return shared_api


def _send(api: SharedApi, refusal: EpcisRefusal, how: str) -> httpx.Response:
    headers = dict(refusal.headers or {})
    if refusal.role is not None:
        headers.update(auth(api.keys[refusal.role]))
    params = dict(refusal.params or {})
    if how == "query":
        params["lang"] = "zh-CN"
    elif how == "header":
        headers.update(ZH_HEADER)
    return httpx.request(
        refusal.method,
        api.server.url + refusal.path,
        params=params,
        headers=headers,
        json=refusal.json,
        content=refusal.content,
        timeout=10,
    )


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_problem_details_keep_their_type_and_speak_the_callers_language(
    epcis: SharedApi, case: str
) -> None:
    """English by default; Chinese title and detail by ?lang=zh-CN and by Accept-Language,
    with the same type, status and media type."""
    refusal = REFUSALS[case]
    for how, (title, detail) in (
        ("default", refusal.english),
        ("query", refusal.chinese),
        ("header", refusal.chinese),
    ):
        response = _send(epcis, refusal, how)
        assert response.headers["content-type"] == "application/problem+json", how
        assert (how, response.json()) == (
            how,
            {
                "type": f"epcisException:{refusal.kind}",
                "title": title,
                "status": refusal.status,
                "detail": detail,
            },
        )
        assert response.status_code == refusal.status


def test_lang_is_not_a_query_condition(epcis: SharedApi) -> None:
    """?lang= on /epcis/events answers the same events as without it (it is not
    refused as an unknown query parameter)."""
    url, key = epcis.server.url + "/epcis/events", auth(epcis.keys["controller"])
    plain = httpx.get(url, headers=key, timeout=10)
    chinese = httpx.get(url, params={"lang": "zh-CN"}, headers=key, timeout=10)
    assert plain.status_code == chinese.status_code == 200, chinese.text

    def events(response: httpx.Response) -> list[Any]:
        found: list[Any] = response.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        return found

    assert events(plain) == events(chinese) != []
