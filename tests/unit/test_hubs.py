"""A Chinese hub in a generated scenario: S10 numbers ending in CN, the Asia/Shanghai
zone, read points named in Chinese, and configurable express standards (same city
J+1 ~ 24 h, other cities J+3 ~ 72 h by default)."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from firmware_sim.commands import config_from_args, scenario_arguments
from firmware_sim.hubs import CHINESE_HUB
from firmware_sim.scenario import Scenario, ScenarioConfig, ScenarioError, generate
from parceltrack.identifiers import parse_s10

SITES = ("LHR1", "MAN1", "PVG1")


def _scenario(**overrides: object) -> Scenario:
    config = ScenarioConfig(
        seed=5,
        sites=SITES,
        rfid_sites=(),
        destinations=("LON", "MAN", "SHA", "BHX", "GLA", "SUZ"),
        parcels=600,
        hubs=(CHINESE_HUB,),
    )
    return generate(replace(config, **overrides))  # type: ignore[arg-type]


def test_parcels_posted_at_the_hub_carry_chinese_s10_numbers() -> None:
    """Every parcel posted at PVG1 has a valid S10 number ending in CN; the rest GB."""
    scenario = _scenario()
    countries = {m.origin_site: set() for m in scenario.manifest}
    for entry in scenario.manifest:
        countries[entry.origin_site].add(parse_s10(entry.tracking_id).country)
    assert countries == {"LHR1": {"GB"}, "MAN1": {"GB"}, "PVG1": {"CN"}}


def test_the_hub_has_its_zone_name_and_chinese_read_points() -> None:
    """The hub is in Asia/Shanghai under its Chinese name, its read points named in
    Chinese; the other centres keep UTC and English."""
    scenario = _scenario()
    sites = {s.site: s for s in scenario.sites}
    assert (sites["PVG1"].timezone, sites["PVG1"].name) == ("Asia/Shanghai", "上海邮件处理中心")
    assert sites["LHR1"].timezone == "UTC"
    names = {r.read_point: r.description for r in scenario.read_points}
    assert (names["PVG1-IND1"], names["PVG1-TUN1"], names["PVG1-DOR01"]) == (
        "供件线 1",
        "扫描通道 1",
        "发运口 1",
    )
    assert names["LHR1-IND1"] == "Induction line 1"
    reference = scenario.reference_data()
    assert {s.site_id: s.timezone for s in reference.sites}["PVG1"] == "Asia/Shanghai"


def test_hub_parcels_get_same_city_or_other_city_express_standards() -> None:
    """A hub parcel the hub also delivers travels same-city (J+1), any other one to
    other cities (J+3); no other centre's parcels get those classes."""
    scenario = _scenario()
    days = {c.service_class: c.delivery_days for c in scenario.service_classes}
    assert (days["pvg1-same-city"], days["pvg1-other-city"]) == (1, 3)
    for entry in scenario.manifest:
        if entry.origin_site == "PVG1":
            same = entry.destination_site == "PVG1"
            assert entry.service_class == ("pvg1-same-city" if same else "pvg1-other-city")
        else:
            assert not entry.service_class.startswith("pvg1-")
    classes = {m.service_class for m in scenario.manifest if m.origin_site == "PVG1"}
    assert classes == {"pvg1-same-city", "pvg1-other-city"}  # both occur


def test_the_hub_standards_are_configurable() -> None:
    """Other figures than 24 h / 72 h are a field away, not a code change."""
    hub = replace(CHINESE_HUB, same_city_days=2, other_city_days=4)
    scenario = _scenario(hubs=(hub,))
    days = {c.service_class: c.delivery_days for c in scenario.service_classes}
    assert (days["pvg1-same-city"], days["pvg1-other-city"]) == (2, 4)


def test_a_scenario_file_keeps_its_hub() -> None:
    """Saved and loaded, the scenario has the same hub, sites and manifest."""
    scenario = _scenario()
    again = Scenario.from_dict(scenario.to_dict())
    assert again.config.hubs == (CHINESE_HUB,)
    assert again.sites == scenario.sites
    assert again.manifest == scenario.manifest


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        (replace(CHINESE_HUB, site="XXX1"), r"hubs \['XXX1'\] are not among the sites"),
        (replace(CHINESE_HUB, timezone="Mars/Olympus"), "unknown timezone 'Mars/Olympus'"),
        (replace(CHINESE_HUB, country="cn"), "country must be 2 capital letters"),
        (replace(CHINESE_HUB, language="fr"), "language must be one of"),
        (replace(CHINESE_HUB, other_city_days=-1), "delivery days must be >= 0"),
    ],
    ids=["unknown-site", "zone", "country", "language", "days"],
)
def test_a_wrong_hub_is_refused_naming_what_is_wrong(hub: object, message: str) -> None:
    """A hub that cannot be generated is a ScenarioError that says why."""
    with pytest.raises(ScenarioError, match=message):
        _scenario(hubs=(hub,))


def test_sim_generate_makes_a_chinese_hub_with_its_standards() -> None:
    """`sim generate --chinese-hub PVG1 --same-city-days 2` configures that hub."""
    parser = argparse.ArgumentParser()
    scenario_arguments(parser)
    args = parser.parse_args(
        ["--sites", "LHR1,PVG1", "--chinese-hub", "PVG1", "--same-city-days", "2"]
    )
    (hub,) = config_from_args(args).hubs
    assert (hub.site, hub.timezone, hub.country) == ("PVG1", "Asia/Shanghai", "CN")
    assert (hub.same_city_days, hub.other_city_days) == (2, 3)
    assert config_from_args(parser.parse_args(["--sites", "LHR1"])).hubs == ()
