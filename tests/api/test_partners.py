"""The partner role: what a partner key may call (the role matrix), partner scoping on
lookups and EPCIS, partner keys, and the manifest's account column."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from composition.services import PrivateMosquitto
from tests.api.conftest import (
    SCENARIO,
    Seeded,
    SharedApi,
    auth,
    make_key,
    partner_owning,
    settings_for,
)
from tests.api.test_security import MATRIX, _url

EPCIS_OPERATIONS = sorted(op for op in MATRIX if op[1].startswith("/epcis/"))
STAFF_OPERATIONS = sorted(
    op for op, needed in MATRIX.items() if needed != "public" and not op[1].startswith("/epcis/")
)


@pytest.fixture(scope="module")
def http(shared_api: SharedApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_api.server.url, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def partner_key(shared_api: SharedApi) -> str:
    """A key of account shop-a, which owns the dispatched parcel (and no other)."""
    seeded = shared_api.seeded
    partner_owning(seeded.dsn, "shop-b", seeded.missorted)
    return partner_owning(seeded.dsn, "shop-a", seeded.dispatched)


def _status(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> int:
    with http.stream(method, path, headers=headers, json=None) as response:
        return response.status_code


@pytest.mark.parametrize(("method", "path"), STAFF_OPERATIONS, ids=str)
def test_a_partner_may_call_no_staff_operation(
    http: httpx.Client, shared_api: SharedApi, partner_key: str, method: str, path: str
) -> None:
    """Every operation that needs a staff role refuses a partner key with 403."""
    status = _status(http, method, _url(path, shared_api.seeded), auth(partner_key))
    assert status == 403, f"partner let into {method} {path}"


@pytest.mark.parametrize("who", ["anonymous", "customer", "partner", "controller", "admin"])
@pytest.mark.parametrize(("method", "path"), EPCIS_OPERATIONS, ids=str)
def test_epcis_admits_partners_and_staff_only(
    http: httpx.Client,
    shared_api: SharedApi,
    partner_key: str,
    method: str,
    path: str,
    who: str,
) -> None:
    """EPCIS: no key is a 401 problem, a customer key a 403 problem; partner and staff
    keys are let in (a missing query is then a 404, never a 401 or 403)."""
    keys = {**shared_api.keys, "partner": partner_key}
    headers = auth(keys[who]) if who != "anonymous" else {}
    with http.stream(method, _url(path, shared_api.seeded), headers=headers, json=None) as r:
        status, media = r.status_code, r.headers.get("content-type", "")
    if who == "anonymous":
        assert (status, media) == (401, "application/problem+json")
    elif who == "customer":
        assert (status, media) == (403, "application/problem+json")
    else:
        assert status not in (401, 403), f"{who} refused on {method} {path}"


@pytest.mark.parametrize("suffix", ["", "/epcis"], ids=["lookup", "epcis"])
def test_a_partner_looks_up_only_its_own_parcels(
    http: httpx.Client, shared_api: SharedApi, partner_key: str, suffix: str
) -> None:
    """With a partner key, its own parcel is found; another account's, or a parcel of
    no account, is the same 404 as an unknown one. Without a key, lookups stay public."""
    seeded = shared_api.seeded
    mine = http.get(f"/v1/parcels/{seeded.dispatched}{suffix}", headers=auth(partner_key))
    assert mine.status_code == 200
    for other in (seeded.missorted, seeded.in_sorting):
        hidden = http.get(f"/v1/parcels/{other}{suffix}", headers=auth(partner_key))
        assert hidden.status_code == 404
        assert hidden.json() == {"detail": "no parcel with that tracking number"}
        assert http.get(f"/v1/parcels/{other}{suffix}").status_code == 200


def test_partner_keys_need_an_account_and_only_they_have_one(
    client: TestClient, keys: dict[str, str]
) -> None:
    """POST /v1/admin/api-keys: a partner without an account, or another role with one,
    is a 422 naming the account; a partner key with one is listed with it."""
    admin = auth(keys["admin"])
    for body in (
        {"name": "shop", "role": "partner"},
        {"name": "ctl", "role": "controller", "account": "shop-a"},
    ):
        refused = client.post("/v1/admin/api-keys", json=body, headers=admin)
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("account:")
    made = client.post(
        "/v1/admin/api-keys",
        json={"name": "shop", "role": "partner", "account": "shop-a"},
        headers=admin,
    )
    assert made.status_code == 201
    assert (made.json()["role"], made.json()["account"]) == ("partner", "shop-a")
    listed = client.get("/v1/admin/api-keys", headers=admin).json()
    assert [k["account"] for k in listed if k["name"] == "shop"] == ["shop-a"]


def test_cli_creates_a_partner_key_for_an_account(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`parceltrack api create-key --role partner --account X` stores X; without
    --account it is refused (exit 2)."""
    from composition.cli import main

    monkeypatch.setenv("PARCELTRACK_DSN", seeded.dsn)
    assert main(["api", "create-key", "--role", "partner", "--name", "shop"]) == 2
    assert main(["api", "create-key", "--role", "partner", "--account", "shop-z"]) == 0
    with psycopg.connect(seeded.dsn) as conn:
        rows = conn.execute("SELECT role, account FROM api_keys").fetchall()
    assert rows == [("partner", "shop-z")]


def test_the_manifest_account_column_is_stored_and_kept(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A CSV manifest with an account column sets each parcel's account; a later row
    naming none keeps it, one naming another changes it."""
    admin = {**auth(keys["admin"]), "Content-Type": "text/csv"}
    csv = (
        "tracking_id,service_class,destination,account\n"
        "RR473124829GB,standard,FR75,shop-a\n"
        "EE471108151FR,standard,FR75,\n"
    )
    loaded = client.post("/v1/admin/manifests", content=csv, headers=admin)
    assert loaded.status_code == 200 and loaded.json()["accepted"] == 2, loaded.text
    again = client.post(
        "/v1/admin/manifests",
        content="tracking_id,service_class,destination\nRR473124829GB,standard,DE10\n",
        headers=admin,
    )
    assert again.json()["accepted"] == 1
    assert _accounts(seeded.dsn) == {"RR473124829GB": "shop-a", "EE471108151FR": None}
    moved = client.post(
        "/v1/admin/manifests",
        content="tracking_id,service_class,destination,account\nRR473124829GB,standard,FR75,shop-b\n",
        headers=admin,
    )
    assert moved.json()["accepted"] == 1
    assert _accounts(seeded.dsn)["RR473124829GB"] == "shop-b"


def _accounts(dsn: str) -> dict[str, str | None]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tracking_id, account FROM parcels "
            "WHERE tracking_id IN ('RR473124829GB', 'EE471108151FR')"
        ).fetchall()
    return {str(t): a for t, a in rows}


def test_epcis_calls_are_limited_per_key(seeded: Seeded, mqtt_server: PrivateMosquitto) -> None:
    """Beyond its bucket a partner key gets a 429 problem with Retry-After, while
    another key still gets its answers."""
    key = partner_owning(seeded.dsn, "shop-a", seeded.dispatched)
    other = make_key(seeded.dsn, "controller")
    with TestClient(
        create_app(settings_for(seeded.dsn, mqtt_server, rate_per_s=0.1, burst=2))
    ) as c:
        statuses = [c.get("/epcis/events", headers=auth(key)).status_code for _ in range(3)]
        refused = c.get("/epcis/events", headers=auth(key))
        assert c.get("/epcis/events", headers=auth(other)).status_code == 200
    assert statuses == [200, 200, 429]
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["type"] == "epcisException:TooManyRequestsException"


def test_the_demos_partner_sees_the_parcels_it_was_given(
    client: TestClient, seeded: Seeded
) -> None:
    """composition.demo.partner_key gives parcels to an account through the manifest and
    returns a partner key that finds their EPCIS events, and no others."""
    from composition.demo import partner_key

    given = [m for m in SCENARIO.reference_data().manifest if m.tracking_id == seeded.dispatched]
    key = partner_key(seeded.dsn, given, "demo-shop")
    found = client.get("/epcis/events", headers=auth(key)).json()
    events = found["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    assert events and {e["epcList"][0] for e in events} == {
        f"urn:parceltrack:s10:{seeded.dispatched}"
    }
    assert client.get(f"/v1/parcels/{seeded.missorted}", headers=auth(key)).status_code == 404
