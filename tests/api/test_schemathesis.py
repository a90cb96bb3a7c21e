"""Property-based tests generated from the OpenAPI schema: no 5xx, responses as documented.

Runs against a real HTTP server in this process and a real PostgreSQL. The alert
stream is left out (an endless response); tests/api/test_controllers.py covers it.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from api.app import create_app
from api.security import key_hash, new_key
from parceltrack.services import PrivateMosquitto, PrivatePostgres
from tests.api.conftest import ThreadedServer, seed, settings_for
from tests.plugins.services import _drop_database, _fresh_database

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(
    pg_server: PrivatePostgres, _template: str, mqtt_server: PrivateMosquitto
) -> Iterator[tuple[ThreadedServer, str]]:
    dsn = _fresh_database(pg_server.dsn(), _template)
    seed(dsn)
    key = new_key()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Far from any id the fuzzer picks, so it cannot revoke the key it runs with.
        conn.execute("SELECT setval('api_keys_key_id_seq', 987654321987)")
        conn.execute(
            "INSERT INTO api_keys (key_hash, prefix, name, role) VALUES (%s, %s, 'fuzz', 'admin')",
            (key_hash(key), key[:7]),
        )
    app = create_app(settings_for(dsn, mqtt_server, rate_per_s=1e6, burst=1e6))
    with ThreadedServer(app) as server:
        yield server, key
    _drop_database(pg_server.dsn(), dsn)


@pytest.fixture(scope="module")
def api_schema(fuzz_server: tuple[ThreadedServer, str]) -> schemathesis.BaseSchema:
    server, _ = fuzz_server
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.exclude(path="/v1/alerts/stream").parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, fuzz_server: tuple[ThreadedServer, str]
) -> None:
    """Generated requests, with an admin key, never get a 5xx or an undocumented response."""
    _, key = fuzz_server
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
