"""The admin API reaches every detection setting a site file holds (successors, missing
windows, device thresholds, tolerances, device protocol and settings) and refuses what a
site file refuses, in the same words."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from storage.sitefile import SiteFileInvalid, parse_site
from tests.api.conftest import SITE, Seeded, auth

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site-files"


def _file_problem(old: str, new: str) -> str:
    """The message the example site file gets with `old` replaced by `new`."""
    text = (EXAMPLE / "BEN1.toml").read_text()
    assert old in text
    with pytest.raises(SiteFileInvalid) as caught:
        parse_site("BEN1.toml", text.replace(old, new, 1), lambda n: (EXAMPLE / n).read_text())
    (problem,) = caught.value.problems
    return problem.message.replace("BEN1", SITE)


def test_successors_one_or_many_per_read_point(
    client: TestClient, seeded: Seeded, keys: dict[str, str], db_dsn: str
) -> None:
    """A sorter gets several successors; a read point PUT without a next hop keeps them."""
    h = auth(keys["admin"])
    url = f"/v1/admin/read-points/{SITE}-SRT1/successors"
    chutes = [f"{SITE}-CHU01", f"{SITE}-CHU02", f"{SITE}-CHU03"]
    assert client.put(url, json={"successors": chutes}, headers=h).status_code == 200
    assert client.get(url, headers=h).json() == {
        "read_point_id": f"{SITE}-SRT1",
        "successors": chutes,
    }
    rp = {"site_id": SITE, "zone": "sorter", "stage": "sort", "position": 3, "description": "S"}
    assert client.put(f"/v1/admin/read-points/{SITE}-SRT1", json=rp, headers=h).status_code == 200
    assert client.get(url, headers=h).json()["successors"] == chutes
    listed = client.get("/v1/admin/read-points", headers=h).json()
    assert next(r for r in listed if r["read_point_id"] == f"{SITE}-SRT1")["successors"] == chutes
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute(
            "SELECT next_read_point_id FROM read_points WHERE read_point_id = %s",
            (f"{SITE}-SRT1",),
        ).fetchone() == (None,)  # several successors: no single next hop
    missing = client.put(url, json={"successors": [f"{SITE}-NOPE"]}, headers=h)
    assert missing.status_code == 422
    assert missing.json()["detail"] == _file_problem(
        'successors = ["BEN1-DOR01"]', 'successors = ["BEN1-NOPE"]'
    ).replace(f"{SITE}-CHU01", f"{SITE}-SRT1")
    assert client.get(url, headers=h).json()["successors"] == chutes  # nothing changed
    nowhere = client.put("/v1/admin/read-points/XX-1/successors", json={"successors": []},
                         headers=h)  # fmt: skip
    assert nowhere.status_code == 404


def test_missing_windows_are_set_listed_and_removed(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A window per site, stage and class is stored, listed, replaced and removed."""
    h = auth(keys["admin"])
    url = f"/v1/admin/sites/{SITE}/missing-windows"
    assert client.put(url, json={"window_s": 90}, headers=h).status_code == 200
    chute = {"stage": "chute", "service_class": "express", "window_s": 3600}
    assert client.put(url, json=chute, headers=h).status_code == 200
    assert client.put(url, json=chute | {"window_s": 1800}, headers=h).status_code == 200
    assert client.get(url, headers=h).json() == [
        {"site_id": SITE, "stage": None, "service_class": None, "window_s": 90.0},
        chute | {"site_id": SITE, "window_s": 1800.0},
    ]
    params = {"stage": "chute", "service_class": "express"}
    assert client.delete(url, params=params, headers=h).status_code == 204
    assert client.delete(url, params=params, headers=h).status_code == 404
    assert len(client.get(url, headers=h).json()) == 1


@pytest.mark.parametrize(
    ("body", "old", "new"),
    [
        pytest.param({"stage": "sortt", "window_s": 60}, 'stage = "chute"\nwindow_s',
                     'stage = "sortt"\nwindow_s', id="unknown-stage"),
        pytest.param({"window_s": -1.0}, "window_s = 3600.0", "window_s = -1.0",
                     id="negative-window"),
        pytest.param({"stage": "customs", "window_s": 60}, 'stage = "chute"\nwindow_s',
                     'stage = "customs"\nwindow_s', id="stage-without-read-point"),
    ],
)  # fmt: skip
def test_a_missing_window_is_refused_as_a_site_file_refuses_it(
    client: TestClient, seeded: Seeded, keys: dict[str, str], body: dict[str, object],
    old: str, new: str,
) -> None:  # fmt: skip
    """The API's 422 says word for word what the site file's problem says."""
    url = f"/v1/admin/sites/{SITE}/missing-windows"
    response = client.put(url, json=body, headers=auth(keys["admin"]))
    assert response.status_code == 422
    assert response.json()["detail"] == _file_problem(old, new)
    assert client.get(url, headers=auth(keys["admin"])).json() == []


def test_device_thresholds_and_tolerances_per_site(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """Silence and spike limits (unset ones at their defaults) and tolerances are stored."""
    h = auth(keys["admin"])
    url = f"/v1/admin/sites/{SITE}/device-thresholds"
    assert client.get(url, headers=h).status_code == 404
    put = client.put(url, json={"silence_s": 300, "open_rate": 0.3}, headers=h)
    assert put.status_code == 200
    assert client.get(url, headers=h).json() == put.json()
    assert put.json() | {} == {
        "site_id": SITE, "silence_s": 300.0, "bin_s": 10.0, "window_bins": 6, "bins": 60,
        "open_rate": 0.3, "close_rate": 0.1, "jump": 3.0, "min_reads": 20, "min_noreads": 8,
    }  # fmt: skip
    bad = client.put(url, json={"open_rate": 0.1, "close_rate": 0.2}, headers=h)
    assert bad.status_code == 422
    assert bad.json()["detail"] == _file_problem("close_rate = 0.1", "close_rate = 0.3")
    url = f"/v1/admin/sites/{SITE}/tolerances"
    body = {"skew_tolerance_s": 2.0, "duplicate_gap_s": 5.0}
    assert client.put(url, json=body, headers=h).status_code == 200
    assert client.get(url, headers=h).json() == body | {"site_id": SITE}
    bad = client.put(url, json=body | {"duplicate_gap_s": 0}, headers=h)
    assert bad.status_code == 422
    assert bad.json()["detail"] == _file_problem("duplicate_gap_s = 5.0", "duplicate_gap_s = 0.0")
    unknown = client.put("/v1/admin/sites/XX9/tolerances", json=body, headers=h)
    assert unknown.status_code == 409 and "XX9" in unknown.json()["detail"]


def test_a_device_has_a_protocol_and_settings(
    client: TestClient, seeded: Seeded, keys: dict[str, str], db_dsn: str
) -> None:
    """A device's protocol is one the edge speaks, and its settings are stored as given."""
    h = auth(keys["admin"])
    dev = {"site_id": SITE, "read_point_id": f"{SITE}-IND1", "kind": "mercury",
           "settings": {"region": "EU", "power_dbm": 27.5}}  # fmt: skip
    assert client.put(f"/v1/admin/devices/{SITE}-gate9", json=dev, headers=h).status_code == 200
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute(
            "SELECT kind, settings FROM devices WHERE device_id = %s", (f"{SITE}-gate9",)
        ).fetchone() == ("mercury", {"region": "EU", "power_dbm": 27.5})
    bad = client.put(f"/v1/admin/devices/{SITE}-gate9", json=dev | {"kind": "laser"}, headers=h)
    assert bad.status_code == 422 and "barcode" in str(bad.json()["detail"])


def test_sort_plans_are_refused_as_a_site_file_refuses_them(
    client: TestClient, seeded: Seeded, keys: dict[str, str]
) -> None:
    """A door as chute, a destination twice and a second version from the same moment are
    422 in the site file's words; nothing is stored."""
    h = auth(keys["admin"])
    url = f"/v1/admin/sites/{SITE}/sort-plans"
    before = client.get(url, headers=h).json()
    at = "2030-01-01T00:00:00+00:00"
    entry = {"destination": "LON", "chute_read_point_id": f"{SITE}-CHU01",
             "door_read_point_id": f"{SITE}-DOR01"}  # fmt: skip
    door_as_chute = entry | {"chute_read_point_id": f"{SITE}-DOR01"}
    bad = client.post(url, json={"effective_from": at, "entries": [door_as_chute]}, headers=h)
    assert bad.status_code == 422
    assert bad.json()["detail"] == (
        f"'{SITE}-DOR01' is not a chute read point of this site (it is a door read point)"
    )
    twice = client.post(url, json={"effective_from": at, "entries": [entry, entry]}, headers=h)
    assert twice.status_code == 422
    assert twice.json()["detail"] == (
        f"destination 'LON' appears twice in the version in force from {at}"
    )
    assert client.get(url, headers=h).json() == before
    first = client.post(url, json={"effective_from": at, "entries": [entry]}, headers=h)
    assert first.status_code == 201
    again = client.post(url, json={"effective_from": at, "entries": [entry]}, headers=h)
    assert again.status_code == 422
    assert again.json()["detail"] == (
        f"overlapping plan versions: version {first.json()['version']} is already in force "
        f"from {at}"
    )
