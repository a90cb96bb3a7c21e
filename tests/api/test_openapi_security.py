"""The OpenAPI document declares the API-key security schemes exactly where a key is
needed, so /docs can authorise and generated clients know which calls need one."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.api.conftest import SharedApi

SCHEMES = {"ApiKey", "Bearer"}


def _operations(api: SharedApi) -> list[tuple[str, str, dict[str, Any]]]:
    schema = httpx.get(f"{api.server.url}/openapi.json", timeout=10).json()
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _without_key(api: SharedApi, method: str, path: str, operation: dict[str, Any]) -> int:
    """The status the operation answers to a request that presents no key."""
    url = api.server.url + re.sub(r"\{[^}]+\}", "1", path)
    body = {"json": {}} if "requestBody" in operation else {}
    with httpx.Client(timeout=10) as client, client.stream(method, url, **body) as response:
        return response.status_code  # a public stream is not read to its end


def test_security_schemes_are_the_two_ways_to_present_a_key(shared_api: SharedApi) -> None:
    """components.securitySchemes has X-API-Key (apiKey in a header) and Bearer (http)."""
    schema = httpx.get(f"{shared_api.server.url}/openapi.json", timeout=10).json()
    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == SCHEMES
    assert (schemes["ApiKey"]["type"], schemes["ApiKey"]["in"], schemes["ApiKey"]["name"]) == (
        "apiKey",
        "header",
        "X-API-Key",
    )
    assert (schemes["Bearer"]["type"], schemes["Bearer"]["scheme"]) == ("http", "bearer")


def test_every_protected_operation_declares_the_key_and_no_public_one_does(
    shared_api: SharedApi,
) -> None:
    """An operation that answers 401 without a key declares either scheme (one of them
    suffices); one that serves callers without a key declares none."""
    protected, public, wrong = [], [], []
    for method, path, operation in _operations(shared_api):
        status = _without_key(shared_api, method, path, operation)
        declared = operation.get("security", [])
        if status == 401:
            protected.append(path)
            if sorted(declared, key=str) != [{"ApiKey": []}, {"Bearer": []}]:
                wrong.append(f"{method} {path} needs a key but declares {declared}")
        else:
            public.append(path)
            if declared:
                wrong.append(f"{method} {path} answers {status} without a key yet declares one")
    assert wrong == []
    # Both kinds exist, so the check above tested something on either side.
    assert {"/v1/alerts", "/v1/devices", "/v1/kpis"} <= set(protected)
    assert {"/v1/parcels/{tracking_id}", "/healthz"} <= set(public)
