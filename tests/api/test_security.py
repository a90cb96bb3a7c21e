"""Security: every endpoint's role requirement, key handling, and keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.security import ROLES, RateLimiter, TokenBucket, key_hash
from composition.services import PrivateMosquitto
from tests.api.conftest import SITE, Seeded, SharedApi, auth, settings_for

# The minimum role of every operation ("public": no key needed). Written out by hand
# on purpose: a new endpoint fails test_every_operation_is_in_the_matrix until its
# requirement is stated here.
MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/v1/parcels/{tracking_id}"): "public",
    ("GET", "/v1/parcels/{tracking_id}/epcis"): "public",
    ("POST", "/v1/parcels/{tracking_id}/feedback"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/v1/alerts"): "controller",
    ("POST", "/v1/alerts/{alert_id}/ack"): "controller",
    ("GET", "/v1/alerts/stream"): "controller",
    ("GET", "/v1/alerts/kinds"): "controller",
    ("GET", "/v1/devices"): "controller",
    ("GET", "/v1/sites/{site}/throughput"): "controller",
    ("GET", "/v1/feedback"): "controller",
    ("GET", "/v1/feedback/{feedback_id}"): "controller",
    ("POST", "/v1/feedback/{feedback_id}/take"): "controller",
    ("POST", "/v1/feedback/{feedback_id}/answers"): "controller",
    ("POST", "/v1/feedback/{feedback_id}/close"): "controller",
    ("GET", "/v1/kpis"): "manager",
    ("POST", "/v1/admin/manifests"): "admin",
    ("GET", "/v1/admin/service-classes"): "admin",
    ("PUT", "/v1/admin/service-classes/{service_class}"): "admin",
    ("GET", "/v1/admin/stage-standards"): "admin",
    ("PUT", "/v1/admin/stage-standards"): "admin",
    ("POST", "/v1/admin/sites/{site}/sort-plans"): "admin",
    ("GET", "/v1/admin/sites/{site}/sort-plans"): "admin",
    ("PUT", "/v1/admin/sites/{site}"): "admin",
    ("GET", "/v1/admin/read-points"): "admin",
    ("PUT", "/v1/admin/read-points/{read_point}"): "admin",
    ("PUT", "/v1/admin/devices/{device}"): "admin",
    ("GET", "/v1/admin/read-points/{read_point}/successors"): "admin",
    ("PUT", "/v1/admin/read-points/{read_point}/successors"): "admin",
    ("GET", "/v1/admin/sites/{site}/missing-windows"): "admin",
    ("PUT", "/v1/admin/sites/{site}/missing-windows"): "admin",
    ("DELETE", "/v1/admin/sites/{site}/missing-windows"): "admin",
    ("GET", "/v1/admin/sites/{site}/device-thresholds"): "admin",
    ("PUT", "/v1/admin/sites/{site}/device-thresholds"): "admin",
    ("GET", "/v1/admin/sites/{site}/tolerances"): "admin",
    ("PUT", "/v1/admin/sites/{site}/tolerances"): "admin",
    ("GET", "/v1/admin/api-keys"): "admin",
    ("POST", "/v1/admin/api-keys"): "admin",
    ("DELETE", "/v1/admin/api-keys/{key_id}"): "admin",
    ("POST", "/v1/parcels/{tracking_id}/subscriptions"): "public",
    ("GET", "/v1/unsubscribe/{token}"): "public",
    ("POST", "/v1/unsubscribe/{token}"): "public",
    ("GET", "/v1/admin/deliveries/dead"): "admin",
    ("POST", "/v1/admin/deliveries/{delivery_id}/replay"): "admin",
    # EPCIS: staff from controller up, and partners (tests/api/test_partners.py).
    ("GET", "/epcis/events"): "controller",
    ("POST", "/epcis/queries"): "controller",
    ("GET", "/epcis/queries"): "controller",
    ("GET", "/epcis/queries/{name}"): "controller",
    ("DELETE", "/epcis/queries/{name}"): "controller",
    ("GET", "/epcis/queries/{name}/events"): "controller",
    ("POST", "/epcis/queries/{name}/subscriptions"): "controller",
    ("GET", "/epcis/queries/{name}/subscriptions"): "controller",
    ("GET", "/epcis/queries/{name}/subscriptions/{subscription_id}"): "controller",
    ("DELETE", "/epcis/queries/{name}/subscriptions/{subscription_id}"): "controller",
    # issue 16: alert handling, staff ratings, complaint deadlines, manager figures, floor
    ("POST", "/v1/alerts/{alert_id}/assign"): "controller",
    ("DELETE", "/v1/alerts/{alert_id}/assign"): "controller",
    ("GET", "/v1/sites/{site_id}/alert-severities"): "controller",
    ("PUT", "/v1/sites/{site_id}/alert-severities/{kind}"): "manager",
    ("GET", "/v1/sites/{site_id}/escalation-rules"): "controller",
    ("PUT", "/v1/sites/{site_id}/escalation-rules/{kind}"): "manager",
    ("GET", "/v1/sites/{site_id}/on-duty"): "controller",
    ("POST", "/v1/sites/{site_id}/on-duty"): "manager",
    ("DELETE", "/v1/sites/{site_id}/on-duty/{duty_id}"): "manager",
    ("GET", "/v1/staff"): "manager",
    ("GET", "/v1/staff/{staff_id}"): "manager",
    ("PUT", "/v1/staff/{staff_id}"): "manager",
    ("PUT", "/v1/sites/{site_id}/complaint-policy"): "manager",
    ("GET", "/v1/manager/figures"): "manager",
    ("GET", "/v1/manager/figures/{name}"): "manager",
    ("GET", "/v1/floor"): "controller",
}
CALLERS = ("anonymous", *ROLES)
RANK = {"public": -1, **{role: rank for rank, role in enumerate(ROLES)}}


def test_every_operation_is_in_the_matrix(client: TestClient) -> None:
    """The OpenAPI schema's operations are exactly the matrix's."""
    paths = client.get("/openapi.json").json()["paths"]
    operations = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert operations == set(MATRIX)


@pytest.fixture(scope="module")
def http(shared_api: SharedApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_api.server.url, timeout=20) as c:
        yield c


def _url(path: str, seeded: Seeded) -> str:
    values = {
        "tracking_id": seeded.dispatched,
        "alert_id": str(seeded.alert_ids[0]),
        "feedback_id": "999999",
        "site": SITE,
        "service_class": "standard",
        "read_point": f"{SITE}-IND1",
        "device": f"{SITE}-scan-ind1",
        "key_id": "999999",
        "delivery_id": "999999",
        "token": "no-such-token-1",
        "name": "no-such-query",
        "subscription_id": "00000000-0000-0000-0000-000000000000",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(("method", "path"), sorted(MATRIX), ids=lambda v: str(v))
def test_role_matrix(
    http: httpx.Client,
    shared_api: SharedApi,
    method: str,
    path: str,
    who: str,
) -> None:
    """Callers below an operation's role get 401 (no key) or 403 (role too low); others pass."""
    needed = MATRIX[(method, path)]
    seeded, keys = shared_api.seeded, shared_api.keys
    headers = auth(keys[who]) if who != "anonymous" else {}
    # Bodies stay empty: an admitted caller may then get 422, but never 401/403.
    with http.stream(method, _url(path, seeded), headers=headers, json=None) as response:
        status = response.status_code
    allowed = needed == "public" or (who != "anonymous" and RANK[who] >= RANK[needed])
    if allowed:
        assert status not in (401, 403), f"{who} refused on {method} {path}"
    else:
        assert status == (401 if who == "anonymous" else 403), f"{who} let into {method} {path}"


def test_keys_are_accepted_as_bearer_or_x_api_key_and_bad_ones_refused(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Both headers carry a key; an unknown key is 401 with WWW-Authenticate."""
    assert client.get("/v1/alerts", headers={"X-API-Key": keys["controller"]}).status_code == 200
    assert client.get("/v1/alerts", headers=auth(keys["controller"])).status_code == 200
    refused = client.get("/v1/alerts", headers=auth("pt_not_a_key"))
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"


def test_keys_never_reach_the_logs(
    seeded: Seeded,
    keys: dict[str, str],
    mqtt_server: PrivateMosquitto,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With every logger at DEBUG, using, creating, refusing and bootstrapping keys logs no key."""
    bootstrap = "pt_bootstrap_" + "x" * 32
    caplog.set_level(logging.DEBUG)
    app = create_app(settings_for(seeded.dsn, mqtt_server, bootstrap_admin_key=bootstrap))
    logging.getLogger("api").info("settings: %r", app.state.settings)
    with TestClient(app) as c:
        made = c.post(
            "/v1/admin/api-keys", json={"name": "dave", "role": "manager"}, headers=auth(bootstrap)
        )
        new = made.json()["key"]
        for key in (*keys.values(), new, bootstrap):
            c.get("/v1/kpis", headers=auth(key))
            c.get(f"/v1/parcels/{seeded.dispatched}", headers={"X-API-Key": key})
        c.get("/v1/alerts", headers=auth(new + "x"))  # refused key
    assert made.status_code == 201
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert caplog.records, "nothing was logged at all: the test would prove nothing"
    for key in (*keys.values(), new, bootstrap):
        assert key not in text
        assert key_hash(key) not in text


def test_token_bucket_refills_at_its_rate() -> None:
    """A bucket of 2 at 1/s allows two, then one more after a second, and says how long to wait."""
    bucket = TokenBucket(rate=1.0, burst=2.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(1.0) == 0.0


def test_rate_limiter_forgets_the_least_recent_clients() -> None:
    """Beyond max_clients the oldest client's bucket is dropped, so memory stays bounded."""
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=1.0, max_clients=2, clock=lambda: now[0])
    assert limiter.wait_for("a") == 0.0
    assert limiter.wait_for("a") > 0
    limiter.wait_for("b")
    limiter.wait_for("c")  # evicts a
    assert limiter.wait_for("a") == 0.0


def test_cli_creates_a_bootstrap_admin_key_that_works(
    seeded: Seeded,
    mqtt_server: PrivateMosquitto,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`parceltrack api create-key --role admin` prints a key once; it then works as admin."""
    from composition.cli import main

    monkeypatch.setenv("PARCELTRACK_DSN", seeded.dsn)
    assert main(["api", "create-key", "--role", "admin", "--name", "ops"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("pt_")
    with TestClient(create_app(settings_for(seeded.dsn, mqtt_server))) as c:
        listed = c.get("/v1/admin/api-keys", headers=auth(key))
    assert listed.status_code == 200
    assert [k["name"] for k in listed.json() if k["role"] == "admin"] == ["ops"]
