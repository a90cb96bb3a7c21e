"""`parceltrack site apply` and `site export` against a real PostgreSQL: the example
site goes in with a printed difference, comes back out as equivalent files, and a bad
file changes nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import psycopg
import pytest

from composition.cli import main
from storage.sites import read_site_files

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site-files"


@pytest.fixture
def site_dir(tmp_path: Path, db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example site files, with the CLI pointed at a fresh database."""
    monkeypatch.setenv("PARCELTRACK_DSN", db_dsn)
    folder = tmp_path / "site"
    shutil.copytree(EXAMPLE, folder)
    return folder


def _apply(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["site", "apply", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _export(folder: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["site", "export", "BEN1", "--out", str(folder)]) == 0
    capsys.readouterr()
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_apply_prints_what_changes_and_stores_every_setting(
    site_dir: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new site is all additions; successors, settings, windows, tolerances are stored."""
    code, out, _ = _apply(site_dir / "BEN1.toml", capsys)
    assert code == 0
    assert "site BEN1: 28 change(s)" in out and out.rstrip().endswith("applied")
    assert "  + read point BEN1-BEN1: zone=sorter, stage=sort, position=2" in out
    with psycopg.connect(db_dsn) as conn:
        succ = conn.execute(
            "SELECT successor_id FROM read_point_successors WHERE read_point_id = 'BEN1-BEN2' "
            "ORDER BY 1"
        ).fetchall()
        assert succ == [("BEN1-CHU03",), ("BEN1-CHU04",)]
        assert conn.execute(
            "SELECT next_read_point_id FROM read_points WHERE read_point_id = 'BEN1-CHU01'"
        ).fetchone() == ("BEN1-DOR01",)
        assert conn.execute(
            "SELECT kind, settings FROM devices WHERE device_id = 'BEN1-rfid-dor01'"
        ).fetchone() == ("mercury", {"region": "EU", "power_dbm": 27.0})
        assert conn.execute(
            "SELECT stage, service_class, window_s FROM missing_windows"
        ).fetchall() == [("chute", None, 3600.0)]
        assert conn.execute(
            "SELECT skew_tolerance_s, duplicate_gap_s FROM site_tolerances"
        ).fetchall() == [(2.0, 5.0)]
        assert conn.execute("SELECT silence_s FROM device_thresholds").fetchall() == [(300.0,)]
        assert conn.execute(
            "SELECT version, count(*) FROM sort_plans JOIN sort_plan_entries USING "
            "(sort_plan_id) GROUP BY 1 ORDER BY 1"
        ).fetchall() == [(1, 4), (2, 4)]


def test_export_after_apply_gives_equivalent_files(
    site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exported files parse to the same data as the applied ones; applying them changes nothing."""
    assert _apply(site_dir / "BEN1.toml", capsys)[0] == 0
    exported = _export(tmp_path / "out", capsys)
    assert set(exported) == {"BEN1.toml", "BEN1-sortplan.csv"}
    (original,) = read_site_files([site_dir / "BEN1.toml"])
    (back,) = read_site_files([tmp_path / "out" / "BEN1.toml"])
    assert back == original
    code, out, _ = _apply(tmp_path / "out" / "BEN1.toml", capsys)
    assert code == 0 and "site BEN1: no change" in out


def test_a_change_shows_only_itself_and_removals_remove(
    site_dir: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed standard and a dropped window are the whole difference, and both take effect."""
    toml = site_dir / "BEN1.toml"
    assert _apply(toml, capsys)[0] == 0
    text = toml.read_text().replace("max_seconds = 300.0", "max_seconds = 450.0")
    toml.write_text(text.replace('[[missing_window]]\nstage = "chute"\nwindow_s = 3600.0\n', ""))
    code, out, _ = _apply(toml, capsys, "--dry-run")
    assert code == 0 and out.splitlines()[1:] == [
        "  ~ stage standard sort/express: max_seconds 300.0 -> 450.0",
        "  - missing window chute/*",
        "dry run: nothing applied",
    ]
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM missing_windows").fetchone() == (1,)
    assert _apply(toml, capsys)[0] == 0
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM missing_windows").fetchone() == (0,)
        assert conn.execute(
            "SELECT max_seconds FROM stage_standards WHERE stage = 'sort'"
        ).fetchone() == (450.0,)


MISTAKES = [
    pytest.param('stage = "sort"\nposition = 2', 'stage = "sortt"\nposition = 2',
                 "read_point[3].stage: unknown stage 'sortt'", id="unknown-stage"),
    pytest.param('successors = ["BEN1-DOR02"]', 'successors = ["BEN1-DOR09"]',
                 "successor 'BEN1-DOR09' of 'BEN1-CHU03' is not a known read point",
                 id="dangling-successor"),
    pytest.param('[[read_point]]\nid = "BEN1-CHU04"',
                 '[[read_point]]\nid = "BEN1-CHU03"\nzone = "chute"\nstage = "chute"\n\n'
                 '[[read_point]]\nid = "BEN1-CHU04"',
                 "read point 'BEN1-CHU03' is given twice", id="duplicate-chute"),
    pytest.param("max_seconds = 120.0", 'max_seconds = "2 minutes"',
                 "stage_standard[1].max_seconds: must be a number, not text '2 minutes'",
                 id="wrong-type"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "says"), MISTAKES)
def test_a_bad_site_file_is_one_error_and_changes_nothing(
    site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str,
    says: str,
) -> None:  # fmt: skip
    """A mistake is one line on stderr naming file, line and field; the database is as before."""
    toml = site_dir / "BEN1.toml"
    assert _apply(toml, capsys)[0] == 0
    before = _export(tmp_path / "before", capsys)
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1).replace("max_seconds = 300.0", "max_seconds = 9.0"))
    code, out, err = _apply(toml, capsys)
    assert code == 2 and out == ""
    problems = err.removeprefix("parceltrack: ").strip().splitlines()
    assert len(problems) == 1 and says in problems[0], err
    assert problems[0].startswith(f"{toml}:")
    assert _export(tmp_path / "after", capsys) == before


@pytest.mark.parametrize(
    ("row", "says"),
    [
        pytest.param("LON,BEN1-CHU03,BEN1-DOR02,2026-12-01T06:00:00+00:00",
                     "destination 'LON' appears twice in the version in force from "
                     "2026-12-01T06:00:00+00:00",
                     id="overlapping-versions"),
        pytest.param("LEE;BEN1-CHU03;BEN1-DOR02;2026-12-02T06:00:00+00:00", "has 1 fields",
                     id="bad-csv-row"),
    ],
)  # fmt: skip
def test_a_bad_sort_plan_is_one_error_and_changes_nothing(
    site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, says: str
) -> None:
    """A bad plan row names the CSV file and line; nothing of the site changes."""
    assert _apply(site_dir / "BEN1.toml", capsys)[0] == 0
    before = _export(tmp_path / "before", capsys)
    plan = site_dir / "BEN1-sortplan.csv"
    plan.write_text(plan.read_text() + row + "\n")
    code, _, err = _apply(site_dir / "BEN1.toml", capsys)
    problems = err.removeprefix("parceltrack: ").strip().splitlines()
    assert code == 2 and len(problems) == 1 and says in problems[0], err
    assert problems[0].startswith(f"{plan}:10: ")
    assert _export(tmp_path / "after", capsys) == before


def test_two_sites_apply_together_or_not_at_all(
    site_dir: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With one of two site files wrong, neither site is stored; fixed, both are."""
    other = site_dir / "BEN2.toml"
    text = re.sub(r"\bBEN1-", "BEN2-", (site_dir / "BEN1.toml").read_text())
    text = text.replace('id = "BEN1"', 'id = "BEN2"')
    other.write_text(text.replace("max_seconds = 120.0", 'max_seconds = "fast"'))
    plan = (site_dir / "BEN1-sortplan.csv").read_text()
    (site_dir / "BEN2-sortplan.csv").write_text(re.sub(r"\bBEN1-", "BEN2-", plan))
    code, _, err = _apply(site_dir / "BEN1.toml", capsys, str(other))
    assert code == 2 and f"{other}:" in err and "must be a number" in err
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM sites").fetchone() == (0,)
    other.write_text(other.read_text().replace('max_seconds = "fast"', "max_seconds = 60.0"))
    code, out, err = _apply(site_dir / "BEN1.toml", capsys, str(other))
    assert code == 0, err
    assert "site BEN1: 28 change(s)" in out and "site BEN2: 28 change(s)" in out
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM read_points").fetchone() == (20,)


def test_an_unknown_time_zone_names_its_line(
    site_dir: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zone neither Python nor PostgreSQL knows is refused before anything is stored."""
    toml = site_dir / "BEN1.toml"
    toml.write_text(toml.read_text().replace("Europe/London", "Mars/Olympus"))
    code, _, err = _apply(toml, capsys)
    assert code == 2 and f"{toml}:10: site.timezone: unknown time zone 'Mars/Olympus'" in err
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM sites").fetchone() == (0,)


def test_unreadable_files_are_one_error_each(
    site_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing site file and a sort plan that is not UTF-8 are named, not a traceback."""
    (site_dir / "BEN1-sortplan.csv").write_bytes(b"destination,chute,door,effective_from\n\xff\n")
    code, _, err = _apply(site_dir / "BEN1.toml", capsys, str(site_dir / "NOPE.toml"))
    assert code == 2
    assert err.removeprefix("parceltrack: ").strip().splitlines() == [
        f"{site_dir / 'BEN1.toml'}:{_line(site_dir / 'BEN1.toml', 'files = ')}: "
        "sort_plans.files: cannot read 'BEN1-sortplan.csv': it is not UTF-8",
        f"{site_dir / 'NOPE.toml'}:1: (file): cannot read: No such file or directory",
    ]


def _line(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_plan_versions_follow_the_file_when_they_move(
    site_dir: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dropping the first version and adding a later one renumbers the versions by time."""
    assert _apply(site_dir / "BEN1.toml", capsys)[0] == 0
    plan = site_dir / "BEN1-sortplan.csv"
    rows = plan.read_text().splitlines()
    later = [r.replace("2026-12-01T06:00:00", "2027-01-01T06:00:00") for r in rows[5:]]
    plan.write_text("\n".join([rows[0], *rows[5:], *later]) + "\n")
    code, out, err = _apply(site_dir / "BEN1.toml", capsys)
    assert code == 0, err
    assert "  - sort plan from 2026-11-01T00:00:00+00:00" in out
    assert "  + sort plan from 2027-01-01T06:00:00+00:00" in out
    with psycopg.connect(db_dsn) as conn:
        versions = conn.execute(
            "SELECT version, effective_from::text FROM sort_plans ORDER BY version"
        ).fetchall()
    assert [v for v, _ in versions] == [1, 2]
    assert versions[0][1].startswith("2026-12-01") and versions[1][1].startswith("2027-01-01")


def test_rows_stored_before_the_rules_are_replaced_with_a_warning(
    site_dir: Path, db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read point stored with a zone outside today's words cannot be compared: apply says
    so and puts the file in force, which is how an operator mends such a site."""
    assert _apply(site_dir / "BEN1.toml", capsys)[0] == 0
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("UPDATE read_points SET zone = 'slide' WHERE read_point_id = 'BEN1-IND2'")
    code, out, err = _apply(site_dir / "BEN1.toml", capsys)
    assert code == 0, err
    assert "  ! what is in force cannot be read as a site file (unknown zone 'slide'" in out
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute(
            "SELECT zone FROM read_points WHERE read_point_id = 'BEN1-IND2'"
        ).fetchone() == ("induction",)
