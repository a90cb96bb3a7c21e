"""Fixtures of the page tests: Debian's Chromium driven by Playwright, and the API
serving the pages from a thread against a seeded private PostgreSQL and Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from api.app import create_app
from composition.services import PrivateMosquitto
from tests.api.conftest import Seeded, ThreadedServer, make_key, seed, settings_for

# Playwright's own browser downloads do not work here (and are not needed): the
# tests drive the distribution's Chromium, which `./run test` installs as root.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Generous: the machine is shared, and a wait ends as soon as its condition holds.
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
            "(./run test does that when run as root)"
        )
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass(frozen=True, slots=True)
class Site:
    """The API serving the pages, its seeded database, and a controller's key."""

    url: str
    seeded: Seeded
    controller_key: str
    customer_key: str

    @property
    def dsn(self) -> str:
        return self.seeded.dsn


@pytest.fixture
def site(db_dsn: str, mqtt_server: PrivateMosquitto) -> Iterator[Site]:
    seeded = seed(db_dsn)
    controller = make_key(db_dsn, "controller")  # named controller-1
    customer = make_key(db_dsn, "customer")
    with ThreadedServer(create_app(settings_for(db_dsn, mqtt_server))) as server:
        yield Site(server.url, seeded, controller, customer)


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A fresh browser tab; closed before the server stops, so no stream holds it up."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the top of the repository (git-ignored), for screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
