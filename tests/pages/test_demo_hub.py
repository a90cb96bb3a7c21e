"""The demo's Chinese hub in Chromium: the tracking link the demo prints for a parcel
posted in Shanghai opens in Chinese for a Chinese browser (and in English for an
English one), with the hub's name, its read points and its times in Asia/Shanghai."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, expect

from api.app import create_app
from composition.demo import chinese_parcel, demo_scenario
from composition.services import PrivateMosquitto
from firmware_sim.scenario import Scenario
from ingest.store import ScanPartitions, write_scans
from parceltrack.events import EventKind, ScanEvent
from parceltrack.identifiers import parse_s10
from storage.migrations import has_timescale
from storage.reference import load
from tests.api.conftest import ThreadedServer, settings_for


def _scans(scenario: Scenario, parcel: str) -> list[ScanEvent]:
    """The parcel's reads as the edge would have sent them, ending a minute ago."""
    site_of = {r.read_point: r.site for r in scenario.read_points}
    reads = [r for r in scenario.iter_reads() if r.tracking_id == parcel and r.code]
    end = datetime.now(UTC) - timedelta(minutes=1)
    return [
        ScanEvent(
            device=r.device,
            boot=1,
            seq=seq,
            ts=end - timedelta(seconds=reads[-1].at - r.at),
            site=site_of[r.read_point],
            read_point=r.read_point,
            kind=EventKind.READ,
            code=r.code,
            tracking_id=r.tracking_id,
        )
        for seq, r in enumerate(reads, 1)
    ]


@pytest.fixture
def demo_api(db_dsn: str, mqtt_server: PrivateMosquitto) -> Iterator[tuple[str, str]]:
    """The API over the demo's reference data, with the Chinese link's parcel scanned."""
    scenario = demo_scenario(parcels=600)
    parcel = chinese_parcel(scenario)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        load(conn, scenario.reference_data())
        scans = _scans(scenario, parcel)
        with conn.transaction():
            write_scans(conn, scans, ScanPartitions(has_timescale(conn)))
        # Posted a little before its first scan, as in the running demo.
        conn.execute(
            "UPDATE parcels SET accepted_at = %s WHERE tracking_id = %s",
            (scans[0].ts - timedelta(minutes=5), parcel),
        )
    with ThreadedServer(create_app(settings_for(db_dsn, mqtt_server))) as server:
        yield f"{server.url}/track?id={parcel}", parcel


def test_the_demos_chinese_link_opens_in_chinese(
    browser: Browser, demo_api: tuple[str, str], artifacts: Path
) -> None:
    """A Chinese browser following the demo's link reads the hub's parcel in Chinese,
    at 上海邮件处理中心, with times in China Standard Time, named in Chinese."""
    link, parcel = demo_api
    assert parse_s10(parcel).country == "CN"
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(link)
        expect(page.get_by_role("heading", name=f"邮件 {parcel}")).to_be_visible()
        location = page.locator("#parcel-location")
        expect(location).to_contain_text("上海邮件处理中心 (PVG1)")
        expect(location).to_contain_text("中国标准时间")
        events = page.locator("#parcel-timeline tbody td:nth-child(2)")
        expect(events.first).to_have_text("收寄")
        assert "到达处理中心" in events.all_inner_texts()
        where = page.locator("#parcel-timeline tbody td:nth-child(4)").all_inner_texts()
        assert any("供件线" in w for w in where), where
        expect(page.locator("#parcel-delivery [data-fact=due]")).to_contain_text("J+")
        page.screenshot(path=str(artifacts / "demo-chinese-hub-zh-CN.png"), full_page=True)

        english = browser.new_context(locale="en-GB")
        try:
            page = english.new_page()
            page.goto(link)
            expect(page.get_by_role("heading", name=f"Parcel {parcel}")).to_be_visible()
            expect(page.locator("#parcel-location")).to_contain_text("China Standard Time")
        finally:
            english.close()
    finally:
        context.close()
