"""The notifier: scans and alerts of subscribed parcels become queued messages.

Each round reads what is new (notify/follow.py), applies the rules (notify/rules.py)
and, in one transaction, queues a message per notice and active subscription and
moves its cursor: a crash repeats a round, and the repeats' idempotency keys make
the queue keep the first. Each round takes a fraction of a second, so a notice is
queued within the scan lag (1 s) or the alert hold-down of what caused it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import stamina

from notify import follow, rules
from notify.texts import Notice, email, webhook_body
from storage.outbound import Email, Outbound, Webhook, enqueue

log = logging.getLogger(__name__)

CURSOR = "customers"


@dataclass(frozen=True, slots=True)
class NotifierSettings:
    dsn: str
    public_url: str = "http://127.0.0.1:8000"  # the API, for tracking and unsubscribe links
    hold_down_s: float = 2.0
    scan_lag_s: float = 1.0
    interval_s: float = 0.25
    sweep_every_s: float = 5.0  # read a window behind the cursors again (notify/follow.py)
    sweep_window_s: float = 60.0

    def __repr__(self) -> str:  # the DSN may carry a password
        return f"NotifierSettings(hold_down_s={self.hold_down_s}, scan_lag_s={self.scan_lag_s})"


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: int
    tracking_id: str
    channel: str
    target: str
    language: str
    secret: str | None
    unsubscribe_token: str
    created_at: datetime


class Notifier:
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.queued = 0
        self.last_sweep = 0.0

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def run(self, stop: threading.Event) -> None:
        with psycopg.connect(self.settings.dsn) as conn:
            # A server crash can lose the last rounds, but each round's messages and its
            # cursor commit together: lost together, they are simply done again.
            conn.execute("SET synchronous_commit = off")
            conn.commit()
            log.info("notifier running (hold-down %.1f s)", self.settings.hold_down_s)
            while not stop.is_set():
                if self.round(conn) == 0:
                    stop.wait(self.settings.interval_s)

    def round(self, conn: psycopg.Connection[Any]) -> int:
        """One pass over what is new; the number of messages queued."""
        s = self.settings
        with conn.transaction():
            scan_at, alert_event = _cursor(conn)
            sweep = time.monotonic() - self.last_sweep >= s.sweep_every_s
            if sweep:
                self.last_sweep = time.monotonic()
                window = timedelta(seconds=s.sweep_window_s)
                scans = follow.scans_after(conn, scan_at - window, s.scan_lag_s, 50_000)
                alerts = follow.alerts_after(
                    conn, alert_event, s.hold_down_s, 50_000, s.sweep_window_s
                )
            else:
                scans = follow.scans_after(conn, scan_at, s.scan_lag_s)
                alerts = follow.alerts_after(conn, alert_event, s.hold_down_s)
            if not scans and not alerts:
                return 0
            now = datetime.now(UTC)
            notices: list[tuple[Notice, datetime]] = []
            for scan in scans:
                notice = rules.scan_notice(scan)
                if notice is not None:
                    notices.append((notice, scan.ingested_at))
            etas = _etas(conn, sorted({a.tracking_id for a in alerts}))
            for alert in alerts:
                eta, due = etas.get(alert.tracking_id, (None, None))
                notice = rules.alert_notice(
                    alert, s.hold_down_s, rules.expected_time(eta, due, now)
                )
                if notice is not None:
                    notices.append((notice, alert.at))
            queued = self._queue(conn, notices)
            conn.execute(
                "UPDATE notify_cursor SET scan_at = %s, alert_event = %s WHERE name = %s",
                (
                    max(scan_at, scans[-1].ingested_at) if scans else scan_at,
                    max(alert_event, alerts[-1].event_id) if alerts else alert_event,
                    CURSOR,
                ),
            )
        if queued:
            log.info("queued %d notifications from %d scans, %d alert changes",
                     queued, len(scans), len(alerts))  # fmt: skip
        self.queued += queued
        # A sweep that found nothing new is no reason to go round again at once.
        return queued if sweep else queued + len(scans) + len(alerts)

    def _queue(self, conn: psycopg.Connection[Any], notices: list[tuple[Notice, datetime]]) -> int:
        parcels = sorted({n.tracking_id for n, _ in notices})
        subscriptions = _subscriptions(conn, parcels)
        wanted = [
            (notice, sub)
            for notice, seen_at in notices
            for sub in subscriptions.get(notice.tracking_id, [])
            if sub.created_at <= seen_at  # not what happened before they subscribed
        ]
        # Skip rendering what is queued already (repeated reads, sweeps).
        queued_before = _queued(conn, [(f"subscription:{s.subscription_id}", n.idempotency_key())
                                       for n, s in wanted])  # fmt: skip
        queued = 0
        for notice, sub in wanted:
            if (f"subscription:{sub.subscription_id}", notice.idempotency_key()) in queued_before:
                continue
            if enqueue(conn, self._message(notice, sub)) is not None:
                queued += 1
        return queued

    def _message(self, notice: Notice, sub: Subscription) -> Outbound:
        base = self.settings.public_url.rstrip("/")
        if sub.channel == "webhook":
            assert sub.secret is not None
            content: Email | Webhook = Webhook(
                webhook_body(notice, sub.language, sub.subscription_id), sub.secret
            )
        else:
            content = email(
                notice,
                sub.language,
                f"{base}/track?id={notice.tracking_id}&lang={sub.language}",
                f"{base}/v1/unsubscribe/{sub.unsubscribe_token}",
            )
        return Outbound(
            target=sub.target,
            subscriber=f"subscription:{sub.subscription_id}",
            idempotency_key=notice.idempotency_key(),
            kind=notice.kind,
            content=content,
        )


def _cursor(conn: psycopg.Connection[Any]) -> tuple[datetime, int]:
    """The cursor, locked for this round; a first notifier starts from now."""
    row = conn.execute(
        "SELECT scan_at, alert_event FROM notify_cursor WHERE name = %s FOR UPDATE", (CURSOR,)
    ).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO notify_cursor (name, scan_at, alert_event) VALUES (%s, now(), %s) "
            "ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name "
            "RETURNING scan_at, alert_event",
            (CURSOR, follow.last_alert_event(conn)),
        ).fetchone()
    assert row is not None
    return row[0], int(row[1])


def _queued(conn: psycopg.Connection[Any], pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    if not pairs:
        return set()
    rows = conn.execute(
        "SELECT subscriber, idempotency_key FROM outbound_deliveries "
        "WHERE (subscriber, idempotency_key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([p[0] for p in pairs], [p[1] for p in pairs]),
    ).fetchall()
    return {(str(a), str(b)) for a, b in rows}


def _subscriptions(
    conn: psycopg.Connection[Any], parcels: list[str]
) -> dict[str, list[Subscription]]:
    rows = conn.execute(
        "SELECT subscription_id, tracking_id, channel, target, language, secret, "
        "unsubscribe_token, created_at FROM customer_subscriptions "
        "WHERE tracking_id = ANY(%s) AND unsubscribed_at IS NULL ORDER BY subscription_id",
        (parcels,),
    ).fetchall()
    found: dict[str, list[Subscription]] = {}
    for row in rows:
        sub = Subscription(*row)
        found.setdefault(sub.tracking_id, []).append(sub)
    return found


def _etas(
    conn: psycopg.Connection[Any], parcels: list[str]
) -> dict[str, tuple[datetime | None, datetime | None]]:
    rows = conn.execute(
        "SELECT tracking_id, eta, next_due FROM parcel_eta WHERE tracking_id = ANY(%s)",
        (parcels,),
    ).fetchall()
    return {str(r[0]): (r[1], r[2]) for r in rows}
