"""Scans and alerts of subscribed parcels become notifications, through the real
notifier and delivery engine, to a real webhook receiver and SMTP server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ingest.store import ScanPartitions, write_scans
from notify.engine import DeliveryEngine, EngineSettings
from notify.notifier import Notifier, NotifierSettings
from notify.policy import RetryPolicy
from notify.send import SmtpServer
from parceltrack import webhooks
from parceltrack.events import EventKind, ScanEvent
from storage.migrations import has_timescale
from tests.api.conftest import SITE, Seeded, seed
from tests.notify.engine import serving
from tests.notify.receivers import Mailbox, WebhookReceiver, smtp_server, webhook_receiver
from tests.waiting import wait_until

HOLD_DOWN = 1.0


@dataclass
class World:
    seeded: Seeded
    receiver: WebhookReceiver
    mailbox: Mailbox
    secret: str
    parcel: str


def _subscribe(
    dsn: str, parcel: str, channel: str, target: str, lang: str, secret: str | None
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO customer_subscriptions (tracking_id, channel, target, language, secret, "
            "unsubscribe_token) VALUES (%s, %s, %s, %s, %s, md5(random()::text))",
            (parcel, channel, target, lang, secret),
        )


@pytest.fixture
def world(db_dsn: str) -> Iterator[World]:
    seeded = seed(db_dsn)
    with webhook_receiver(lambda _r, _n: "ok") as receiver, smtp_server() as (mailbox, url):
        parcel = seeded.on_conveyor
        _subscribe(db_dsn, parcel, "webhook", receiver.url, "en", "whsec_x")
        _subscribe(db_dsn, parcel, "email", "kunde@example.org", "zh-CN", None)
        engine = DeliveryEngine(
            EngineSettings(
                db_dsn,
                allow_private_targets=True,
                smtp=SmtpServer.from_url(url, "parceltrack <n@example.org>"),
                retry=RetryPolicy(base_s=0.1, cap_s=0.5, window_s=30),
            )
        )
        notifier = Notifier(
            NotifierSettings(
                db_dsn,
                "http://api.example",
                hold_down_s=HOLD_DOWN,
            )
        )
        with serving(engine, notifier):
            wait_until(lambda: _cursor_exists(db_dsn), 10, "the notifier's cursor")
            yield World(seeded, receiver, mailbox, "whsec_x", parcel)


def _cursor_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM notify_cursor").fetchone() is not None


def _scan(dsn: str, parcel: str, rp: str, seq: int) -> None:
    event = ScanEvent(
        device=f"{SITE}-{rp}-dev", boot=2, seq=seq, ts=datetime.now(UTC), site=SITE,
        read_point=f"{SITE}-{rp}", kind=EventKind.READ, code=parcel, tracking_id=parcel,
    )  # fmt: skip
    with psycopg.connect(dsn) as conn, conn.transaction():
        write_scans(conn, [event], ScanPartitions(has_timescale(conn)))


def _events(receiver: WebhookReceiver) -> list[str]:
    return [json.loads(r.body)["event"] for r in receiver.requests]


def test_stage_changes_are_told_once_each(world: World) -> None:
    """Sorted and dispatched are told once each, however often the parcel is read there."""
    dsn, parcel = world.seeded.dsn, world.parcel
    _scan(dsn, parcel, "SRT1", 1)
    _scan(dsn, parcel, "SRT1", 2)  # recirculation: sorted again
    wait_until(lambda: _events(world.receiver) == ["sorted"], 10, "the sorted webhook")
    door = _door(dsn)
    _scan(dsn, parcel, door, 3)
    _scan(dsn, parcel, door, 4)
    wait_until(
        lambda: _events(world.receiver) == ["sorted", "dispatched"], 10, "the dispatched webhook"
    )
    wait_until(lambda: len(world.mailbox.messages) == 2, 10, "two e-mails")
    time.sleep(1.0)
    assert _events(world.receiver) == ["sorted", "dispatched"]
    first = world.receiver.requests[0]
    webhooks.verify(world.secret, first.headers["x-parceltrack-signature"], first.body, time.time())
    body = json.loads(first.body)
    assert body["tracking_id"] == parcel and body["site"]["id"] == SITE
    assert first.headers["idempotency-key"] == body["idempotency_key"]
    subjects = sorted(str(m["Subject"]) for m in world.mailbox.messages)
    assert subjects == [f"包裹 {parcel} 已分拣", f"包裹 {parcel} 已发出"]


def _door(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT read_point_id FROM read_points WHERE stage = 'dispatch' LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0]).removeprefix(f"{SITE}-")


def _open_alert(dsn: str, parcel: str, kind: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING alert_id",
            (f"{kind}:{parcel}:t", kind, SITE, f"{SITE}-TUN1", parcel),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _resolve(dsn: str, alert_id: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE alert_id = %s",
            (alert_id,),
        )


def test_alert_within_hold_down_is_not_told(world: World) -> None:
    """A delay that opens and resolves within the hold-down produces no notification."""
    dsn, parcel = world.seeded.dsn, world.parcel
    _resolve(dsn, _open_alert(dsn, parcel, "delay"))
    time.sleep(HOLD_DOWN + 2.0)
    assert world.receiver.requests == [] and world.mailbox.messages == []
    with psycopg.connect(dsn) as conn:
        cursor = conn.execute("SELECT alert_event FROM notify_cursor").fetchone()
        last = conn.execute("SELECT max(event_id) FROM alert_events").fetchone()
    assert cursor == last  # read, and decided against


def test_delay_told_with_new_expected_time_then_resolved(world: World) -> None:
    """A delay still open after the hold-down is told with its reason and new expected
    time (the ETA pushed by its lateness), within 5 s; its resolution is told too."""
    dsn, parcel = world.seeded.dsn, world.parcel
    now = datetime.now(UTC)
    eta, due = now + timedelta(hours=2), now - timedelta(minutes=10)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO parcel_eta (tracking_id, site_id, read_point_id, stage, entered_at, "
            "next_stage, next_due, eta) VALUES (%s, %s, %s, 'tunnel', %s, 'sort', %s, %s)",
            (parcel, SITE, f"{SITE}-TUN1", now - timedelta(minutes=20), due, eta),
        )
    started = time.monotonic()
    alert = _open_alert(dsn, parcel, "delay")
    wait_until(lambda: _events(world.receiver) == ["delayed"], 10, "the delayed webhook")
    assert time.monotonic() - started < 5.0
    body = json.loads(world.receiver.requests[0].body)
    assert body["reason"]["code"] == "delay"
    expected = datetime.fromisoformat(body["expected_at"])
    # eta + (now - due): about 10 minutes later than the detector's ETA.
    assert timedelta(minutes=9) < expected - eta < timedelta(minutes=11)
    assert "New expected time" in body["message"]
    wait_until(lambda: world.mailbox.messages, 10, "the delayed e-mail")
    mail = world.mailbox.messages[0]
    text = mail.get_body(("plain",))
    assert text is not None and "新的预计时间" in text.get_content()
    assert "/v1/unsubscribe/" in text.get_content()
    _resolve(dsn, alert)
    wait_until(lambda: _events(world.receiver) == ["delayed", "resolved"], 10, "resolved")


@pytest.mark.parametrize(
    ("kind", "event"),
    [
        ("missort", "exception"),
        ("misroute", "exception"),
        ("missing", "missing"),
        ("late", "delayed"),
    ],
    ids=["missort", "misroute", "missing", "late"],
)
def test_alert_kinds_map_to_customer_events(world: World, kind: str, event: str) -> None:
    """Each parcel alert kind is told as its customer event, with its reason code."""
    _open_alert(world.seeded.dsn, world.parcel, kind)
    wait_until(lambda: _events(world.receiver) == [event], 10, f"the {event} webhook")
    assert json.loads(world.receiver.requests[0].body)["reason"]["code"] == kind


def test_scan_committed_after_a_later_one_is_still_told(world: World) -> None:
    """A scan whose transaction began first but commits after a later-started one (told
    already, the notifier's position past it) is told once it commits, and only once."""
    dsn, parcel = world.seeded.dsn, world.parcel
    event = ScanEvent(
        device=f"{SITE}-SRT1-dev", boot=3, seq=1, ts=datetime.now(UTC), site=SITE,
        read_point=f"{SITE}-SRT1", kind=EventKind.READ, code=parcel, tracking_id=parcel,
    )  # fmt: skip
    with psycopg.connect(dsn) as slow, slow.transaction():
        write_scans(slow, [event], ScanPartitions(has_timescale(slow)))
        _scan(dsn, parcel, "IND1", 50)  # began later, committed first
        wait_until(lambda: _events(world.receiver) == ["accepted"], 10, "the accepted webhook")
        # The notifier has read past both scans' times: a cursor by time would skip it.
        wait_until(lambda: _cursor_after(dsn, event.ts), 10, "the cursor past the slow scan")
        time.sleep(0.5)  # more rounds while it is still in flight
        assert _events(world.receiver) == ["accepted"]
    told = ["accepted", "sorted"]
    wait_until(lambda: _events(world.receiver) == told, 10, "the late sorted webhook")
    time.sleep(1.5)  # later rounds must not read it again
    assert _events(world.receiver) == told


def test_alert_change_committed_after_a_later_one_is_still_told(world: World) -> None:
    """An alert whose change took its event id first but committed after a later one
    (told already, past the hold-down) is still told, once."""
    dsn, parcel = world.seeded.dsn, world.parcel
    with psycopg.connect(dsn) as slow, slow.transaction():
        slow.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id) "
            "VALUES (%s, 'delay', %s, %s, %s)",
            (f"delay:{parcel}:slow", SITE, f"{SITE}-TUN1", parcel),
        )
        row = slow.execute("SELECT max(event_id) FROM alert_events").fetchone()
        assert row is not None
        slow_event = int(row[0])
        _open_alert(dsn, parcel, "missing")  # a later event id, committed first
        wait_until(lambda: _events(world.receiver) == ["missing"], 10, "the missing webhook")
        # The notifier has read past its id: a cursor by event id would skip it.
        with psycopg.connect(dsn) as conn:
            cursor = conn.execute("SELECT alert_event FROM notify_cursor").fetchone()
        assert cursor is not None and cursor[0] > slow_event
    wait_until(lambda: sorted(_events(world.receiver)) == ["delayed", "missing"], 10, "delayed")
    time.sleep(HOLD_DOWN + 1.0)
    assert sorted(_events(world.receiver)) == ["delayed", "missing"]


def _cursor_after(dsn: str, at: datetime) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT scan_at FROM notify_cursor").fetchone()
    return row is not None and row[0] > at


def test_rfid_reads_name_the_parcel_by_its_tag(world: World) -> None:
    """An RFID pass (EPC only, no tracking number) of a subscribed parcel is told too."""
    dsn, parcel = world.seeded.dsn, world.parcel
    epc = "urn:epc:id:sscc:0614141.1234567890"
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE parcels SET epc = %s WHERE tracking_id = %s", (epc, parcel))
    event = ScanEvent(
        device=f"{SITE}-SRT1-dev", boot=4, seq=1, ts=datetime.now(UTC), site=SITE,
        read_point=f"{SITE}-SRT1", kind=EventKind.SEEN, epc=epc,
    )  # fmt: skip
    with psycopg.connect(dsn) as conn, conn.transaction():
        write_scans(conn, [event], ScanPartitions(has_timescale(conn)))
    wait_until(lambda: _events(world.receiver) == ["sorted"], 10, "the sorted webhook")
    assert json.loads(world.receiver.requests[0].body)["tracking_id"] == parcel


def test_cursor_from_before_positions_is_read_once_then_followed(db_dsn: str) -> None:
    """A cursor kept by time and event id (before migration 170) still tells what came
    after it, once, and the notifier follows by position from then on."""
    seeded = seed(db_dsn)
    parcel = seeded.on_conveyor
    with webhook_receiver(lambda _r, _n: "ok") as receiver:
        _subscribe(db_dsn, parcel, "webhook", receiver.url, "en", "whsec_x")
        with psycopg.connect(db_dsn) as conn:
            conn.execute(
                "INSERT INTO notify_cursor (name, scan_at, alert_event) SELECT 'customers', "
                "now(), coalesce(max(event_id), 0) FROM alert_events"
            )
        _scan(db_dsn, parcel, "SRT1", 1)
        _open_alert(db_dsn, parcel, "delay")
        engine = DeliveryEngine(EngineSettings(db_dsn, allow_private_targets=True))
        notifier = Notifier(NotifierSettings(db_dsn, hold_down_s=HOLD_DOWN))
        with serving(engine, notifier):
            told = ["delayed", "sorted"]
            wait_until(lambda: sorted(_events(receiver)) == told, 10, "sorted and delayed")
            _scan(db_dsn, parcel, _door(db_dsn), 2)
            told = ["delayed", "dispatched", "sorted"]
            wait_until(lambda: sorted(_events(receiver)) == told, 10, "dispatched")
            time.sleep(HOLD_DOWN + 1.0)
        assert sorted(_events(receiver)) == told
        with psycopg.connect(db_dsn) as conn:
            row = conn.execute("SELECT scan_position, alert_position FROM notify_cursor").fetchone()
        assert row is not None and None not in row
