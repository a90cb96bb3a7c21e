"""The API's messages in the caller's language (zh-CN or en), its data in none: errors
(validation included) follow ?lang=, then Accept-Language, then the configured
default, while lookups answer the same bytes whatever the language."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.alerts import ALERT_LABELS
from api.app import create_app, settings_from_env
from composition.services import PrivateMosquitto
from parceltrack.alerts import AlertKind
from parceltrack.errors import ConfigError
from parceltrack.i18n import gettext_for
from parceltrack.identifiers import S10
from tests.api.conftest import Seeded, SharedApi, ThreadedServer, auth, seed, settings_for

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
UNKNOWN = str(S10.make("ZZ", 12345678, "CN"))


def _get(api: SharedApi, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(api.server.url + path, timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (
            {"params": {"lang": "zh-CN"}},
            "'RR473124828GB' 未通过 S10 校验位检查：第 11 位是 8，应为 9",
        ),
        ({"headers": ZH}, "'RR473124828GB' 未通过 S10 校验位检查：第 11 位是 8，应为 9"),
        (
            {"headers": ZH, "params": {"lang": "en"}},
            "'RR473124828GB' fails the S10 check digit: digit 11 is 8, expected 9",
        ),
        ({}, "'RR473124828GB' fails the S10 check digit: digit 11 is 8, expected 9"),
    ],
    ids=["query", "accept-language", "query-beats-header", "default-english"],
)
def test_an_invalid_tracking_number_is_explained_in_the_callers_language(
    shared_api: SharedApi, how: dict[str, Any], expected: str
) -> None:
    """The check-digit error names the digits found and expected, in the chosen language."""
    response = _get(shared_api, "/v1/parcels/RR473124828GB", **how)
    assert response.status_code == 422
    assert response.json() == {"detail": expected}


def test_a_malformed_number_and_an_unknown_parcel_are_said_in_chinese(
    shared_api: SharedApi,
) -> None:
    """A number of the wrong shape and a valid number nobody registered get Chinese details."""
    shape = _get(shared_api, "/v1/parcels/hello", headers=ZH)
    assert shape.status_code == 422
    assert shape.json()["detail"].startswith("'hello' 不是 S10 运单号")
    unknown = _get(shared_api, f"/v1/parcels/{UNKNOWN}", headers=ZH)
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "没有该运单号的邮件"}
    english = _get(shared_api, f"/v1/parcels/{UNKNOWN}")
    assert english.json() == {"detail": "no parcel with that tracking number"}


def test_the_lookup_answers_the_same_data_in_every_language(shared_api: SharedApi) -> None:
    """Status, UPU codes and times are codes and UTC: the JSON is identical in zh-CN and en."""
    parcel = shared_api.seeded.dispatched
    english = _get(shared_api, f"/v1/parcels/{parcel}")
    chinese = _get(shared_api, f"/v1/parcels/{parcel}", params={"lang": "zh-CN"}, headers=ZH)
    assert english.status_code == chinese.status_code == 200
    keep = {"delivery"}  # its ETA may move with the clock between the two requests
    assert {k: v for k, v in english.json().items() if k not in keep} == {
        k: v for k, v in chinese.json().items() if k not in keep
    }
    assert english.json()["status"] == "dispatched"


def test_validation_errors_keep_their_structure_and_speak_chinese(shared_api: SharedApi) -> None:
    """A bad feedback body gets the same loc and type in both languages, msg in each one."""
    parcel = shared_api.seeded.dispatched
    body = {"kind": "rant", "message": "x" * 4001}
    url = f"{shared_api.server.url}/v1/parcels/{parcel}/feedback"
    english = httpx.post(url, json=body, timeout=10)
    chinese = httpx.post(url, json=body, params={"lang": "zh-CN"}, timeout=10)
    assert english.status_code == chinese.status_code == 422
    en, zh = english.json()["detail"], chinese.json()["detail"]
    assert [(e["loc"], e["type"]) for e in en] == [(e["loc"], e["type"]) for e in zh]
    by_type = {e["type"]: e["msg"] for e in zh}
    assert by_type["literal_error"] == "输入应为 'complaint' or 'praise'"
    assert by_type["string_too_long"] == "字符串最多只能有 4000 个字符"
    assert {e["type"]: e["msg"] for e in en}["string_too_long"] == (
        "String should have at most 4000 characters"
    )


def test_a_body_that_is_not_json_is_explained_in_chinese(shared_api: SharedApi) -> None:
    """Unparseable JSON is refused with the reason in the caller's language."""
    url = f"{shared_api.server.url}/v1/parcels/{shared_api.seeded.dispatched}/feedback"
    response = httpx.post(
        url, content=b"{not json", headers={**ZH, "Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["msg"]) == ("json_invalid", "请求正文不是有效的 JSON")


def test_key_errors_are_said_in_chinese(shared_api: SharedApi) -> None:
    """No key, a wrong key and a key of too low a role each get a Chinese reason."""
    none = _get(shared_api, "/v1/alerts", headers=ZH)
    assert (none.status_code, none.json()["detail"]) == (
        401,
        "此操作需要角色为 controller 或更高的 API 密钥",
    )
    assert none.headers["www-authenticate"] == "Bearer"
    wrong = _get(shared_api, "/v1/alerts", headers={**ZH, **auth("pt_not-a-key")})
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "API 密钥未知或已被吊销")
    low = _get(shared_api, "/v1/alerts", headers={**ZH, **auth(shared_api.keys["customer"])})
    assert (low.status_code, low.json()["detail"]) == (
        403,
        "角色 customer 无权执行此操作；需要 controller",
    )


def test_alert_kind_labels_come_in_the_asked_language(shared_api: SharedApi) -> None:
    """/v1/alerts/kinds labels every kind in Chinese with ?lang=zh-CN, in English without."""
    key = auth(shared_api.keys["controller"])
    chinese = _get(shared_api, "/v1/alerts/kinds", params={"lang": "zh-CN"}, headers=key).json()
    english = _get(shared_api, "/v1/alerts/kinds", headers=key).json()
    say = gettext_for("api", "zh-CN").gettext
    assert {k["kind"]: k["label"] for k in chinese} == {
        kind.value: say(ALERT_LABELS[kind]) for kind in AlertKind
    }
    assert {k["kind"]: k["label"] for k in english} == {
        kind.value: ALERT_LABELS[kind] for kind in AlertKind
    }
    assert {k["label"] for k in chinese}.isdisjoint(ALERT_LABELS.values())


def test_the_configured_default_language_answers_when_the_request_names_none(
    db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """An API configured for zh-CN answers Chinese to a bare request, English when asked,
    and Chinese to a browser asking only for a language it does not speak."""
    seed(db_dsn)
    app = create_app(settings_for(db_dsn, mqtt_server, language="zh-CN"))
    with ThreadedServer(app) as server:
        url = f"{server.url}/v1/parcels/{UNKNOWN}"
        assert httpx.get(url, timeout=10).json()["detail"] == "没有该运单号的邮件"
        assert httpx.get(url, headers={"Accept-Language": "fr"}, timeout=10).json()["detail"] == (
            "没有该运单号的邮件"
        )
        english = httpx.get(url, headers={"Accept-Language": "en-GB"}, timeout=10)
        assert english.json()["detail"] == "no parcel with that tracking number"


def test_too_many_lookups_is_said_in_chinese_with_retry_after(
    db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Past the rate limit the 429 keeps its Retry-After and says why in Chinese."""
    seeded: Seeded = seed(db_dsn)
    app = create_app(settings_for(db_dsn, mqtt_server, rate_per_s=0.01, burst=1.0))
    with ThreadedServer(app) as server:
        url = f"{server.url}/v1/parcels/{seeded.dispatched}"
        assert httpx.get(url, timeout=10).status_code == 200
        limited = httpx.get(url, params={"lang": "zh-CN"}, timeout=10)
        assert limited.status_code == 429
        assert limited.json() == {"detail": "请求过于频繁，请放慢速度"}
        assert int(limited.headers["retry-after"]) >= 1


def test_an_unsupported_default_language_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PARCELTRACK_LANGUAGE=fr stops the API at start-up naming the setting; zh is zh-CN."""
    monkeypatch.setenv("PARCELTRACK_LANGUAGE", "fr")
    with pytest.raises(ConfigError, match=r"PARCELTRACK_LANGUAGE / --language 'fr'"):
        settings_from_env()
    monkeypatch.setenv("PARCELTRACK_LANGUAGE", "zh")
    assert settings_from_env().language == "zh-CN"
