"""Every endpoint's refusals in the caller's language: the errors of the controllers',
managers', administrators' and subscription endpoints keep their status and English
words, and come in Chinese with ?lang=zh-CN or Accept-Language: zh-CN."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from parceltrack.identifiers import S10
from tests.api.conftest import SharedApi, auth

ZH_HEADER = {"Accept-Language": "zh-CN,zh;q=0.9"}
NOBODY = 99_999_999  # an id no test creates
UNKNOWN_PARCEL = str(S10.make("ZZ", 12345679, "CN"))


@dataclass(frozen=True, slots=True)
class Refusal:
    """One request that is refused, and its detail in both languages."""

    method: str
    path: str
    status: int
    english: str
    chinese: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None


def _refusals(api: SharedApi) -> dict[str, Refusal]:
    resolved = api.seeded.alert_ids[1]  # the seed resolves the delay alert
    parcel = api.seeded.dispatched
    webhook_to_mail = {
        "name": "Ana",
        "channel": "webhook",
        "address": "ana@example.org",
        "secret": "s" * 20,
    }
    return {
        "ack-unknown-alert": Refusal(
            "POST", f"/v1/alerts/{NOBODY}/ack", 404, "no such alert", "没有该告警"
        ),
        "assign-unknown-alert": Refusal(
            "POST",
            f"/v1/alerts/{NOBODY}/assign",
            404,
            "no such alert",
            "没有该告警",
            json={"controller": "mei"},
        ),
        "assign-resolved-alert": Refusal(
            "POST",
            f"/v1/alerts/{resolved}/assign",
            409,
            "the alert is resolved",
            "该告警已解决",
            json={"controller": "mei"},
        ),
        "on-duty-webhook-without-url": Refusal(
            "POST",
            "/v1/sites/LHR1/on-duty",
            422,
            "address: a webhook needs an http(s) URL",
            "address：Webhook 需要 http(s) 网址",
            json=webhook_to_mail,
        ),
        "on-duty-unknown": Refusal(
            "DELETE",
            f"/v1/sites/LHR1/on-duty/{NOBODY}",
            404,
            "not on the on-duty list",
            "不在值班名单上",
        ),
        "kpis-naive-time": Refusal(
            "GET",
            "/v1/kpis",
            422,
            "since and until need a UTC offset",
            "since 和 until 需要带 UTC 时差",
            params={"since": "2026-01-01T00:00:00"},
        ),
        "kpis-backwards-period": Refusal(
            "GET",
            "/v1/kpis",
            422,
            "need since < until, at most 92 days apart",
            "需要 since < until，且相隔不超过 92 天",
            params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        ),
        "throughput-long-period": Refusal(
            "GET",
            "/v1/sites/LHR1/throughput",
            422,
            "need since < until, at most 31 days apart",
            "需要 since < until，且相隔不超过 31 天",
            params={"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        ),
        "throughput-unknown-site": Refusal(
            "GET", "/v1/sites/NOPE/throughput", 404, "no such site", "没有该站点"
        ),
        "figures-days-and-since": Refusal(
            "GET",
            "/v1/manager/figures",
            422,
            "days: give days, or since and until",
            "days：请给出 days，或给出 since 和 until",
            params={"days": "7", "since": "2026-01-01T00:00:00Z"},
        ),
        "take-unknown-feedback": Refusal(
            "POST", f"/v1/feedback/{NOBODY}/take", 404, "no such feedback", "没有该反馈"
        ),
        "unknown-staff": Refusal(
            "GET", "/v1/staff/nobody", 404, "no staff member 'nobody'", "没有员工 'nobody'"
        ),
        "feedback-naming-unknown-staff": Refusal(
            "POST",
            f"/v1/parcels/{parcel}/feedback",
            422,
            "staff_id: no staff member 'ghost'",
            "staff_id：没有员工 'ghost'",
            json={"kind": "praise", "message": "kind", "staff_id": "ghost"},
        ),
        "subscribe-unknown-parcel": Refusal(
            "POST",
            f"/v1/parcels/{UNKNOWN_PARCEL}/subscriptions",
            404,
            "no parcel with that tracking number",
            "没有该运单号的邮件",
            json={"email": "ana@example.org"},
        ),
        "unsubscribe-unknown-link": Refusal(
            "POST",
            "/v1/unsubscribe/not-a-real-token",
            404,
            "no subscription with that link",
            "没有与该链接对应的订阅",
        ),
        "replay-unknown-delivery": Refusal(
            "POST",
            f"/v1/admin/deliveries/{NOBODY}/replay",
            404,
            f"no delivery {NOBODY}",
            f"没有投递 {NOBODY}",
        ),
        "manifest-of-unknown-type": Refusal(
            "POST",
            "/v1/admin/manifests",
            415,
            "send text/csv or application/json",
            "请发送 text/csv 或 application/json",
            headers={"Content-Type": "text/plain"},
        ),
        "manifest-not-a-list": Refusal(
            "POST",
            "/v1/admin/manifests",
            422,
            "JSON manifest must be a list of rows",
            "JSON 清单必须是由行组成的列表",
            json={"rows": []},
        ),
        "partner-key-without-account": Refusal(
            "POST",
            "/v1/admin/api-keys",
            422,
            "account: required for role partner, and only for it",
            "account：角色 partner 必须填写，其他角色不得填写",
            json={"name": "acme", "role": "partner"},
        ),
        "revoke-unknown-key": Refusal(
            "DELETE", f"/v1/admin/api-keys/{NOBODY}", 404, "no such key", "没有该密钥"
        ),
        "successors-of-unknown-read-point": Refusal(
            "PUT",
            "/v1/admin/read-points/NOPE-RP/successors",
            404,
            "no read point 'NOPE-RP'",
            "没有读取点 'NOPE-RP'",
            json={"successors": []},
        ),
        "thresholds-not-set": Refusal(
            "GET",
            "/v1/admin/sites/NOPE/device-thresholds",
            404,
            "no device_thresholds set for 'NOPE'",
            "站点 'NOPE' 未设置 device_thresholds",
        ),
    }


CASES = [
    "ack-unknown-alert",
    "assign-unknown-alert",
    "assign-resolved-alert",
    "on-duty-webhook-without-url",
    "on-duty-unknown",
    "kpis-naive-time",
    "kpis-backwards-period",
    "throughput-long-period",
    "throughput-unknown-site",
    "figures-days-and-since",
    "take-unknown-feedback",
    "unknown-staff",
    "feedback-naming-unknown-staff",
    "subscribe-unknown-parcel",
    "unsubscribe-unknown-link",
    "replay-unknown-delivery",
    "manifest-of-unknown-type",
    "manifest-not-a-list",
    "partner-key-without-account",
    "revoke-unknown-key",
    "successors-of-unknown-read-point",
    "thresholds-not-set",
]


def _send(api: SharedApi, refusal: Refusal, how: str) -> httpx.Response:
    params = dict(refusal.params or {})
    headers = {**auth(api.keys["admin"]), **(refusal.headers or {})}
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
        content=b"x" if refusal.json is None and refusal.headers else None,
        timeout=10,
    )


@pytest.mark.parametrize("case", CASES)
def test_each_refusal_keeps_its_english_and_speaks_chinese(
    shared_api: SharedApi, case: str
) -> None:
    """The same refusal: English by default, Chinese by ?lang= and by Accept-Language."""
    refusal = _refusals(shared_api)[case]
    for how, expected in (
        ("default", refusal.english),
        ("query", refusal.chinese),
        ("header", refusal.chinese),
    ):
        response = _send(shared_api, refusal, how)
        assert (how, response.status_code, response.json()) == (
            how,
            refusal.status,
            {"detail": expected},
        )


def test_every_refusal_written_down_is_run(shared_api: SharedApi) -> None:
    """The parametrized cases are exactly the refusals described, each once."""
    assert sorted(CASES) == sorted(_refusals(shared_api)) and len(set(CASES)) == len(CASES)


def test_a_second_subscription_of_one_target_is_refused_in_chinese(
    shared_api: SharedApi,
) -> None:
    """Following a parcel twice with one address is 409 naming channel and parcel, in
    English and in Chinese."""
    parcel = shared_api.seeded.in_sorting
    url = f"{shared_api.server.url}/v1/parcels/{parcel}/subscriptions"
    body = {"email": "twice@example.org"}
    assert httpx.post(url, json=body, timeout=10).status_code == 201
    english = httpx.post(url, json=body, timeout=10)
    chinese = httpx.post(url, json=body, headers=ZH_HEADER, timeout=10)
    assert (english.status_code, english.json()) == (
        409,
        {"detail": f"this email target already follows {parcel}"},
    )
    assert (chinese.status_code, chinese.json()) == (
        409,
        {"detail": f"该 email 目标已在关注 {parcel}"},
    )


def test_a_subscription_naming_both_targets_is_refused_in_the_callers_language(
    shared_api: SharedApi,
) -> None:
    """The model's own rule (exactly one of email and webhook_url) is a 422 whose `msg`
    is said in Chinese too, not only pydantic's generic prefix."""
    parcel = shared_api.seeded.in_sorting
    url = f"{shared_api.server.url}/v1/parcels/{parcel}/subscriptions"
    body = {"email": "both@example.org", "webhook_url": "http://127.0.0.1:9/hook"}
    english = httpx.post(url, json=body, timeout=10)
    chinese = httpx.post(url, json=body, params={"lang": "zh-CN"}, timeout=10)
    assert english.status_code == chinese.status_code == 422
    assert english.json()["detail"][0]["msg"] == (
        "Value error, give exactly one of email and webhook_url"
    )
    assert chinese.json()["detail"][0]["msg"] == "取值错误：请只提供 email 与 webhook_url 中的一个"
