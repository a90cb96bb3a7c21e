"""The manager page and the control room's floor view in Chromium: charts drawn by the
vendored ECharts, table views, CSV exports, both languages, nothing fetched from
another site and no script or style refused by the page's policy."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from api.quality_texts import texts
from storage import figures
from tests.api.conftest import SITE, make_key
from tests.pages.conftest import Site


@pytest.fixture
def watched(page: Page, site: Site) -> Iterator[list[str]]:
    """The page's console errors, page errors and requests to any other origin (refused)."""
    problems: list[str] = []
    origin = urlsplit(site.url).netloc

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def foreign(route: object) -> None:
        request = route.request  # type: ignore[attr-defined]
        if urlsplit(request.url).netloc not in ("", origin) and request.url.startswith("http"):
            problems.append(f"foreign request: {request.url}")
            route.abort()  # type: ignore[attr-defined]
        else:
            route.continue_()  # type: ignore[attr-defined]

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.route("**/*", foreign)
    yield problems


def _sign_in(page: Page, site: Site, key: str, lang: str = "en") -> None:
    page.goto(f"{site.url}/manager?lang={lang}")
    words = texts(lang)
    page.get_by_label(words["key_label"]).fill(key)
    page.get_by_role("button", name=words["key_button"]).click()


def test_manager_page_draws_every_figure_with_table_and_csv(
    page: Page, site: Site, artifacts: Path, watched: list[str]
) -> None:
    """Signed in as a manager, the page shows the figures at a glance and a chart for each
    figure; Table shows the same rows; Download CSV gives the API's CSV; nothing is
    fetched from elsewhere and the security policy refuses nothing."""
    key = make_key(site.dsn, "manager")
    _sign_in(page, site, key)
    words = texts("en")
    glance = page.locator("#glance")
    expect(glance).to_contain_text(words["on_time_rate"])
    # The seed: one of two chuted parcels mis-sorted.
    expect(glance.locator('[data-fact="mis_sort_rate"]')).to_have_text("50%")
    for name in figures.names():
        section = page.locator(f'section[data-figure="{name}"]')
        expect(section.locator(".chart svg")).to_be_visible()
        expect(section).to_have_attribute("data-rows", __import__("re").compile(r"\d+"))
    page.screenshot(path=str(artifacts / "manager-page.png"), full_page=True)

    rates = page.locator('section[data-figure="rates"]')
    rates.get_by_role("button", name=words["view_table"]).click()
    table = rates.locator("table")
    expect(table).to_be_visible()
    expect(rates.locator(".chart")).to_be_hidden()
    expect(table.locator("thead th").first).to_have_text("site_id")
    expect(table.locator("tbody tr")).to_have_count(int(rates.get_attribute("data-rows") or 0))
    page.screenshot(path=str(artifacts / "manager-page-table.png"), full_page=True)

    with page.expect_download() as download_info:
        rates.get_by_role("button", name=words["download_csv"]).click()
    download = download_info.value
    assert download.suggested_filename == "rates.csv"
    exported = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    api_csv = httpx.get(
        f"{site.url}/v1/manager/figures/rates",
        params={"format": "csv", "site": SITE},
        headers={"Authorization": f"Bearer {key}"},
    ).text
    assert exported[0] == next(csv.reader(io.StringIO(api_csv)))
    assert [r[2:] for r in exported[1:]] == [
        r[2:] for r in list(csv.reader(io.StringIO(api_csv)))[1:]
    ]
    assert watched == []


def test_manager_page_in_chinese(
    page: Page, site: Site, artifacts: Path, watched: list[str]
) -> None:
    """?lang=zh-CN gives the page, its headings and the glance labels in Chinese."""
    _sign_in(page, site, make_key(site.dsn, "manager"), "zh-CN")
    words = texts("zh-CN")
    assert words["page_title"] != texts("en")["page_title"]
    expect(page.get_by_role("heading", level=1)).to_have_text(words["page_title"])
    expect(page.locator("#glance")).to_contain_text(words["no_read_rate"])
    expect(page.locator('section[data-figure="dwell"] .chart svg')).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.screenshot(path=str(artifacts / "manager-page-zh.png"), full_page=True)
    assert watched == []


def test_controller_key_is_refused_with_the_reason(page: Page, site: Site) -> None:
    """A controller's key gets the 403 reason and the key form again."""
    _sign_in(page, site, site.controller_key)
    problem = page.get_by_role("alert")
    expect(problem).to_contain_text(texts("en")["key_forbidden"])
    expect(problem).to_contain_text("needs manager")
    expect(page.get_by_label(texts("en")["key_label"])).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_floor_view_in_the_control_room(
    page: Page, site: Site, artifacts: Path, watched: list[str]
) -> None:
    """The control room shows each read point in flow order under its stage, the sorter
    red for its open mis-sort alert, and a throughput sparkline per read point."""
    page.goto(f"{site.url}/control-room")
    page.get_by_label("Controller API key").fill(site.controller_key)
    page.get_by_role("button", name="Open the control room").click()
    floor = page.locator("#floor")
    expect(floor.get_by_role("heading", name=texts("en")["floor_title"])).to_be_visible()
    stages = floor.locator(".floor-stage")
    expect(stages).to_have_count(5)
    assert stages.evaluate_all("els => els.map(e => e.dataset.stage)") == [
        "induction", "tunnel", "sort", "chute", "dispatch",
    ]  # fmt: skip
    sorter = floor.locator(f'[data-read-point="{SITE}-SRT1"]')
    expect(sorter).to_have_attribute("data-level", "bad")
    expect(sorter).to_contain_text("1 " + texts("en")["floor_alerts"])
    expect(floor.locator(f'[data-read-point="{SITE}-TUN1"] svg polyline')).to_have_count(1)
    floor.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "control-room-floor.png"), full_page=True)
    assert watched == []


def test_staff_ratings_and_their_history_on_the_page(
    page: Page, site: Site, artifacts: Path, watched: list[str]
) -> None:
    """A staff member named in two complaints and one praise is listed at 70 points
    (100 - 20 + 10 - 20), no star, 0.7x bonus; History shows the three steps, oldest
    first."""
    key = make_key(site.dsn, "manager")
    headers = {"Authorization": f"Bearer {key}"}
    registered = httpx.put(
        f"{site.url}/v1/staff/S-9", json={"name": "Zhang Min", "site_id": SITE}, headers=headers
    )
    assert registered.status_code == 200
    for kind in ("complaint", "praise", "complaint"):
        sent = httpx.post(
            f"{site.url}/v1/parcels/{site.seeded.dispatched}/feedback",
            json={"kind": kind, "message": "counter 2", "staff_id": "S-9"},
        )
        assert sent.status_code == 201
    _sign_in(page, site, key)
    words = texts("en")
    row = page.locator('#staff-table tr[data-staff="S-9"]')
    expect(row).to_contain_text("Zhang Min")
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text("70")
    expect(cells.nth(2)).to_have_text("☆")
    expect(cells.nth(3)).to_have_text("0.7\N{MULTIPLICATION SIGN}")
    expect(cells.nth(4)).to_have_text("1 / 2")
    row.get_by_role("button", name=words["history"]).click()
    history = page.locator("#staff-history")
    expect(history.locator("tbody tr")).to_have_count(3)
    expect(history.locator("tbody tr td:nth-child(4)")).to_have_text(["80", "90", "70"])
    page.locator("#staff").screenshot(path=str(artifacts / "manager-staff.png"))
    assert watched == []
