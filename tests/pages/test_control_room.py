"""The control room in Chromium: open alerts by site and kind, live from the SSE
stream (with resumption by Last-Event-ID), acknowledging, who each alert is assigned
to (assigning and unassigning), devices and feedback."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import httpx
import psycopg
from playwright.sync_api import Page, Request, Route, expect

from api.alerts import ALERT_LABELS
from composition.demo import controller_key
from parceltrack.alerts import AlertKind
from tests.api.conftest import SITE
from tests.pages.conftest import Site
from tests.waiting import wait_until

# A kind this API has no label for (as from a newer detector): longer than every
# AlertKind, so it can never be one of them.
UNKNOWN_KIND = max(AlertKind, key=len) + "-from-a-newer-detector"


def _sign_in(page: Page, site: Site, key: str) -> None:
    page.goto(f"{site.url}/control-room")
    page.get_by_label("Controller API key").fill(key)
    page.get_by_role("button", name="Open the control room").click()


def _open_alert(dsn: str, kind: str, tracking_id: str | None = None) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id, details) "
            "VALUES (%s, %s, %s, %s, %s, '{\"seconds_late\": 42}') RETURNING alert_id",
            (f"{kind}:{time.monotonic_ns()}", kind, SITE, f"{SITE}-TUN1", tracking_id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _alert_row(dsn: str, alert_id: int) -> tuple[str, str | None]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT state, acked_by FROM alerts WHERE alert_id = %s", (alert_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_wrong_or_insufficient_keys_get_a_clear_message(page: Page, site: Site) -> None:
    """An unknown key is refused with 401's message, a customer's key with 403's, and
    the key form comes back without keeping the bad key."""
    _sign_in(page, site, "pt_not-a-real-key")
    problem = page.get_by_role("alert")
    expect(problem).to_contain_text("The API key was not accepted")
    expect(problem).to_contain_text("unknown or revoked API key")
    expect(page.get_by_label("Controller API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    page.get_by_label("Controller API key").fill(site.customer_key)
    page.get_by_role("button", name="Open the control room").click()
    expect(problem).to_contain_text("This key may not open the control room")
    expect(problem).to_contain_text("role customer may not do this; needs controller")
    expect(page.locator("#board")).to_be_hidden()


def test_alerts_appear_live_and_are_acknowledged_from_the_page(
    page: Page, site: Site, artifacts: Path
) -> None:
    """The open alert is listed under its site and kind, headed by the kind's label; an
    alert inserted while the page is open appears without a reload, announced by its
    label, one resolved disappears, and Acknowledge stores the controller's
    acknowledgement in the database."""
    with psycopg.connect(site.dsn, autocommit=True) as conn:  # one device reports in
        healthy = conn.execute("SELECT min(device_id) FROM devices").fetchone()
        assert healthy is not None and healthy[0] is not None
        conn.execute(
            "INSERT INTO device_health VALUES (%s, %s, 'agent-1', now(), true, "
            '\'{"outbox_depth": 7, "frames_bad": 2}\')',
            (healthy[0], SITE),
        )
    _sign_in(page, site, site.controller_key)
    expect(page.locator("#live")).to_have_text("Live")
    missort, resolved = site.seeded.alert_ids
    group = page.locator(f'section[data-site="{SITE}"] div[data-kind="missort"]')
    expect(group.locator(f'li[data-alert-id="{missort}"]')).to_be_visible()
    expect(group.locator("h4")).to_have_text(f"{ALERT_LABELS[AlertKind.MISSORT]} (1)")
    expect(page.locator(f'li[data-alert-id="{resolved}"]')).to_have_count(0)

    fresh = _open_alert(site.dsn, AlertKind.MISSING, site.seeded.on_conveyor)
    missing = page.locator(f'section[data-site="{SITE}"] div[data-kind="missing"]')
    item = missing.locator(f'li[data-alert-id="{fresh}"]')
    expect(item).to_be_visible()
    expect(item).to_have_class(re.compile(r"\bfresh\b"))  # came by the stream, not a listing
    expect(item).to_contain_text(site.seeded.on_conveyor)
    expect(item).to_contain_text("seconds_late: 42")
    label = ALERT_LABELS[AlertKind.MISSING]
    announced = f"New alert: {label} at {SITE}, parcel {site.seeded.on_conveyor}"
    expect(page.locator("#alerts-announce")).to_have_text(announced)  # for screen readers
    expect(page.locator("#alert-count")).to_have_text("2 open, 0 acknowledged")

    devices = httpx.get(
        f"{site.url}/v1/devices", headers={"X-API-Key": site.controller_key}, timeout=10
    ).json()
    assert devices  # the seeded layout has devices
    online = sum(d["online"] for d in devices)
    expect(page.locator("#device-summary")).to_have_text(f"{online} of {len(devices)} online")
    expect(page.locator("#device-table tbody tr")).to_have_count(len(devices))
    assert online == 1
    for device in devices:
        row = page.locator(f'#device-table tr[data-device-id="{device["device_id"]}"]')
        state = "● online" if device["online"] else "○ offline"
        expect(row.locator("td").first).to_have_text(state)
    last_row = page.locator("#device-table tbody tr").last  # offline devices come first
    expect(last_row).to_have_attribute("data-device-id", healthy[0])
    expect(last_row.locator("td").nth(3)).to_have_text("2")  # bad frames
    expect(last_row.locator("td").nth(4)).to_have_text("7")  # outbox depth
    page.screenshot(path=str(artifacts / "control-room.png"), full_page=True)

    page.get_by_role("button", name=f"Acknowledge alert {fresh}").click()
    expect(item).to_contain_text("Acknowledged by controller-1")
    assert _alert_row(site.dsn, fresh) == ("acknowledged", "controller-1")
    expect(page.locator("#alert-count")).to_have_text("1 open, 1 acknowledged")

    # Resolved elsewhere (by detection): it leaves the board on its own.
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = %s",
            (missort,),
        )
    expect(page.locator(f'li[data-alert-id="{missort}"]')).to_have_count(0)
    expect(page.locator("#alert-count")).to_have_text("0 open, 1 acknowledged")


def _assignee(dsn: str, alert_id: int) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT assigned_to FROM alerts WHERE alert_id = %s", (alert_id,)
        ).fetchone()
    assert row is not None
    return cast(str | None, row[0])


def test_alerts_are_assigned_and_unassigned_from_the_page(
    page: Page, site: Site, artifacts: Path
) -> None:
    """Each alert names its assignee or says it has none; an assignment made elsewhere
    shows live; Unassign, Assign to me and Reassign store the change, and a name being
    typed survives the board redrawing for a new alert."""
    alert_id = site.seeded.alert_ids[0]
    item = page.locator(f'li[data-alert-id="{alert_id}"]')
    _sign_in(page, site, site.controller_key)
    expect(page.locator("#live")).to_have_text("Live")
    expect(item.locator(".assignee")).to_have_text("Unassigned")

    elsewhere = httpx.post(  # another controller's screen
        f"{site.url}/v1/alerts/{alert_id}/assign",
        json={"controller": "mei"},
        headers={"X-API-Key": site.controller_key},
        timeout=10,
    )
    assert elsewhere.status_code == 200
    expect(item.locator(".assignee")).to_have_text("Assigned to mei")

    page.get_by_role("button", name=f"Unassign alert {alert_id}").click()
    expect(item.locator(".assignee")).to_have_text("Unassigned")
    assert _assignee(site.dsn, alert_id) is None

    page.get_by_role("button", name=f"Assign alert {alert_id} to me").click()
    expect(item.locator(".assignee")).to_have_text("Assigned to controller-1")
    assert _assignee(site.dsn, alert_id) == "controller-1"

    page.get_by_role("button", name=f"Reassign alert {alert_id}").click()
    field = page.get_by_label(f"Assign alert {alert_id} to", exact=True)
    expect(field).to_be_focused()
    page.keyboard.type("li")
    fresh = _open_alert(site.dsn, AlertKind.MISSING, site.seeded.on_conveyor)
    expect(page.locator(f'li[data-alert-id="{fresh}"]')).to_be_visible()  # board redrawn
    page.keyboard.type(".wei")
    expect(field).to_have_value("li.wei")
    page.screenshot(path=str(artifacts / "control-room-assigning.png"), full_page=True)
    item.get_by_role("button", name="Assign", exact=True).click()
    expect(item.locator(".assignee")).to_have_text("Assigned to li.wei")
    assert _assignee(site.dsn, alert_id) == "li.wei"
    expect(page.locator(f'li[data-alert-id="{fresh}"] .assignee')).to_have_text("Unassigned")
    page.screenshot(path=str(artifacts / "control-room-assigned.png"), full_page=True)


# The stream's ids: feed positions, `xmin:xmax:in-flight`.
POSITION = re.compile(r"\d+:\d+:(\d+(,\d+)*)?")


def _cut_stream(dsn: str) -> None:
    """Cut the stream where it is fed: its PostgreSQL session ends, so does the response."""

    def stream_backend() -> int | None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'SELECT event_id, change, alert FROM alert_events%'"
            ).fetchone()
        return int(row[0]) if row else None

    pid = wait_until(stream_backend, 20, "the stream's database session")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_changes_sent_again_after_a_reconnect_are_dropped_by_event_id(
    page: Page, site: Site
) -> None:
    """A reconnect that resumes from an earlier position (as after a cut mid-batch)
    gets changes the page already applied: it drops them by event id, so an alert
    opened and resolved meanwhile is not announced or shown again."""
    _sign_in(page, site, site.controller_key)
    expect(page.locator("#live")).to_have_text("Live")
    first = _open_alert(site.dsn, AlertKind.DELAY)
    expect(page.locator(f'li[data-alert-id="{first}"]')).to_be_visible()
    page.wait_for_function("PT.controlRoom.lastEventId() !== null")
    rewound = page.evaluate("PT.controlRoom.lastEventId()")
    gone = _open_alert(site.dsn, AlertKind.MISSING)
    expect(page.locator(f'li[data-alert-id="{gone}"]')).to_be_visible()
    with psycopg.connect(site.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = %s",
            (gone,),
        )
    expect(page.locator(f'li[data-alert-id="{gone}"]')).to_have_count(0)
    page.evaluate(
        """() => {
          window.announced = [];
          const box = document.getElementById("alerts-announce");
          new MutationObserver(() => window.announced.push(box.textContent))
            .observe(box, { childList: true, characterData: true, subtree: true });
        }"""
    )
    resumed: list[str] = []

    def rewind(route: Route) -> None:
        resumed.append(route.request.headers.get("last-event-id", ""))
        route.continue_(headers={**route.request.headers, "last-event-id": rewound})

    page.route("**/v1/alerts/stream", rewind)
    _cut_stream(site.dsn)
    later = _open_alert(site.dsn, AlertKind.MISSORT)
    expect(page.locator(f'li[data-alert-id="{later}"]')).to_be_visible()
    assert resumed and resumed[0] != rewound  # the page itself stood further on
    expect(page.locator(f'li[data-alert-id="{gone}"]')).to_have_count(0)
    # Only the new alert was announced; the replayed opening of `gone` was dropped.
    announced = set(page.evaluate("window.announced"))
    assert announced == {f"New alert: {ALERT_LABELS[AlertKind.MISSORT]} at {SITE}"}


def test_a_dropped_stream_resumes_from_the_last_event_id(page: Page, site: Site) -> None:
    """When the stream breaks, the page reconnects with Last-Event-ID and gets the alert
    opened meanwhile from the API's replay, without listing the alerts again; that
    alert's kind has no label from this API, so it is headed by its own name."""
    streams: list[Request] = []
    lists: list[Request] = []

    def seen(request: Request) -> None:
        if request.url.endswith("/v1/alerts/stream"):
            streams.append(request)
        elif "/v1/alerts?state=open&limit=500" in request.url:
            lists.append(request)

    page.on("request", seen)
    _sign_in(page, site, site.controller_key)
    expect(page.locator("#live")).to_have_text("Live")  # listed, and listening
    first = _open_alert(site.dsn, AlertKind.DELAY)
    expect(page.locator(f'li[data-alert-id="{first}"]')).to_be_visible()
    page.wait_for_function("PT.controlRoom.lastEventId() !== null")
    last_id = page.evaluate("PT.controlRoom.lastEventId()")
    assert POSITION.fullmatch(last_id), last_id  # a position in the alert log

    _cut_stream(site.dsn)
    missed = _open_alert(site.dsn, UNKNOWN_KIND)  # while the page is disconnected

    group = page.locator(f'section[data-site="{SITE}"] div[data-kind="{UNKNOWN_KIND}"]')
    expect(group.locator(f'li[data-alert-id="{missed}"]')).to_be_visible()
    expect(group.locator("h4")).to_have_text(f"{UNKNOWN_KIND} (1)")
    expect(page.locator("#live")).to_have_text("Live")
    assert len(streams) >= 2
    assert streams[1].headers.get("last-event-id") == last_id
    assert len(lists) == 1  # the replay, not a second listing, brought it


def test_feedback_is_taken_and_answered_from_the_page(page: Page, site: Site) -> None:
    """A customer's complaint waits in the list, shown as text even when it looks like
    HTML; Take and Send answer store the owner and the answer."""
    message = "Where is it? <img src=x onerror=\"document.title='pwned'\"> Please help."
    receipt = httpx.post(
        f"{site.url}/v1/parcels/{site.seeded.missorted}/feedback",
        json={"kind": "complaint", "message": message, "contact": "ann@example.org"},
        timeout=10,
    )
    assert receipt.status_code == 201
    feedback_id = receipt.json()["feedback_id"]
    _sign_in(page, site, site.controller_key)
    item = page.locator(f'li[data-feedback-id="{feedback_id}"]')
    expect(item.locator("blockquote")).to_have_text(message)
    expect(item.locator("img")).to_have_count(0)
    expect(item).to_contain_text("New")

    page.get_by_role("button", name=f"Take feedback {feedback_id}").click()
    expect(item).to_contain_text("Taken by controller-1")
    answer = "It was mis-sorted; it is on its way."
    page.get_by_label(f"Answer to feedback {feedback_id}").fill(answer)
    item.get_by_role("button", name="Send answer").click()
    expect(item).to_contain_text("Answered by controller-1, not closed")
    expect(item.locator("ol.answers")).to_contain_text(answer)

    with psycopg.connect(site.dsn) as conn:
        owner = conn.execute(
            "SELECT owner FROM feedback WHERE feedback_id = %s", (feedback_id,)
        ).fetchone()
        answers = conn.execute(
            "SELECT author, message FROM feedback_answers WHERE feedback_id = %s",
            (feedback_id,),
        ).fetchall()
    assert owner == ("controller-1",)
    assert answers == [("controller-1", answer)]
    assert page.title() == "Control room · parceltrack"


def test_the_demo_key_opens_the_control_room(page: Page, site: Site) -> None:
    """The key `parceltrack demo` prints is a controller's, and the page accepts it."""
    # In a thread: Playwright's sync API keeps an event loop on this one.
    with ThreadPoolExecutor(1) as pool:
        key = pool.submit(controller_key, site.dsn).result()
    with psycopg.connect(site.dsn) as conn:
        row = conn.execute(
            "SELECT name, role FROM api_keys WHERE prefix = %s", (key[:7],)
        ).fetchone()
    assert row == ("demo-controller", "controller")
    _sign_in(page, site, key)
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator(f'li[data-alert-id="{site.seeded.alert_ids[0]}"]')).to_be_visible()


def test_the_key_lasts_for_the_tab_until_forgotten(page: Page, site: Site) -> None:
    """A reload keeps the controller signed in (sessionStorage); Forget key removes the
    key at once and the next reload asks for it again."""
    _sign_in(page, site, site.controller_key)
    expect(page.locator("#live")).to_have_text("Live")
    page.reload()
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.get_by_label("Controller API key")).to_be_hidden()

    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("Controller API key")).to_be_visible()
    expect(page.locator("#board")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.get_by_label("Controller API key")).to_be_visible()
    expect(page.locator("#live")).to_have_text("Not connected")
