"""`parceltrack sim` and `parceltrack db load-scenario` as a user runs them."""

from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from composition.cli import main
from composition.services import PrivateMosquitto
from firmware_sim.scenario import Scenario
from firmware_sim.truth import read_truth_lines


def test_generate_writes_the_configured_scenario_and_summarises_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options become the scenario's configuration; the summary table names the counts."""
    out = tmp_path / "s.json"
    code = main(
        [
            "sim", "generate", "--seed", "4", "--sites", "LHR1,MAN1", "--rfid-sites", "MAN1",
            "--parcels", "400", "--missort-rate", "0.05", "--lost-rate", "0.025",
            "--peak", "10:20:2", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    scenario = Scenario.load(out)
    assert len(scenario.manifest) == 400
    assert [s.site for s in scenario.sites] == ["LHR1", "MAN1"]
    assert sum(f.kind == "missort" for f in scenario.faults) == 20
    assert sum(f.kind == "lost" for f in scenario.faults) == 10
    err = capsys.readouterr().err
    assert "missort" in err and "total" in err and "400" in err


def test_bad_options_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed peak is refused with exit code 2 and a message naming it."""
    code = main(["sim", "generate", "--peak", "soon", "--out", str(tmp_path / "x.json")])
    assert code == 2
    assert "--peak 'soon'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_load_scenario_command_fills_the_database(
    tmp_path: Path, db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db load-scenario FILE --start T --speed S` loads layout, standards, plans, manifest."""
    out = tmp_path / "s.json"
    assert main(["sim", "generate", "--parcels", "50", "--out", str(out)]) == 0
    monkeypatch.setenv("PARCELTRACK_DSN", db_dsn)
    start = "2026-11-24T08:00:00+00:00"
    assert main(["db", "load-scenario", str(out), "--start", start, "--speed", "10"]) == 0
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM parcels").fetchone() == (50,)
        assert conn.execute("SELECT count(*) FROM sort_plans").fetchone() == (2,)
        row = conn.execute("SELECT min(effective_from) FROM sort_plans").fetchone()
        assert row == (datetime.fromisoformat(start),)


def test_publish_command_puts_a_scenario_on_the_broker(
    tmp_path: Path,
    mqtt_server: PrivateMosquitto,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`sim publish --speed 0` publishes every read and writes the truth on its clock."""
    out, truth = tmp_path / "s.json", tmp_path / "truth.jsonl"
    assert main(["sim", "generate", "--parcels", "40", "--out", str(out)]) == 0
    monkeypatch.setenv("PARCELTRACK_MQTT_URL", mqtt_server.url)
    code = main(
        ["sim", "publish", "--scenario", str(out), "--speed", "0", "--truth-out", str(truth)]
    )
    assert code == 0
    scenario = Scenario.load(out)
    assert f"published {len(scenario.reads)} events" in capsys.readouterr().err
    assert [f for f, _ in read_truth_lines(truth)] == scenario.faults
