"""The tracking page in Chromium: a parcel's location, timeline with UPU codes, ETA
and on-time status, and clear messages for invalid and unknown numbers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect

from api.app import create_app
from composition.services import PrivateMosquitto
from parceltrack.identifiers import S10
from tests.api.conftest import ThreadedServer, seed, settings_for
from tests.pages.conftest import Site


def _view(site: Site, tracking_id: str) -> dict[str, Any]:
    response = httpx.get(f"{site.url}/v1/parcels/{tracking_id}", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _track(page: Page, number: str) -> None:
    page.get_by_label("Tracking number").fill(number)
    page.get_by_role("button", name="Track").click()


def test_tracking_page_shows_location_timeline_and_eta(
    page: Page, site: Site, artifacts: Path
) -> None:
    """Looking a parcel up shows where it is, every timeline event with its UPU code,
    the ETA and the on-time status, exactly as the API reports them."""
    parcel = site.seeded.dispatched
    view = _view(site, parcel)
    assert view["delivery"]["eta"] is not None  # the seed gives this parcel an ETA
    page.goto(f"{site.url}/track")
    expect(page.get_by_role("heading", level=1)).to_have_text("Track a parcel")
    _track(page, parcel.lower())  # the API accepts lower case; the page shows its form

    expect(page.get_by_role("heading", name=f"Parcel {parcel}")).to_be_visible()
    location = page.locator("#parcel-location")
    last = view["last_location"]
    expect(location).to_contain_text(last["site"])
    expect(location).to_contain_text(last["description"] or last["read_point"])
    expect(location.locator(f'time[datetime="{last["time"]}"]')).to_have_count(1)

    rows = page.locator("#parcel-timeline tbody tr")
    expect(rows).to_have_count(len(view["timeline"]))
    codes = [e["upu_event"]["code"] if e["upu_event"] else "—" for e in view["timeline"]]
    assert rows.locator("td:nth-child(3)").all_inner_texts() == codes
    assert {"EMA", "EDD", "EDE"} <= set(codes)  # accepted, into the centre, out of it

    delivery = page.locator("#parcel-delivery")
    eta = delivery.locator("[data-fact=eta] time")
    expect(eta).to_have_attribute("datetime", view["delivery"]["eta"])
    expect(delivery.locator("[data-fact=due] time")).to_have_attribute(
        "datetime", view["delivery"]["due"]
    )
    on_time = {True: "On time", False: "Late", None: "Not known yet"}[view["delivery"]["on_time"]]
    expect(delivery.locator(".on-time")).to_have_text(on_time)
    expect(page.locator("#parcel-status")).to_have_attribute("data-status", view["status"])
    for leak in ("null", "undefined", "NaN"):  # nothing missing is shown raw
        expect(page.locator("#parcel")).not_to_contain_text(leak)
    expect(page).to_have_url(f"{site.url}/track?id={parcel.lower()}")
    page.screenshot(path=str(artifacts / "tracking-page.png"), full_page=True)


def test_tracking_page_explains_invalid_and_unknown_numbers(page: Page, site: Site) -> None:
    """A malformed number and a bad check digit show the API's reason; a valid number
    nobody registered says the parcel is unknown; none of them shows a parcel."""
    page.goto(f"{site.url}/")  # the tracking page is also the home page
    problem = page.get_by_role("alert")

    _track(page, "RR473124828GB")  # check digit should be 9
    expect(problem).to_contain_text("That is not a valid tracking number")
    expect(problem).to_contain_text("fails the S10 check digit: digit 11 is 8, expected 9")
    expect(page.locator("#parcel")).to_be_hidden()

    _track(page, "hello")
    expect(problem).to_contain_text("is not an S10 tracking number")

    _track(page, "RR/12")  # would change the address asked: refused on the page
    expect(problem).to_contain_text("cannot be a tracking number")

    unknown = str(S10.make("ZZ", 12345678, "GB"))
    assert httpx.get(f"{site.url}/v1/parcels/{unknown}", timeout=10).status_code == 404
    _track(page, unknown)
    expect(problem).to_contain_text("We do not know this parcel")
    expect(problem).to_contain_text(f"No parcel has the tracking number {unknown}")
    expect(page.locator("#parcel")).to_be_hidden()

    _track(page, site.seeded.accepted)  # then a good one: the message goes away
    expect(page.get_by_role("heading", name=f"Parcel {site.seeded.accepted}")).to_be_visible()
    expect(problem).to_have_count(0)
    expect(page.locator("#parcel-location")).to_have_text("Not scanned yet.")


def test_a_tracking_link_opens_the_parcel(page: Page, site: Site) -> None:
    """/track?id=NUMBER (a bookmark or a link from the control room) shows the parcel at once."""
    page.goto(f"{site.url}/track?id={site.seeded.in_sorting}")
    expect(page.get_by_role("heading", name=f"Parcel {site.seeded.in_sorting}")).to_be_visible()
    expect(page.get_by_label("Tracking number")).to_have_value(site.seeded.in_sorting)


def test_pages_are_served_with_a_strict_content_security_policy(site: Site) -> None:
    """Pages and their files come from the API with a CSP that allows only this origin's
    scripts, and they stay out of the OpenAPI schema."""
    for path in ("/", "/track", "/control-room"):
        response = httpx.get(site.url + path, timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert response.headers["referrer-policy"] == "no-referrer"
    script = httpx.get(f"{site.url}/static/control-room.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "script-src 'self'" in script.headers["content-security-policy"]
    assert httpx.get(f"{site.url}/static/nothing.js", timeout=10).status_code == 404
    paths = httpx.get(f"{site.url}/openapi.json", timeout=10).json()["paths"]
    assert not {"/", "/track", "/control-room"} & set(paths)


def test_tracking_page_says_when_to_retry_after_too_many_lookups(
    browser: Browser, db_dsn: str, mqtt_server: PrivateMosquitto
) -> None:
    """Past the per-client rate limit the page says to slow down and when to try again,
    with the API's Retry-After."""
    seeded = seed(db_dsn)
    app = create_app(settings_for(db_dsn, mqtt_server, rate_per_s=0.01, burst=1.0))
    with ThreadedServer(app) as server:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{server.url}/track?id={seeded.dispatched}")  # the one lookup allowed
            expect(page.get_by_role("heading", name=f"Parcel {seeded.dispatched}")).to_be_visible()
            _track(page, seeded.in_sorting)
            problem = page.get_by_role("alert")
            expect(problem).to_contain_text("Too many lookups")
            # Retry-After: a whole token at 0.01/s, less what refilled since (under load).
            expect(problem).to_contain_text(re.compile(r"Please try again in (100|9\d) s\."))
            expect(page.locator("#parcel")).to_be_hidden()
        finally:
            context.close()
