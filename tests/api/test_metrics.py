"""GET /metrics: Prometheus text with requests and latency per route, pool usage and
the rate limiter's refusals, from a real app on a real database."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from composition.services import PrivateMosquitto, free_port, wait_for_port
from tests.api.conftest import Seeded, settings_for


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_requests_are_counted_and_timed_per_route_template(
    client: TestClient, seeded: Seeded
) -> None:
    """Three lookups of two parcels and an unknown one count under the route template
    with their status codes, never under the raw path; an unknown path is 'unmatched'."""
    for s10 in (seeded.dispatched, seeded.accepted, "EE471108151FR"):
        client.get(f"/v1/parcels/{s10}")
    client.get("/no/such/page")
    got = _samples(client)
    route = "/v1/parcels/{tracking_id}"
    count = "parceltrack_api_requests_total"
    assert got[count, _labels(route=route, method="GET", status="200")] == 2
    assert got[count, _labels(route=route, method="GET", status="404")] == 1
    assert got[count, _labels(route="unmatched", method="GET", status="404")] == 1
    timed = _labels(route=route, method="GET")
    assert got["parceltrack_api_request_seconds_count", timed] == 3
    assert not any(seeded.dispatched in str(labels) for _name, labels in got)
    # Every lookup took some time, and no more than the whole test.
    assert 0 < got["parceltrack_api_request_seconds_sum", timed] < 60


def test_pool_usage_is_reported(client: TestClient, seeded: Seeded) -> None:
    """The pool's open, idle, in-use and maximum connections, and waiting requests."""
    client.get(f"/v1/parcels/{seeded.dispatched}")
    got = _samples(client)
    gauge = "parceltrack_api_pool_connections"
    opened, idle = got[gauge, (("state", "open"),)], got[gauge, (("state", "idle"),)]
    assert 1 <= opened <= 10 and 0 <= idle <= opened
    assert got[gauge, (("state", "in_use"),)] == opened - idle
    assert got[gauge, (("state", "max"),)] == 10
    assert got["parceltrack_api_pool_waiting", ()] == 0


def test_rate_limiter_refusals_are_counted(seeded: Seeded, mqtt_server: PrivateMosquitto) -> None:
    """With a burst of 3, the fourth and fifth lookups are refused (429) and counted."""
    app = create_app(settings_for(seeded.dsn, mqtt_server, rate_per_s=0.001, burst=3.0))
    with TestClient(app) as client:
        codes = [client.get(f"/v1/parcels/{seeded.dispatched}").status_code for _ in range(5)]
        got = _samples(client)
    assert codes == [200, 200, 200, 429, 429]
    assert got["parceltrack_api_rate_limited_total", ()] == 2
    refused = _labels(route="/v1/parcels/{tracking_id}", method="GET", status="429")
    assert got["parceltrack_api_requests_total", refused] == 2


def test_workers_of_one_server_report_their_sum(
    seeded: Seeded, mqtt_server: PrivateMosquitto
) -> None:
    """`parceltrack api --workers 2`: whichever worker answers /metrics, it counts the
    lookups that both workers served."""
    port = free_port()
    env = {**os.environ, "PARCELTRACK_DSN": seeded.dsn, "PARCELTRACK_MQTT_URL": mqtt_server.url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "composition.cli", "api", "--port", str(port), "--workers", "2",
         "--rate", "1e9", "--burst", "1e9"],
        env=env,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=60)
        route = _labels(route="/v1/parcels/{tracking_id}", method="GET", status="200")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            for _ in range(20):  # a fresh connection each: both workers serve some
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as one:
                    assert one.get(f"/v1/parcels/{seeded.dispatched}").status_code == 200
            for _ in range(4):
                text = http.get("/metrics").text
                got = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                }
                assert got["parceltrack_api_requests_total", route] == 20
    finally:
        server.terminate()
        server.wait(timeout=30)
