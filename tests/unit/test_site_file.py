"""Site files (storage/sitefile.py): the example parses, every mistake is one problem
naming file, line and field, and what is rendered parses back to the same data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parceltrack.layout import Stage
from storage.model import ReferenceData
from storage.sitefile import SiteFileInvalid, parse_site
from storage.sitetext import render_site, site_diff

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site-files"
TOML = (EXAMPLE / "BEN1.toml").read_text()
PLAN = (EXAMPLE / "BEN1-sortplan.csv").read_text()


def parse(toml: str = TOML, plan: str = PLAN, extra: dict[str, str] | None = None) -> ReferenceData:
    files = {"BEN1-sortplan.csv": plan, **(extra or {})}

    def read(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[name]

    return parse_site("BEN1.toml", toml, read)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def test_the_example_site_file_holds_every_setting() -> None:
    """The example describes benches with several successors, devices, windows, plans."""
    data = parse()
    bench = next(r for r in data.read_points if r.read_point_id == "BEN1-BEN1")
    assert bench.successors == ("BEN1-CHU01", "BEN1-CHU02") and bench.next_read_point_id is None
    chute = next(r for r in data.read_points if r.read_point_id == "BEN1-CHU01")
    assert chute.next_read_point_id == "BEN1-DOR01"
    assert {d.kind.value for d in data.devices} == {"barcode", "mercury"}
    scanner = next(d for d in data.devices if d.device_id == "BEN1-scan-ind1")
    assert dict(scanner.settings) == {"baudrate": 9600, "terminator": "CRLF"}
    assert [(w.stage, w.window_s) for w in data.missing_windows] == [(Stage.CHUTE, 3600.0)]
    assert data.site_tolerances[0].duplicate_gap_s == 5.0
    assert data.device_thresholds[0].silence_s == 300.0
    assert [(p.version, len(p.entries)) for p in data.sort_plans] == [(1, 4), (2, 4)]


def test_rendered_files_parse_back_to_the_same_data() -> None:
    """render_site then parse_site gives equal data: the export format is the input format."""
    data = parse()
    files = render_site(data, "BEN1-sortplan.csv")
    again = parse(files["site"], files["BEN1-sortplan.csv"])
    assert again == data
    assert site_diff(data, again) == []


def _one_problem(toml: str = TOML, plan: str = PLAN) -> str:
    with pytest.raises(SiteFileInvalid) as caught:
        parse(toml, plan)
    assert len(caught.value.problems) == 1, caught.value.problems
    return str(caught.value.problems[0])


def test_an_unknown_stage_is_one_problem_at_its_line() -> None:
    """A misspelt stage names the file, its line, the field and the allowed stages."""
    bench = 'position = 2\ndescription = "Manual sort bench 2"'
    bad = TOML.replace(f'stage = "sort"\n{bench}', f'stage = "sortt"\n{bench}')
    problem = _one_problem(bad)
    line = line_of(bad, 'stage = "sortt"')
    assert problem.startswith(f"BEN1.toml:{line}: read_point[4].stage: unknown stage 'sortt'")
    assert "allowed: induction, tunnel, sort" in problem


def test_a_dangling_successor_is_one_problem() -> None:
    """A successor that is no read point of the site is named with its read point."""
    bad = TOML.replace('successors = ["BEN1-CHU03", "BEN1-CHU04"]',
                       'successors = ["BEN1-CHU03", "BEN1-CHU99"]')  # fmt: skip
    line = line_of(bad, "BEN1-CHU99")
    assert _one_problem(bad) == (
        f"BEN1.toml:{line}: read_point[4].successors: successor 'BEN1-CHU99' of 'BEN1-BEN2' "
        "is not a known read point"
    )


def test_a_chute_given_twice_is_one_problem() -> None:
    """The same chute id twice points at the second one and says where the first is."""
    bad = TOML + '\n[[read_point]]\nid = "BEN1-CHU03"\nzone = "chute"\nstage = "chute"\n'
    needle = 'id = "BEN1-CHU03"'
    first, second = line_of(bad, needle), line_of(bad, needle, 2)
    assert _one_problem(bad) == (
        f"BEN1.toml:{second}: read_point[11].id: read point 'BEN1-CHU03' is given twice "
        f"(first at line {first})"
    )


def test_overlapping_plan_versions_are_one_problem() -> None:
    """Two plan files both giving the version in force from one moment are refused."""
    bad = TOML.replace('files = ["BEN1-sortplan.csv"]', 'files = ["BEN1-sortplan.csv", "b.csv"]')
    extra = "destination,chute,door,effective_from\nLEE,BEN1-CHU01,,2026-11-01T00:00:00+00:00\n"
    with pytest.raises(SiteFileInvalid) as caught:
        parse(bad, PLAN, {"b.csv": extra})
    assert [str(p) for p in caught.value.problems] == [
        "b.csv:2: effective_from: overlapping plan versions: the version in force from "
        "2026-11-01T00:00:00+00:00 is also given by BEN1-sortplan.csv (line 2)"
    ]


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        pytest.param("LON,BEN1-CHU01,BEN1-DOR01", "(row)", "has 3 fields", id="short-row"),
        pytest.param("LON,BEN1-DOR01,BEN1-DOR01,2026-11-02T00:00:00+00:00", "chute",
                     "'BEN1-DOR01' is not a chute read point of this site (it is a door",
                     id="door-as-chute"),
        pytest.param("LON,BEN1-CHU01,BEN1-DOR01,yesterday", "effective_from",
                     "'yesterday' is not an ISO 8601 time", id="bad-time"),
        pytest.param("LON,BEN1-CHU01,BEN1-DOR01,2026-11-02T00:00:00", "effective_from",
                     "needs a UTC offset", id="no-offset"),
        pytest.param("LON,BEN1-CHU01,BEN1-DOR01,2026-11-01T00:00:00+00:00", "destination",
                     "destination 'LON' appears twice in the version in force from "
                     "2026-11-01T00:00:00+00:00 (first at line 2)", id="destination-twice"),
    ],
)  # fmt: skip
def test_a_bad_csv_row_is_one_problem_at_its_line(row: str, field: str, says: str) -> None:
    """A bad sort-plan row names the CSV file, its line and the field."""
    plan = PLAN + row + "\n"
    problem = _one_problem(plan=plan)
    assert problem.startswith(f"BEN1-sortplan.csv:{len(plan.splitlines())}: {field}: ")
    assert says in problem


@pytest.mark.parametrize(
    ("old", "new", "field", "says"),
    [
        pytest.param("max_seconds = 300.0", 'max_seconds = "300"', "stage_standard[2].max_seconds",
                     "must be a number, not text '300'", id="text-for-number"),
        pytest.param("delivery_days = 1", "delivery_days = 1.5", "service_class[1].delivery_days",
                     "must be a whole number, not 1.5", id="float-for-int"),
        pytest.param('successors = ["BEN1-DOR01"]', 'successors = "BEN1-DOR01"',
                     "read_point[5].successors", "must be a list of text", id="text-for-list"),
        pytest.param("window_s = 3600.0", "window_s = -1.0", "missing_window[1]",
                     "window_s must be more than 0, not -1.0", id="negative-window"),
        pytest.param("silence_s = 300.0", "silense_s = 300.0", "device_thresholds.silense_s",
                     "unknown field; allowed: silence_s", id="unknown-field"),
        pytest.param('protocol = "barcode"\nsettings', 'protocol = "laser"\nsettings',
                     "device[1]", "unknown protocol 'laser'; allowed: barcode, mercury, r2000",
                     id="unknown-protocol"),
        pytest.param("close_rate = 0.1", "close_rate = 0.3", "device_thresholds",
                     "close_rate must be below open_rate", id="close-above-open"),
    ],
)  # fmt: skip
def test_a_wrong_type_or_value_is_one_problem(old: str, new: str, field: str, says: str) -> None:
    """A value of the wrong type or out of range names its line and field."""
    assert old in TOML
    bad = TOML.replace(old, new, 1)
    problem = _one_problem(bad)
    assert f": {field}: " in problem and says in problem, problem
    line = int(problem.split(":")[1])
    assert (
        new.split("\n")[0].split(" =")[0] in bad.splitlines()[line - 1]
        or "[" in (bad.splitlines()[line - 1])
    )


def test_a_standard_for_a_stage_without_read_points_is_refused_as_the_api_does() -> None:
    """A standard for the tunnel of a site without one gets the repository's message."""
    bad = TOML.replace('stage = "induction"\nservice_class', 'stage = "tunnel"\nservice_class')
    assert _one_problem(bad).endswith(
        "stage_standard[1]: site 'BEN1' has no read point at stage 'tunnel': a standard for it "
        "would never apply"
    )


def test_toml_syntax_errors_name_the_line() -> None:
    """Broken TOML is one problem with tomllib's line."""
    bad = TOML.replace('name = "Bench sorting centre"', 'name = "Bench sorting centre')
    problem = _one_problem(bad)
    assert problem.startswith(f"BEN1.toml:{line_of(bad, 'name = ')}: (syntax): not valid TOML")


def test_the_diff_names_each_change() -> None:
    """site_diff lists added, removed and changed entities with old -> new values."""
    before = parse()
    window = '[[missing_window]]\nstage = "chute"\nwindow_s = 3600.0\n'
    after = parse(TOML.replace("max_seconds = 300.0", "max_seconds = 450.0").replace(window, ""))
    assert site_diff(before, after) == [
        "~ stage standard sort/express: max_seconds 300.0 -> 450.0",
        "- missing window chute/*",
    ]


def test_an_unknown_time_zone_is_one_problem_when_the_zones_are_known() -> None:
    """Given the IANA names, a misspelt zone names its line; without them it is left to
    the database."""
    bad = TOML.replace('timezone = "Europe/London"', 'timezone = "Europe/Londn"')
    with pytest.raises(SiteFileInvalid) as caught:
        parse_site("BEN1.toml", bad, lambda n: PLAN, {"Europe/London", "UTC"})
    assert [str(p) for p in caught.value.problems] == [
        f"BEN1.toml:{line_of(bad, 'timezone')}: site.timezone: unknown time zone "
        "'Europe/Londn' (an IANA name, e.g. Europe/Paris)"
    ]
    assert parse_site("BEN1.toml", bad, lambda n: PLAN).sites[0].timezone == "Europe/Londn"


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=40))  # fmt: skip
def test_any_text_survives_render_and_parse(text: str) -> None:
    """Names, descriptions and device settings of any text come back as written."""
    data = parse()
    site = replace(data.sites[0], name=text or "x")
    points = (replace(data.read_points[0], description=text), *data.read_points[1:])
    devices = (replace(data.devices[0], settings={"note": text, text or "k": 1}),
               *data.devices[1:])  # fmt: skip
    changed = replace(data, sites=(site,), read_points=points, devices=devices)
    files = render_site(changed, "BEN1-sortplan.csv")
    assert parse(files["site"], files["BEN1-sortplan.csv"]) == changed


def test_a_nul_character_is_refused_where_it_is() -> None:
    """PostgreSQL stores no NUL in text: the file says where one is instead of failing later."""
    bad = TOML.replace('description = "Next day"', 'description = "Next\\u0000day"')
    assert _one_problem(bad) == (
        f"BEN1.toml:{line_of(bad, 'Next')}: service_class[1].description: must not contain the "
        "NUL character"
    )


def test_device_threshold_defaults_are_the_detectors() -> None:
    """A site file's unset thresholds and the detector's fallbacks are the same numbers."""
    from detect.devices import DeviceThresholds as DetectorThresholds
    from storage.model import THRESHOLD_FIELDS, DeviceThresholds

    stored, detector = DeviceThresholds("X"), DetectorThresholds()
    assert {f: getattr(stored, f) for f in THRESHOLD_FIELDS} == {
        f: getattr(detector, f) for f in THRESHOLD_FIELDS
    }
