"""The simulator writes its generated centres as site files, and `parceltrack site apply`
puts exactly that centre in force (the demo loads its centres this way)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from composition.cli import main
from firmware_sim.scenario import Scenario
from firmware_sim.sitefiles import site_data
from storage.reference import run
from storage.sites import read_site
from storage.sitetext import canonical


def test_generated_centres_apply_as_site_files(
    tmp_path: Path, db_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sim generate --site-files` then `site apply` stores each centre as generated."""
    monkeypatch.setenv("PARCELTRACK_DSN", db_dsn)
    out, sites = tmp_path / "s.json", tmp_path / "sites"
    code = main(["sim", "generate", "--seed", "4", "--sites", "LHR1,MAN1", "--rfid-sites",
                 "MAN1", "--parcels", "60", "--out", str(out),
                 "--site-files", str(sites)])  # fmt: skip
    assert code == 0
    files = sorted(sites.glob("*.toml"))
    assert [f.name for f in files] == ["LHR1.toml", "MAN1.toml"]
    assert (sites / "MAN1-sortplan.csv").exists()
    capsys.readouterr()
    assert main(["site", "apply", *map(str, files)]) == 0
    said = capsys.readouterr().out
    assert "site LHR1:" in said and "site MAN1:" in said and said.rstrip().endswith("applied")
    scenario = Scenario.load(out)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for expected in site_data(scenario):
            stored = run(conn, read_site(expected.sites[0].site_id))
            assert stored == canonical(expected)
        kinds = dict(conn.execute("SELECT device_id, kind FROM devices").fetchall())  # type: ignore[arg-type]
        assert kinds["MAN1-rfid-tun1"] == "r2000" and kinds["LHR1-scan-tun1"] == "barcode"
