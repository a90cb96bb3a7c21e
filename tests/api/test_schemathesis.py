"""Property-based tests generated from the OpenAPI schema: no 5xx, responses as documented.

Runs against a real HTTP server in this process and a real PostgreSQL. The alert
stream is left out (an endless response); tests/api/test_controllers.py covers it.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.api.conftest import SharedApi, partner_owning

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(shared_api: SharedApi) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{shared_api.server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.exclude(path="/v1/alerts/stream").parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case, shared_api: SharedApi) -> None:
    """Generated requests, with an admin key, never get a 5xx or an undocumented response."""
    key = shared_api.keys["admin"]
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)


@pytest.fixture(scope="module")
def partner_key(shared_api: SharedApi) -> str:
    """A partner key of an account that owns one seeded parcel."""
    return partner_owning(shared_api.seeded.dsn, "fuzz", shared_api.seeded.dispatched)


_GS1 = json.loads(
    (Path(__file__).resolve().parents[1] / "data/epcis-2.0-json-schema.json").read_text()
)
_GS1_VALIDATOR = jsonschema.validators.validator_for(_GS1)(
    _GS1, format_checker=jsonschema.validators.validator_for(_GS1).FORMAT_CHECKER
)


def epcis_documents_are_valid(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Every EPCIS document the interface answers with is valid by GS1's JSON Schema."""
    if response.status_code == 200 and case.path.endswith("/events"):
        _GS1_VALIDATOR.validate(response.json())
    return None


@schema.include(path_regex="^/epcis/").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_epcis_conforms_to_its_schema_for_a_partner(
    case: schemathesis.Case, shared_api: SharedApi, partner_key: str
) -> None:
    """Generated EPCIS queries, named queries and subscriptions with a partner key never
    get a 5xx or an undocumented response."""
    case.call_and_validate(
        headers={"Authorization": f"Bearer {partner_key}"},
        checks=[*CHECKS, epcis_documents_are_valid],
    )
