"""The delivery engine against real misbehaving receivers and a real SMTP server.

The retry clock is shortened (backoff from 0.1 s, windows of seconds); everything
else is real: PostgreSQL queue, HTTP over sockets, SMTP over sockets.
"""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from notify import queue
from notify.engine import EngineSettings
from notify.policy import RateLimit, RetryPolicy
from notify.send import SmtpServer, public_target
from parceltrack import webhooks
from storage.outbound import Email, Outbound, Webhook, enqueue
from tests.notify.engine import running
from tests.notify.receivers import Received, smtp_server, webhook_receiver
from tests.waiting import wait_until

SECRET = "whsec-test-1"
FAST = RetryPolicy(base_s=0.1, factor=2.0, cap_s=0.5, window_s=20.0)


def _queue(dsn: str, messages: list[Outbound]) -> None:
    with psycopg.connect(dsn) as conn:
        for message in messages:
            enqueue(conn, message)


def _hook(url: str, n: int, subscriber: str = "subscription:1") -> Outbound:
    return Outbound(
        target=url,
        subscriber=subscriber,
        idempotency_key=f"parcel.sorted:RR473124829GB:{n}",
        kind="parcel.sorted",
        content=Webhook({"n": n, "event": "sorted"}, SECRET),
    )


def _states(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT state, count(*)::int FROM outbound_deliveries GROUP BY state"
            ).fetchall()
        )


# Message n misbehaves in its own way on its first attempts, then is accepted (a
# slow answer is still an answer in time: accepted at once).
MISBEHAVIOUR = {0: ["500", "500"], 1: ["timeout"], 2: ["drop", "drop"], 3: ["slow"], 4: []}


def _misbehave(request: Received, seen_before: int) -> str:
    n = int(request.headers["idempotency-key"].rsplit(":", 1)[1])
    plan = MISBEHAVIOUR[n % len(MISBEHAVIOUR)]
    return plan[seen_before] if seen_before < len(plan) else "ok"


def test_every_webhook_arrives_signed_despite_misbehaving_receiver(db_dsn: str) -> None:
    """500s, timeouts, dropped connections and slow answers: every message arrives,
    every attempt's signature verifies, and repeats carry the same key and body."""
    with webhook_receiver(_misbehave, slow_s=0.3, hang_s=1.5) as receiver:
        messages = [_hook(receiver.url, n) for n in range(10)]
        settings = EngineSettings(
            db_dsn, allow_private_targets=True, retry=FAST, timeout_s=0.8, workers=4
        )
        with running(settings):
            _queue(db_dsn, messages)
            wait_until(
                lambda: _states(db_dsn) == {"delivered": 10}, 30, "all 10 webhooks delivered"
            )
    keys = {m.idempotency_key for m in messages}
    assert receiver.accepted_keys() == keys
    by_key: dict[str, set[bytes]] = {}
    for request in receiver.requests:
        webhooks.verify(
            SECRET, request.headers[webhooks.SIGNATURE_HEADER.lower()], request.body, time.time()
        )
        by_key.setdefault(request.headers["idempotency-key"], set()).add(request.body)
    assert all(len(bodies) == 1 for bodies in by_key.values())
    for n in range(10):
        failures = [a for a in MISBEHAVIOUR[n % len(MISBEHAVIOUR)] if a != "slow"]
        assert receiver.seen(messages[n].idempotency_key) == len(failures) + 1, n


def test_dead_letter_after_the_retry_window(db_dsn: str) -> None:
    """A receiver that always fails makes the message a dead letter once the window ends."""
    window = RetryPolicy(base_s=0.1, factor=2.0, cap_s=0.4, window_s=1.5)
    with webhook_receiver(lambda _r, _n: "500") as receiver:
        started = time.monotonic()
        with running(
            EngineSettings(db_dsn, allow_private_targets=True, retry=window, timeout_s=0.5)
        ):
            _queue(db_dsn, [_hook(receiver.url, 1)])
            wait_until(lambda: _states(db_dsn) == {"dead": 1}, 20, "a dead letter")
        elapsed = time.monotonic() - started
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT attempts, last_error, dead_at - retry_from FROM outbound_deliveries"
        ).fetchone()
        attempts = conn.execute("SELECT count(*) FROM outbound_attempts WHERE NOT ok").fetchone()
    assert row is not None and attempts is not None
    assert row[0] >= 3 and row[1] == "HTTP 500"
    assert row[2].total_seconds() >= 1.5 and elapsed >= 1.5
    assert attempts[0] == row[0] == len(receiver.requests)


def test_rate_limit_per_subscriber(db_dsn: str) -> None:
    """A subscriber gets at most its limit per window; another subscriber is not held up."""
    limit = RateLimit(per_window=3, window_s=1.0)
    with webhook_receiver(lambda _r, _n: "ok") as receiver:
        busy = [_hook(receiver.url, n, "subscription:busy") for n in range(9)]
        other = [_hook(receiver.url, 100, "subscription:other")]
        with running(EngineSettings(db_dsn, allow_private_targets=True, retry=FAST, rate=limit)):
            _queue(db_dsn, busy + other)
            wait_until(lambda: _states(db_dsn) == {"delivered": 10}, 30, "10 delivered")
    with psycopg.connect(db_dsn) as conn:
        times = [
            t.timestamp()
            for (t,) in conn.execute(
                "SELECT at FROM outbound_attempts WHERE subscriber = 'subscription:busy' "
                "ORDER BY at"
            )
        ]
        other_at = conn.execute(
            "SELECT min(at) FROM outbound_attempts WHERE subscriber = 'subscription:other'"
        ).fetchone()
    assert len(times) == 9
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 1.0, times
    assert other_at is not None and other_at[0].timestamp() - times[0] < 1.0


def test_queued_messages_survive_until_an_engine_runs(db_dsn: str) -> None:
    """Messages queued while no engine runs are sent by the next engine started."""
    with webhook_receiver(lambda _r, _n: "ok") as receiver:
        _queue(db_dsn, [_hook(receiver.url, n) for n in range(3)])
        time.sleep(0.2)
        assert receiver.requests == []
        with running(EngineSettings(db_dsn, allow_private_targets=True, retry=FAST)):
            wait_until(lambda: _states(db_dsn) == {"delivered": 3}, 20, "3 delivered")
    assert len(receiver.requests) == 3


def test_email_has_text_html_and_unsubscribe(db_dsn: str) -> None:
    """An e-mail reaches a real SMTP server with plain text, HTML and List-Unsubscribe."""
    with smtp_server() as (mailbox, url):
        server = SmtpServer.from_url(url, "parceltrack <notify@example.org>")
        message = Outbound(
            target="customer@example.org",
            subscriber="subscription:7",
            idempotency_key="parcel.delayed:RR473124829GB:delay:1",
            kind="parcel.delayed",
            content=Email(
                "Your parcel is delayed",
                "Delayed. Unsubscribe: http://api/v1/unsubscribe/tok",
                "<p>Delayed.</p><a href='http://api/v1/unsubscribe/tok'>Unsubscribe</a>",
                "http://api/v1/unsubscribe/tok",
            ),
        )
        with running(EngineSettings(db_dsn, allow_private_targets=True, smtp=server, retry=FAST)):
            _queue(db_dsn, [message])
            wait_until(lambda: mailbox.messages, 20, "an e-mail")
    mail = mailbox.messages[0]
    assert mailbox.recipients == [["customer@example.org"]]
    assert mail["Subject"] == "Your parcel is delayed"
    assert mail["List-Unsubscribe"] == "<http://api/v1/unsubscribe/tok>"
    assert mail["X-Parceltrack-Idempotency-Key"] == message.idempotency_key
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert "http://api/v1/unsubscribe/tok" in text.get_content()
    assert "<a href='http://api/v1/unsubscribe/tok'>" in html.get_content()


def test_email_waits_while_smtp_is_down(db_dsn: str) -> None:
    """An e-mail queued while the SMTP server is down is retried and arrives once it is up."""
    with smtp_server() as (_mailbox, url):
        pass  # its port is now closed
    server = SmtpServer.from_url(url, "parceltrack <notify@example.org>")
    message = Outbound("c@example.org", "s:1", "k", "parcel.sorted", Email("s", "t", "<p>h</p>"))
    with running(EngineSettings(db_dsn, allow_private_targets=True, smtp=server, retry=FAST)):
        _queue(db_dsn, [message])
        wait_until(lambda: _failed_attempts(db_dsn) >= 2, 20, "failed SMTP attempts")
    assert _states(db_dsn) == {"pending": 1}


def _failed_attempts(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM outbound_attempts WHERE NOT ok").fetchone()
    return int(row[0]) if row else 0


def test_no_address_url_or_token_in_logs(db_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG, through failures and dead letters, no log names an address, URL or token."""
    caplog.set_level(logging.DEBUG)
    token = "tok-9f8e7d6c5b4a"
    window = RetryPolicy(base_s=0.1, factor=2.0, cap_s=0.2, window_s=0.8)
    with smtp_server() as (_mailbox, smtp_url):
        pass
    server = SmtpServer.from_url(smtp_url, "parceltrack <notify@example.org>")
    with webhook_receiver(lambda _r, _n: "drop") as receiver:
        url = f"{receiver.url}?token={token}"
        email = Outbound(
            "private.person@example.org", "s:2", "k2", "parcel.sorted", Email("s", "t", "h")
        )
        with running(
            EngineSettings(
                db_dsn, allow_private_targets=True, smtp=server, retry=window, timeout_s=0.5
            )
        ):
            _queue(db_dsn, [_hook(url, 1), email])
            wait_until(lambda: _states(db_dsn) == {"dead": 2}, 20, "two dead letters")
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "dead letter" in logged
    for secret in (token, "private.person", receiver.url, "127.0.0.1:", SECRET):
        assert secret not in logged


def test_messages_of_a_crashed_engine_come_back_after_the_lease(db_dsn: str) -> None:
    """Messages an engine claimed and never finished (it died) are sent by another
    engine once their lease ends, and not before."""
    with webhook_receiver(lambda _r, _n: "ok") as receiver:
        _queue(db_dsn, [_hook(receiver.url, n) for n in range(3)])
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            claimed = queue.claim(conn, 10, lease_s=2.0, limit=RateLimit())
        assert len(claimed) == 3  # ... and this "engine" dies without a word
        started = time.monotonic()
        with running(EngineSettings(db_dsn, allow_private_targets=True, retry=FAST)):
            wait_until(lambda: _states(db_dsn) == {"delivered": 3}, 20, "3 delivered")
        assert time.monotonic() - started >= 1.5
    assert len(receiver.requests) == 3
    with psycopg.connect(db_dsn) as conn:
        attempts = conn.execute(
            "SELECT detail, count(*)::int FROM outbound_attempts GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert attempts == [("HTTP 200", 3), ("in flight", 3)]


def test_signature_in_another_header_when_asked(db_dsn: str) -> None:
    """A webhook queued with signature_header="GS1-Signature" (EPCIS) is signed there."""
    with webhook_receiver(lambda _r, _n: "ok") as receiver:
        message = Outbound(
            receiver.url, "partner:acme", "q1:1", "epcis.query",
            Webhook({"type": "EPCISQueryDocument"}, "token-1", "GS1-Signature"),
        )  # fmt: skip
        with running(EngineSettings(db_dsn, allow_private_targets=True, retry=FAST)):
            _queue(db_dsn, [message])
            wait_until(lambda: receiver.requests, 20, "the EPCIS webhook")
    request = receiver.requests[0]
    assert webhooks.SIGNATURE_HEADER.lower() not in request.headers
    webhooks.verify("token-1", request.headers["gs1-signature"], request.body, time.time())


def test_private_targets_are_refused_by_default(db_dsn: str) -> None:
    """Without --allow-private-targets a webhook to a loopback address is never sent:
    it becomes a dead letter at once, saying why."""
    with webhook_receiver(lambda _r, _n: "ok") as receiver:
        with running(EngineSettings(db_dsn, retry=FAST)):
            _queue(db_dsn, [_hook(receiver.url, 1)])
            wait_until(lambda: _states(db_dsn) == {"dead": 1}, 20, "a refused dead letter")
        assert receiver.requests == []
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT attempts, last_error FROM outbound_deliveries").fetchone()
    assert row == (1, "refused: the target is not a public address")


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://127.0.0.1:8000/x", False),
        ("http://localhost/x", False),
        ("http://10.1.2.3/x", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://[::1]/x", False),
        ("https://8.8.8.8/hook", True),
        ("https://no-such-host.invalid/hook", True),
    ],
    ids=["loopback", "localhost", "private", "link-local", "ipv6-loopback", "public", "unresolved"],
)
def test_public_target(url: str, public: bool) -> None:
    """Loopback, private and link-local hosts are not public; an unresolvable one is let
    through to fail (and be retried) like any unreachable receiver."""
    assert public_target(url) is public


def test_old_delivered_messages_are_pruned_dead_letters_kept(db_dsn: str) -> None:
    """The engine deletes delivered messages older than keep_days; dead letters stay."""
    with psycopg.connect(db_dsn) as conn:
        for n in range(3):
            enqueue(conn, _hook("http://example.org/h", n))
        conn.execute(
            "UPDATE outbound_deliveries SET created_at = now() - interval '31 days', "
            "state = CASE delivery_id WHEN 1 THEN 'delivered' WHEN 2 THEN 'dead' "
            "ELSE 'delivered' END"
        )
        conn.execute("UPDATE outbound_deliveries SET created_at = now() WHERE delivery_id = 3")
    with running(EngineSettings(db_dsn, keep_days=30)):
        wait_until(lambda: _states(db_dsn) == {"dead": 1, "delivered": 1}, 10, "one pruned")
