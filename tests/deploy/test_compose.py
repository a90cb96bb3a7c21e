"""docker-compose.yml: valid against the Compose Specification, and every command real."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from composition.acl import render_acl
from composition.cli import build_parser
from edge.config import load_agent_config
from firmware_sim.commands import config_from_args
from firmware_sim.scenario import generate

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OURS = {name: svc for name, svc in COMPOSE["services"].items() if "build" in svc}


def test_compose_file_validates_against_the_compose_specification() -> None:
    """The file is valid under the official Compose JSON Schema (copy in tests/data)."""
    schema = json.loads((ROOT / "tests/data/compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)


def test_the_stack_has_every_part() -> None:
    """TimescaleDB, Mosquitto, ingest, detection, API, an edge agent and Grafana."""
    images = {svc.get("image", "").split(":")[0] for svc in COMPOSE["services"].values()}
    assert {"timescale/timescaledb", "eclipse-mosquitto", "grafana/grafana"} <= images
    commands = {svc["command"][0] for svc in OURS.values()}
    assert {"ingest", "detect", "api", "sim", "db"} <= commands


@pytest.mark.parametrize("name", sorted(OURS), ids=sorted(OURS))
def test_each_project_service_command_is_a_real_parceltrack_command(name: str) -> None:
    """Every project service's command parses with the real `parceltrack` CLI."""
    args = build_parser().parse_args(OURS[name]["command"])
    assert callable(args.func)


def test_the_stack_migrates_only_onto_timescaledb() -> None:
    """The stack's migrate step refuses a server without TimescaleDB instead of falling back."""
    args = build_parser().parse_args(OURS["migrate"]["command"])
    assert args.require_timescale


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    """The image runs `parceltrack`, so a service's command is its subcommand."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["parceltrack"]' in dockerfile


def test_no_secret_is_committed_and_every_variable_is_in_the_example_env() -> None:
    """Secrets come from .env; .env.example names every variable the file uses."""
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {
        line.split("=")[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example
    for name, svc in COMPOSE["services"].items():
        env = svc.get("environment", {})
        for key, value in env.items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: literal {key}"
            if str(value).startswith("mqtt://") and "@" in str(value):
                assert ":${" in str(value), f"{name}: literal password in {key}"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_named_volumes_and_health_checks() -> None:
    """Stateful services keep data in named volumes; servers have health checks."""
    volumes = set(COMPOSE["volumes"])
    for name in ("timescaledb", "mosquitto", "grafana", "edge-sim"):
        mounts = {str(v).split(":")[0] for v in COMPOSE["services"][name]["volumes"]}
        assert mounts & volumes, f"{name} keeps no data in a named volume"
    for name in ("timescaledb", "mosquitto", "ingest", "api", "grafana"):
        assert "healthcheck" in COMPOSE["services"][name], name


def test_broker_acl_matches_the_agent_configuration() -> None:
    """The committed ACL is what `parceltrack broker acl` renders from the agent files."""
    agents = [load_agent_config(p) for p in sorted((ROOT / "deploy/agents").glob("*.toml"))]
    assert (ROOT / "deploy/mosquitto/acl").read_text() == render_acl(agents)


def test_simulated_site_has_the_devices_the_agent_file_names() -> None:
    """`sim site` for LHR1 makes exactly the devices deploy/agents/agent-1.toml lists."""
    service: dict[str, Any] = COMPOSE["services"]["edge-sim"]
    args = build_parser().parse_args(service["command"])
    scenario = generate(config_from_args(args))
    agent = load_agent_config(ROOT / "deploy/agents/agent-1.toml")
    assert {d.id for d in agent.devices} == {r.device for r in scenario.read_points}
    assert {(d.id, d.read_point) for d in agent.devices} == {
        (r.device, r.read_point) for r in scenario.read_points
    }


def test_image_copies_every_package() -> None:
    """The Dockerfile copies every package that pyproject.toml installs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert packages <= copied, packages - copied
