"""Broker passwords and API keys never appear in any process's log.

The whole pipeline runs as real processes at DEBUG against a Mosquitto with a
password file and ACL (each process its own user, the password in its
PARCELTRACK_MQTT_URL), with an API key bootstrapped from the environment and used,
and a wrong key tried. Then every log file is searched for every secret.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from api.security import new_key
from composition.pipeline import Pipeline
from firmware_sim.scenario import ScenarioConfig, generate
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_no_password_or_key_reaches_any_log(services_dir: Path) -> None:
    """Passwords in broker URLs and API keys in headers and environment: in no log."""
    scenario = generate(ScenarioConfig.barcode_only(seed=5, parcels=15, rate_per_s=4.0))
    users = ("ingest", "detect", "api", "agent-1")
    passwords = {u: f"pw-{u}-{secrets.token_urlsafe(12)}" for u in users}
    admin_key, wrong_key = new_key(), new_key()
    p = Pipeline(
        services_dir / "secrets",
        scenario,
        speed=10.0,
        broker_passwords=passwords,
        api_admin_key=admin_key,
        verbose=True,
    )
    try:
        p.start()  # waits for the agents' health over the secured broker
        assert _get(f"{p.api_url}/v1/alerts", {"Authorization": f"Bearer {admin_key}"}) == 200
        assert _get(f"{p.api_url}/v1/devices", {"X-API-Key": admin_key}) == 200
        assert _get(f"{p.api_url}/v1/alerts", {"Authorization": f"Bearer {wrong_key}"}) == 401

        def stored() -> int:
            with psycopg.connect(p.dsn) as conn:
                row = conn.execute("SELECT count(*) FROM scans").fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: stored() >= len(scenario.reads), 90, "every read stored")
        assert stored() == len(scenario.reads)  # every process really used its credentials
    finally:
        p.stop(keep_files=True)
    logs = [*p.logs.glob("*.log"), p.mosquitto.root / "mosquitto.log"]
    logs += [p.postgres.data / "server.log"]
    texts = {path.name: path.read_text(errors="replace") for path in logs if path.exists()}
    assert {"ingest.log", "detect.log", "api.log", "edge.log", "mosquitto.log"} <= set(texts)
    assert "DEBUG" in texts["edge.log"], "processes did not log at DEBUG: the test proves little"
    forbidden = {*passwords.values(), admin_key, wrong_key}
    forbidden |= {quote(s, safe="") for s in forbidden}
    leaks = [f"{name}: {s[:12]}..." for name, t in texts.items() for s in forbidden if s in t]
    p.stop()  # now remove the files
    assert not leaks, leaks
