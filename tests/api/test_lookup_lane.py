"""The lookup's lean lane (api/lane.py) answers as the FastAPI route it stands in for:
same status, headers that matter and body, for good and bad requests alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import customers
from api.app import create_app
from api.lane import LookupLane
from api.language import declared_language
from api.security import rate_limited
from composition.services import PrivateMosquitto
from tests.api.conftest import Seeded, settings_for
from tests.api.test_lookup_equivalence import UNKNOWN, UNLISTED, _more_statuses


def _without_lane(app: FastAPI) -> FastAPI:
    """The same app with the lane taken out before its first request: FastAPI's route."""
    app.user_middleware = [m for m in app.user_middleware if m.cls is not LookupLane]
    return app


@pytest.fixture
def both(seeded: Seeded, mqtt_server: PrivateMosquitto) -> Iterator[tuple[TestClient, TestClient]]:
    settings = settings_for(seeded.dsn, mqtt_server, rate_per_s=0.001, burst=1000.0)
    with (
        TestClient(create_app(settings)) as lane,
        TestClient(_without_lane(create_app(settings))) as route,
    ):
        yield lane, route


def _answer(response: Any) -> tuple[int, str | None, str | None, Any]:
    """Status, content type, Retry-After and body (the clock-dependent ETA left out)."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and body.get("delivery", {}).get("eta_source") != "delivered":
        body.get("delivery", {}).pop("eta", None)
    headers = response.headers
    return (
        response.status_code,
        headers.get("content-type"),
        headers.get("retry-after"),
        body,
    )


def test_every_kind_of_lookup_is_answered_alike(
    both: tuple[TestClient, TestClient], seeded: Seeded
) -> None:
    """Parcels in every status, unknown, unlisted, malformed, too long, encoded, with a
    trailing slash, other methods and a bad key: both lanes answer the same."""
    lane, route = both
    parcels = list(_more_statuses(seeded).values())
    paths = [f"/v1/parcels/{p}" for p in [*parcels, UNLISTED, UNKNOWN]] + [
        "/v1/parcels/EE123456789CN",  # wrong check digit: our 422 sentence
        "/v1/parcels/" + "A" * 64,
        "/v1/parcels/" + "A" * 65,  # FastAPI's own max_length 422
        "/v1/parcels/RR473124829gb",
        "/v1/parcels/RR%20473124829GB",
        f"/v1/parcels/{parcels[0]}/",
        "/v1/parcels/",
    ]
    for path in paths:
        assert _answer(lane.get(path)) == _answer(route.get(path)), path
    for method in ("HEAD", "POST", "DELETE"):
        path = f"/v1/parcels/{parcels[0]}"
        assert _answer(lane.request(method, path)) == _answer(route.request(method, path))
    bad_key = {"Authorization": "Bearer pt_not-a-key"}
    path = f"/v1/parcels/{parcels[0]}"
    assert _answer(lane.get(path, headers=bad_key)) == _answer(route.get(path, headers=bad_key))
    assert lane.get(path, headers=bad_key).status_code == 401


def test_rate_limit_refuses_alike(seeded: Seeded, mqtt_server: PrivateMosquitto) -> None:
    """With a burst of two, both lanes refuse the third lookup with 429 and Retry-After."""
    settings = settings_for(seeded.dsn, mqtt_server, rate_per_s=0.001, burst=2.0)
    answers = []
    for app in (create_app(settings), _without_lane(create_app(settings))):
        with TestClient(app) as client:
            answers.append(
                [_answer(client.get(f"/v1/parcels/{seeded.dispatched}")) for _ in range(3)]
            )
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0]] == [200, 200, 429]


def test_lane_runs_every_dependency_of_the_customers_router() -> None:
    """The lane runs the rate limit; a dependency added to the router must be added to
    the lane as well (api/app.py), and this test says so."""
    # declared_language only documents ?lang= in the OpenAPI schema: it does nothing.
    assert [d.dependency for d in customers.router.dependencies] == [
        rate_limited,
        declared_language,
    ]


def test_lane_is_in_place(both: tuple[TestClient, TestClient], seeded: Seeded) -> None:
    """The app as created serves the lookup through the lane (not FastAPI's route)."""
    lane, route = both
    assert any(m.cls is LookupLane for m in lane.app.user_middleware)  # type: ignore[attr-defined]
    assert not any(m.cls is LookupLane for m in route.app.user_middleware)  # type: ignore[attr-defined]
