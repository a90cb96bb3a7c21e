"""The escalation scheduler (quality/) against a real database, with a shortened clock
(`now` is passed in, minutes apart), and what it queues sent by the real delivery
engine (notify/) to a real SMTP server (aiosmtpd) and a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time

import psycopg
import pytest

from notify.engine import EngineSettings
from notify.policy import RetryPolicy
from notify.send import SmtpServer
from parceltrack import webhooks
from parceltrack.i18n import gettext_for
from quality import report, store, texts
from storage import figures
from tests.api.conftest import SITE, Seeded, seed
from tests.notify.engine import running
from tests.notify.receivers import smtp_server, webhook_receiver
from tests.waiting import wait_until

FAST = RetryPolicy(base_s=0.1, factor=2.0, cap_s=0.5, window_s=20.0)
SECRET = "on-duty-webhook-secret"


async def _tick(dsn: str, now: datetime, digest_at: int = 10) -> store.TickResult:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await store.tick(conn, now, digest_at)


def _setup(dsn: str, hook_url: str | None = None) -> tuple[int, datetime]:
    """The seeded open mis-sort alert escalates after 60 s and reminds every 120 s, to an
    e-mail (English) and, if given, a webhook (Chinese)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO escalation_rules (site_id, kind, after_s, repeat_s) "
            "VALUES (%s, 'missort', 60, 120)",
            (SITE,),
        )
        conn.execute(
            "INSERT INTO on_duty (site_id, name, channel, address) VALUES (%s, 'Ana', 'email', "
            "'ana@example.org')",
            (SITE,),
        )
        if hook_url:
            conn.execute(
                "INSERT INTO on_duty (site_id, name, channel, address, language, secret) "
                "VALUES (%s, 'Floor', 'webhook', %s, 'zh-CN', %s)",
                (SITE, hook_url, SECRET),
            )
        row = conn.execute(
            "SELECT alert_id, opened_at FROM alerts WHERE state = 'open' AND kind = 'missort'"
        ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def _queued(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT channel, idempotency_key, kind FROM outbound_deliveries ORDER BY delivery_id"
        ).fetchall()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


@pytest.fixture
def seeded(db_dsn: str) -> Seeded:
    return seed(db_dsn)


def test_escalation_then_reminders_until_acknowledged_reach_smtp_and_webhook(
    seeded: Seeded,
) -> None:
    """Nothing before 60 s; at 60 s an escalation to each person on duty; nothing again
    at once (nor after a restart); a reminder 120 s after; none after the acknowledgement.
    The delivery engine brings both e-mails to the SMTP server and both signed webhooks
    to the receiver, each exactly once."""
    dsn = seeded.dsn
    with (
        smtp_server() as (mailbox, smtp_url),
        webhook_receiver(lambda _request, _seen: "ok") as hooks,
    ):
        alert_id, opened = _setup(dsn, hooks.url)
        assert asyncio.run(_tick(dsn, opened + timedelta(seconds=30))).queued == 0
        first = asyncio.run(_tick(dsn, opened + timedelta(seconds=61)))
        assert (first.rounds, first.queued) == (1, 2)
        assert asyncio.run(_tick(dsn, opened + timedelta(seconds=62))).queued == 0
        assert asyncio.run(_tick(dsn, opened + timedelta(seconds=120))).queued == 0  # restarted
        second = asyncio.run(_tick(dsn, opened + timedelta(seconds=61 + 121)))
        assert (second.rounds, second.queued) == (1, 2)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE alerts SET state = 'acknowledged', acked_at = now(), acked_by = 'ana' "
                "WHERE alert_id = %s",
                (alert_id,),
            )
        assert asyncio.run(_tick(dsn, opened + timedelta(seconds=61 + 121 * 3))).queued == 0
        keys = [k for _c, k, _kind in _queued(dsn)]
        assert sorted(set(keys)) == [f"escalation:{alert_id}:0", f"escalation:{alert_id}:1"]

        server = SmtpServer.from_url(smtp_url, "parceltrack <quality@example.org>")
        # The receiver listens on 127.0.0.1: a private address the engine refuses by default.
        settings = EngineSettings(dsn, smtp=server, retry=FAST, allow_private_targets=True)
        with running(settings):
            wait_until(
                lambda: len(mailbox.messages) == 2 and len(hooks.requests) == 2, 30, "4 messages"
            )
            time.sleep(0.5)  # nothing more arrives
    # The engine sends with several workers at once: the order of arrival is not the
    # order of queuing (the rounds' order is checked on the queue's keys above).
    subjects = sorted(m["Subject"] for m in mailbox.messages)
    assert subjects == [
        "Reminder 1: [major] Mis-sorted at LHR1 is still unacknowledged",
        "[major] Mis-sorted at LHR1, unacknowledged for 1 min",
    ]
    assert all(r == ["ana@example.org"] for r in mailbox.recipients)
    first = next(m for m in mailbox.messages if not m["Subject"].startswith("Reminder"))
    html = first.get_body(("html",))
    assert html is not None and seeded.missorted in html.get_content()
    bodies = []
    for request in hooks.requests:
        webhooks.verify(
            SECRET, request.headers.get("x-parceltrack-signature"), request.body, time.time()
        )
        bodies.append(json.loads(request.body))
    assert sorted((b["round"], b["type"], b["alert"]["alert_id"]) for b in bodies) == [
        (0, "alert.escalation", alert_id),
        (1, "alert.reminder", alert_id),
    ]


def test_a_silent_device_stranding_300_parcels_sends_one_digest(seeded: Seeded) -> None:
    """300 missing-parcel alerts behind a silent scanner, all due at once, reach the
    person on duty as one e-mail naming the device and the count."""
    dsn = seeded.dsn
    opened = datetime.now(UTC) - timedelta(hours=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO on_duty (site_id, name, channel, address, min_severity) "
            "VALUES (%s, 'Ana', 'email', 'ana@example.org', 'major')",
            (SITE,),
        )
        conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = now()")
        conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, device_id, opened_at) "
            "VALUES ('silence:LHR1-scan-tun1', 'silence', %s, 'LHR1-scan-tun1', %s)",
            (SITE, opened + timedelta(minutes=12)),  # not due itself before 17 min
        )
        conn.execute(
            "INSERT INTO alerts (fingerprint, kind, site_id, read_point_id, tracking_id, "
            "opened_at) SELECT 'missing:P' || i, 'missing', %s, %s, 'P' || i, %s "
            "FROM generate_series(1, 300) i",
            (SITE, f"{SITE}-IND1", opened),
        )
    now = opened + timedelta(minutes=16)  # missing escalates after 15 min by default
    result = asyncio.run(_tick(dsn, now))
    assert (result.rounds, result.queued) == (300, 1)
    with smtp_server() as (mailbox, smtp_url):
        server = SmtpServer.from_url(smtp_url, "parceltrack <quality@example.org>")
        with running(EngineSettings(dsn, smtp=server, retry=FAST)):
            wait_until(lambda: mailbox.messages, 30, "the digest")
            time.sleep(0.5)
    (mail,) = mailbox.messages
    assert mail["Subject"] == f"[major] 300 alerts open at {SITE}"
    text = mail.get_body(("plain",))
    assert text is not None
    assert "Silent devices: LHR1-scan-tun1." in text.get_content()
    assert "Missing 300" in text.get_content()


def test_two_schedulers_at_once_queue_each_message_once(seeded: Seeded) -> None:
    """Two scheduler ticks racing at the same moment queue the escalation once."""
    dsn = seeded.dsn
    _alert_id, opened = _setup(dsn)
    at = opened + timedelta(seconds=90)

    async def race() -> list[store.TickResult]:
        return list(await asyncio.gather(_tick(dsn, at), _tick(dsn, at), _tick(dsn, at)))

    results = asyncio.run(race())
    assert sum(r.queued for r in results) == 1
    assert len(_queued(dsn)) == 1


def test_overdue_complaints_escalate_once(seeded: Seeded) -> None:
    """A complaint past its deadline without an answer is escalated to the site's on-duty
    list once; an answered one is not."""
    dsn = seeded.dsn
    _setup(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for answered in (None, datetime.now(UTC)):
            conn.execute(
                "INSERT INTO feedback (tracking_id, kind, message, snapshot, site_id, deadline, "
                "first_answer_at) VALUES (%s, 'complaint', 'late', '{}', %s, "
                "now() - interval '1 hour', %s)",
                (seeded.dispatched, SITE, answered),
            )
    now = datetime.now(UTC)
    first = asyncio.run(_tick(dsn, now))
    assert first.complaints == 1
    assert asyncio.run(_tick(dsn, now + timedelta(hours=1))).complaints == 0
    kinds = [kind for _c, _k, kind in _queued(dsn)]
    assert kinds.count("complaint.overdue") == 1


def test_daily_report_is_queued_once_per_day_and_arrives_as_html(seeded: Seeded) -> None:
    """After the report time, each recipient gets yesterday's figures once, as an HTML
    e-mail with every figure's table; before it, nothing."""
    dsn = seeded.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO report_recipients (address, name, site_id, language) "
            "VALUES ('boss@example.org', 'Boss', %s, 'zh-CN')",
            (SITE,),
        )
    now = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0)

    async def send(at: datetime) -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await report.send_due(conn, at, clock_time(6, 0))

    assert asyncio.run(send(now.replace(hour=5))) == 0
    assert asyncio.run(send(now)) == 1
    assert asyncio.run(send(now + timedelta(hours=2))) == 0
    with smtp_server() as (mailbox, smtp_url):
        server = SmtpServer.from_url(smtp_url, "parceltrack <quality@example.org>")
        with running(EngineSettings(dsn, smtp=server, retry=FAST)):
            wait_until(lambda: mailbox.messages, 30, "the report")
    (mail,) = mailbox.messages
    day = (now - timedelta(days=1)).date().isoformat()
    chinese = gettext_for("quality", "zh-CN").gettext
    assert mail["Subject"] == chinese(texts.REPORT_SUBJECT).format(site=SITE, day=day)
    assert chinese(texts.REPORT_SUBJECT) != texts.REPORT_SUBJECT  # the recipient's language
    html = mail.get_body(("html",))
    assert html is not None
    content = html.get_content()
    for title in (*figures.TITLES.values(), *figures.SUMMARY.values()):
        assert chinese(title) in content
    assert content.count("<table") == 6  # the summary and five figures


def test_quality_command_runs_one_pass_as_a_process(seeded: Seeded) -> None:
    """`parceltrack quality --once` in its own process queues the due escalation and says
    so; a second run queues nothing; a bad --report-at is refused naming the option."""
    dsn = seeded.dsn
    _setup(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:  # due now: opened 2 minutes ago
        conn.execute("UPDATE alerts SET opened_at = now() - interval '2 minutes'")
    env = {**os.environ, "PARCELTRACK_DSN": dsn}
    command = [sys.executable, "-m", "composition.cli", "quality", "--once"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "1 alert rounds, 0 overdue complaints, 1 messages queued" in first.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert "0 alert rounds, 0 overdue complaints, 0 messages queued" in again.stdout
    assert [k for _c, k, _kind in _queued(dsn)] == [f"escalation:{seeded.alert_ids[0]}:0"]
    bad = subprocess.run(
        [*command, "--report-at", "25:99"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode != 0 and "--report-at" in bad.stderr


def _rounds(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [int(r) for (r,) in conn.execute("SELECT round FROM alert_escalations ORDER BY 1")]


def test_scheduler_killed_and_restarted_keeps_reminding_without_repeats(seeded: Seeded) -> None:
    """`parceltrack quality` killed with SIGKILL between reminders and started again goes
    on with the next round: rounds 0, 1, 2 ... each queued once; after the
    acknowledgement no more; SIGTERM stops it cleanly."""
    dsn = seeded.dsn
    alert_id, _opened = _setup(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:  # seconds, not minutes
        conn.execute(
            "UPDATE escalation_rules SET after_s = 1, repeat_s = 1.5 WHERE site_id = %s", (SITE,)
        )
    env = {**os.environ, "PARCELTRACK_DSN": dsn}
    command = [
        sys.executable, "-m", "composition.cli", "quality", "--tick", "0.2",
        "--figures-every", "100000",
    ]  # fmt: skip
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(_rounds(dsn)) >= 2, 60, "two rounds")
    finally:
        first.kill()
        first.wait(30)
    before = len(_rounds(dsn))
    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(_rounds(dsn)) >= before + 2, 60, "two more rounds")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE alerts SET state = 'acknowledged', acked_at = now() WHERE alert_id = %s",
                (alert_id,),
            )
        time.sleep(0.5)  # a tick that had started before the acknowledgement
        acked = len(_rounds(dsn))
        time.sleep(3.5)  # two more reminder periods
        assert len(_rounds(dsn)) == acked
    finally:
        second.terminate()
        assert second.wait(30) == 0
    rounds = _rounds(dsn)
    assert rounds == list(range(len(rounds)))
    keys = [k for _c, k, _kind in _queued(dsn)]
    assert keys == [f"escalation:{alert_id}:{r}" for r in rounds]
