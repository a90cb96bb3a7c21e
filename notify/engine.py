"""The delivery loop: claim due messages, send them on a few threads, record outcomes.

Woken by NOTIFY parceltrack_outbound when a message is queued, and at least every
`poll_s` for retries that fall due. Slow receivers hold one worker thread each, not
the loop: the loop claims only as many messages as it has free workers.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import stamina

from notify import queue
from notify.policy import RateLimit, RetryPolicy
from notify.send import Outcome, SmtpServer, send_email, send_webhook
from storage.outbound import Channel

log = logging.getLogger(__name__)
# httpx logs every request's URL at INFO and httpcore its hosts at DEBUG: a webhook URL
# can carry the receiver's token, and no personal data may reach a log.
for _chatty in ("httpx", "httpcore"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)

WAKE_CHANNEL = "parceltrack_outbound"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    dsn: str
    smtp: SmtpServer | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate: RateLimit = field(default_factory=RateLimit)
    workers: int = 8
    timeout_s: float = 10.0  # one webhook or SMTP conversation
    poll_s: float = 1.0
    # Longer than any attempt can take, so a lease ends only when its engine died.
    lease_s: float = 60.0
    # Webhooks to loopback or private addresses: only where receivers live there (the
    # tests, the demo, a closed network). Otherwise refused as dead letters.
    allow_private_targets: bool = False
    keep_days: float = 30.0  # delivered messages are deleted after this long
    prune_every_s: float = 600.0

    def __repr__(self) -> str:  # the DSN may carry a password
        return f"EngineSettings(workers={self.workers}, retry={self.retry}, rate={self.rate})"


class DeliveryEngine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.delivered = 0
        self.failed = 0
        self.dead = 0

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def run(self, stop: threading.Event) -> None:
        s = self.settings
        with (
            psycopg.connect(s.dsn, autocommit=True) as conn,
            psycopg.connect(s.dsn, autocommit=True) as listener,
            httpx.Client(timeout=s.timeout_s, follow_redirects=False) as client,
            ThreadPoolExecutor(s.workers, thread_name_prefix="notify-send") as pool,
        ):
            # Losing the last outcomes in a server crash only sends those messages again
            # (at least once, receivers drop repeats by key): no fsync wait per message.
            conn.execute("SET synchronous_commit = off")
            listener.execute(f"LISTEN {WAKE_CHANNEL}")
            log.info("delivery engine running with %d workers", s.workers)
            flying: dict[Future[Outcome], queue.Delivery] = {}
            pruned_at = 0.0
            while not stop.is_set():
                if time.monotonic() - pruned_at >= s.prune_every_s:
                    pruned_at = time.monotonic()
                    if count := queue.prune(conn, s.keep_days):
                        log.info("pruned %d delivered messages", count)
                free = s.workers - len(flying)
                if free > 0:
                    for delivery in queue.claim(conn, free, s.lease_s, s.rate):
                        flying[pool.submit(self._send, client, delivery)] = delivery
                if flying:
                    done, _ = wait(flying, timeout=0.05, return_when=FIRST_COMPLETED)
                    self._record(conn, [(flying.pop(f), f.result()) for f in done])
                else:
                    # A new message wakes us; the timeout is the next retry falling due.
                    idle = min(s.poll_s, queue.seconds_to_next(conn))
                    for _ in listener.notifies(timeout=max(idle, 0.01), stop_after=1):
                        pass
            self._record(conn, [(d, f.result()) for f, d in flying.items()])

    def _send(self, client: httpx.Client, delivery: queue.Delivery) -> Outcome:
        try:
            if delivery.channel is Channel.WEBHOOK:
                return send_webhook(client, delivery, self.settings.allow_private_targets)
            if self.settings.smtp is None:
                return Outcome(False, "no SMTP server configured")
            return send_email(self.settings.smtp, delivery, self.settings.timeout_s)
        except Exception as exc:  # a bug must not lose the message: it is retried
            log.exception("delivery %d: sender failed", delivery.delivery_id)
            return Outcome(False, f"sender error ({type(exc).__name__})")

    def _record(
        self, conn: psycopg.Connection[Any], finished: list[tuple[queue.Delivery, Outcome]]
    ) -> None:
        if not finished:
            return
        failures = queue.record(
            conn,
            [(d, o.ok, o.detail, o.permanent) for d, o in finished],
            self.settings.retry,
            datetime.now(UTC),
        )
        self.delivered += len(finished) - len(failures)
        self.failed += len(failures)
        details = {d.delivery_id: o.detail for d, o in finished}
        # Only ids, kinds and outcomes: the target and body are personal data.
        for delivery, retry_at in failures:
            if retry_at is None:
                self.dead += 1
                log.warning(
                    "delivery %d (%s, subscriber %s) is a dead letter after %d attempts: %s",
                    delivery.delivery_id,
                    delivery.kind,
                    delivery.subscriber,
                    delivery.attempts,
                    details[delivery.delivery_id],
                )
            else:
                log.info(
                    "delivery %d attempt %d failed (%s); next at %s",
                    delivery.delivery_id,
                    delivery.attempts,
                    details[delivery.delivery_id],
                    retry_at.isoformat(timespec="seconds"),
                )
