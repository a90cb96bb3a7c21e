"""The pages in Chinese and English in Chromium: chosen by the browser's language, by
?lang= and by the switcher; times in the site's own zone with the zone named; the
API's reasons in the page's language. Screenshots of both go to test-artifacts/."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from api.page_texts import catalog
from tests.api.conftest import SITE
from tests.pages.conftest import Site

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module", autouse=True)
def _cjk_font() -> None:
    """Chinese screenshots are only worth keeping with a font that has the glyphs."""
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False)
    if not fonts.stdout.strip():
        pytest.fail("no font with Chinese glyphs: apt-get install -y fonts-wqy-zenhei")


@pytest.fixture
def chinese(browser: Browser) -> Iterator[BrowserContext]:
    """A browser whose user reads Chinese (it sends Accept-Language: zh-CN)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    yield context
    context.close()


def _in_shanghai(site: Site) -> None:
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute("UPDATE sites SET timezone = 'Asia/Shanghai' WHERE site_id = %s", (SITE,))


def _local(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(SHANGHAI)


def _english_leaks(text: str) -> list[str]:
    """Sentences of the pages' catalog (three words or more) left in English in `text`."""
    return [m for m in catalog("en") if len(m.split()) >= 3 and m in text]


def test_tracking_page_in_chinese_for_a_chinese_browser_with_shanghai_times(
    chinese: BrowserContext, site: Site, artifacts: Path
) -> None:
    """A browser asking for zh-CN gets the page, status, UPU events and on-time status in
    Chinese, and every time in the site's zone (Asia/Shanghai), named in Chinese."""
    _in_shanghai(site)
    page = chinese.new_page()
    page.goto(f"{site.url}/track?id={site.seeded.dispatched}")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.get_by_role("heading", level=1)).to_have_text("查询邮件")
    expect(page.get_by_role("heading", name=f"邮件 {site.seeded.dispatched}")).to_be_visible()
    expect(page.locator("#parcel-status")).to_have_text("已离开处理中心")
    expect(page.locator("#parcel-delivery .on-time")).to_have_text("准时")

    rows = page.locator("#parcel-timeline tbody tr")
    expect(rows.first.locator("td").nth(1)).to_have_text("收寄")  # EMA
    events = rows.locator("td:nth-child(2)").all_inner_texts()
    assert {"到达处理中心", "离开处理中心", "已扫描"} <= set(events)
    for time in page.locator("#parcel-timeline time").all():
        when = _local(time.get_attribute("datetime") or "")
        text = time.inner_text()
        assert f"{when:%H:%M:%S}" in text and "中国标准时间" in text, text
        assert f"{when.year}年{when.month}月{when.day}日" in text, text
    due = page.locator("[data-fact=due] time")
    expect(due).to_contain_text("中国标准时间")
    assert _english_leaks(page.locator("main").inner_text()) == []
    page.screenshot(path=str(artifacts / "tracking-page-zh-CN.png"), full_page=True)


def test_tracking_page_in_english_names_the_site_zone(
    page: Page, site: Site, artifacts: Path
) -> None:
    """In English the same parcel's times are Shanghai's, named China Standard Time."""
    _in_shanghai(site)
    page.goto(f"{site.url}/track?id={site.seeded.dispatched}&lang=en")
    expect(page.get_by_role("heading", name=f"Parcel {site.seeded.dispatched}")).to_be_visible()
    location = page.locator("#parcel-location time")
    when = _local(location.get_attribute("datetime") or "")
    expect(location).to_contain_text(f"{when:%H:%M:%S} China Standard Time")
    expect(location).to_contain_text(f"{when.day} {when:%b} {when.year}")
    expect(page.locator("#parcel-timeline tbody tr").first.locator("td").nth(1)).to_have_text(
        "Posting/collection"
    )
    page.screenshot(path=str(artifacts / "tracking-page-en-shanghai.png"), full_page=True)


def test_query_beats_the_browser_and_the_switcher_keeps_the_parcel(
    chinese: BrowserContext, site: Site
) -> None:
    """?lang=en overrides a Chinese browser; the switcher then opens the same parcel in
    Chinese, and marks the current language."""
    page = chinese.new_page()
    parcel = site.seeded.in_sorting
    page.goto(f"{site.url}/track?id={parcel}&lang=en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Track a parcel")
    expect(page.locator("#parcel-status")).to_have_text("In sorting")
    switcher = page.get_by_role("navigation", name="Language")
    expect(switcher.locator("[aria-current=true]")).to_have_text("English")
    switcher.get_by_role("link", name="简体中文").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("查询邮件")
    expect(page.locator("#parcel-status")).to_have_text("分拣中")
    expect(page).to_have_url(re.compile(rf"id={parcel}.*lang=zh-CN|lang=zh-CN.*id={parcel}"))
    expect(page.get_by_role("navigation", name="语言").locator("[aria-current=true]")).to_have_text(
        "简体中文"
    )


def test_chinese_page_shows_the_apis_reasons_in_chinese(
    chinese: BrowserContext, site: Site
) -> None:
    """A bad check digit and an unknown parcel are explained in Chinese, the API's own
    detail included."""
    page = chinese.new_page()
    page.goto(f"{site.url}/track")
    page.get_by_label("运单号").fill("RR473124828GB")
    page.get_by_role("button", name="查询", exact=True).click()
    problem = page.get_by_role("alert")
    expect(problem).to_contain_text("这不是有效的运单号")
    expect(problem).to_contain_text("未通过 S10 校验位检查：第 11 位是 8，应为 9")
    page.get_by_label("运单号").fill("ZZ123456785GB")
    page.get_by_role("button", name="查询", exact=True).click()
    expect(problem).to_contain_text("查无此邮件")
    expect(problem).to_contain_text("没有运单号为 ZZ123456785GB 的邮件")


def test_control_room_in_chinese(chinese: BrowserContext, site: Site, artifacts: Path) -> None:
    """The control room in Chinese: a wrong key's reason, sign-in, headings, live state,
    alert kinds, the assignee (and assigning to oneself) and devices; a parcel link opens
    the tracking page in Chinese."""
    page = chinese.new_page()
    page.goto(f"{site.url}/control-room")
    expect(page.get_by_role("heading", level=1)).to_have_text("控制室")
    page.get_by_label("调度员 API 密钥").fill("pt_not-a-key")
    page.get_by_role("button", name="进入控制室").click()
    problem = page.get_by_role("alert")
    expect(problem).to_contain_text("API 密钥未被接受：API 密钥未知或已被吊销。")
    expect(problem).to_contain_text("请检查密钥后重新输入。")
    page.get_by_label("调度员 API 密钥").fill(site.controller_key)
    page.get_by_role("button", name="进入控制室").click()
    expect(page.locator("#live")).to_have_text("实时")
    expect(page.locator("#alert-count")).to_have_text("1 条未处理，0 条已确认")
    expect(page.locator(".kind-group h4")).to_have_text("错分 (1)")
    expect(page.locator("#device-summary")).to_contain_text("台在线")
    expect(page.get_by_role("button", name=re.compile(r"确认告警 \d+"))).to_be_visible()
    expect(page.locator(".alert .assignee")).to_have_text("未分派")
    page.get_by_role("button", name=re.compile(r"将告警 \d+ 分派给我")).click()
    expect(page.locator(".alert .assignee")).to_have_text("已分派给 controller-1")
    expect(page.get_by_role("button", name=re.compile(r"取消告警 \d+ 的分派"))).to_be_visible()
    link = page.locator("#alert-groups a").first
    expect(link).to_have_attribute("href", re.compile(r"lang=zh-CN"))
    assert _english_leaks(page.locator("main").inner_text()) == []
    page.screenshot(path=str(artifacts / "control-room-zh-CN.png"), full_page=True)


def test_pages_say_their_language_in_headers_and_keep_the_csp(site: Site) -> None:
    """A page answers with Content-Language and Vary: Accept-Language, its html lang and
    config in that language, under the same strict CSP."""
    for header, expected in (("zh-CN,zh;q=0.9", "zh-CN"), ("en-GB", "en"), ("fr", "en")):
        for path in ("/track", "/control-room"):
            response = httpx.get(site.url + path, headers={"Accept-Language": header}, timeout=10)
            assert response.status_code == 200
            assert response.headers["content-language"] == expected
            assert "Accept-Language" in response.headers["vary"]
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert f'<html lang="{expected}">' in response.text
            assert f'"lang": "{expected}"' in response.text
