"""The notifier: scans and alerts of subscribed parcels become queued messages.

Each round reads, in one snapshot, what committed since its positions (notify/
follow.py: scans at once, alert changes once the hold-down has passed since they
committed), applies the rules (notify/rules.py) and then, in one transaction, queues
a message per notice and active subscription and moves its positions: a crash
repeats a round, and the repeats' idempotency keys make the queue keep the first.

One notifier is active at a time (a session advisory lock; others wait as
standbys and take over when its connection ends): the positions are one cursor,
and the hold-down's snapshots live in the active one's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import stamina

from notify import follow, rules
from notify.texts import Notice, email, webhook_body
from storage import feed
from storage.outbound import Email, Outbound, Webhook, enqueue

log = logging.getLogger(__name__)

CURSOR = "customers"
# Any fixed number: the active notifier holds it for as long as it runs.
_ACTIVE_LOCK = 0x6E6F_7469_6679
# Reading by time when the scan log was pruned past the position: transactions that
# were open at the position began at most this long before it (ingested_at is the
# writer's transaction start). Repeats are dropped by the idempotency keys.
_PRUNED_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class NotifierSettings:
    dsn: str
    public_url: str = "http://127.0.0.1:8000"  # the API, for tracking and unsubscribe links
    hold_down_s: float = 2.0
    interval_s: float = 0.25  # between rounds: the poll that bounds a scan's wait

    def __repr__(self) -> str:  # the DSN may carry a password
        return f"NotifierSettings(hold_down_s={self.hold_down_s}, interval_s={self.interval_s})"


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


@dataclass(frozen=True, slots=True)
class Cursor:
    scan_at: datetime  # when the scan position was taken (the database's clock)
    alert_event: int  # the newest alert change read (for cursors from before positions)
    scan_position: feed.FeedPosition | None
    alert_position: feed.FeedPosition | None


class Notifier:
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.queued = 0
        # Snapshots of recent rounds: alert changes are read up to the newest one that
        # is at least the hold-down old.
        self._recent: deque[tuple[float, feed.FeedPosition]] = deque()

    @stamina.retry(on=psycopg.OperationalError, attempts=None, timeout=None, wait_max=5.0)
    def run(self, stop: threading.Event) -> None:
        with psycopg.connect(self.settings.dsn, autocommit=True) as conn:
            # A server crash can lose the last rounds, but each round's messages and its
            # positions commit together: lost together, they are simply done again.
            conn.execute("SET synchronous_commit = off")
            self._recent.clear()  # a new connection: another notifier may have moved on
            if not self._become_active(conn, stop):
                return
            _ensure_cursor(conn)
            log.info("notifier running (hold-down %.1f s)", self.settings.hold_down_s)
            while not stop.is_set():
                began = time.monotonic()
                self.round(conn)
                stop.wait(max(0.0, self.settings.interval_s - (time.monotonic() - began)))

    def _become_active(self, conn: psycopg.Connection[Any], stop: threading.Event) -> bool:
        """Wait until no other notifier is active; False when stopped first."""
        waiting = False
        while not stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_ACTIVE_LOCK,)).fetchone()
            if row is not None and row[0]:
                return True
            if not waiting:
                log.info("another notifier is active: standing by")
                waiting = True
            stop.wait(1.0)
        return False

    def round(self, conn: psycopg.Connection[Any]) -> int:
        """One pass over what committed since the positions; the messages queued.
        `conn` is in autocommit mode and this notifier holds the active lock."""
        with feed.snapshot(conn) as now:
            cursor = _cursor(conn)
            scans, scan_at = self._new_scans(conn, cursor, now)
            lagged = self._lagged(now)
            alerts = (
                follow.alerts_between(conn, cursor.alert_position, cursor.alert_event, lagged)
                if lagged is not None
                else []
            )
            messages = self._messages(conn, scans, alerts) if scans or alerts else []
        alert_position = lagged or cursor.alert_position
        with conn.transaction():
            queued = sum(enqueue(conn, m) is not None for m in messages)
            conn.execute(
                "UPDATE notify_cursor SET scan_at = %s, scan_position = %s, "
                "alert_event = %s, alert_position = %s WHERE name = %s",
                (
                    scan_at,
                    now.text(),
                    max([cursor.alert_event, *(a.event_id for a in alerts)]),
                    None if alert_position is None else alert_position.text(),
                    CURSOR,
                ),
            )
        if queued:
            log.info("queued %d notifications from %d scans, %d alert changes",
                     queued, len(scans), len(alerts))  # fmt: skip
        self.queued += queued
        return queued

    def _new_scans(
        self, conn: psycopg.Connection[Any], cursor: Cursor, now: feed.FeedPosition
    ) -> tuple[list[follow.ScanSeen], datetime]:
        """Scans committed since the scan position (read by time when there is none to
        follow from), and the database's time of `now`."""
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        taken_at: datetime = row[0]
        position = cursor.scan_position
        if position is None:
            return follow.scans_since(conn, cursor.scan_at), taken_at
        if not feed.can_follow(conn, position):
            log.warning(
                "the scan feed's log was pruned past the notifier's position (stopped too "
                "long?): reading scans ingested since %s instead; some may be told late",
                (cursor.scan_at - _PRUNED_MARGIN).isoformat(timespec="seconds"),
            )
            return follow.scans_since(conn, cursor.scan_at - _PRUNED_MARGIN), taken_at
        return follow.scans_of(conn, feed.commits_after(conn, position)), taken_at

    def _lagged(self, now: feed.FeedPosition) -> feed.FeedPosition | None:
        """The newest snapshot of this run at least the hold-down old (None before
        the first is), after remembering `now`."""
        mono = time.monotonic()
        self._recent.append((mono, now))
        lagged = None
        while self._recent and self._recent[0][0] <= mono - self.settings.hold_down_s:
            lagged = self._recent.popleft()[1]
        return lagged

    def _messages(
        self,
        conn: psycopg.Connection[Any],
        scans: list[follow.ScanSeen],
        alerts: list[follow.AlertSeen],
    ) -> list[Outbound]:
        s = self.settings
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        now: datetime = row[0]
        notices: list[tuple[Notice, datetime]] = []
        for scan in scans:
            notice = rules.scan_notice(scan)
            if notice is not None:
                notices.append((notice, scan.ingested_at))
        etas = _etas(conn, sorted({a.tracking_id for a in alerts}))
        for alert in alerts:
            eta, due = etas.get(alert.tracking_id, (None, None))
            notice = rules.alert_notice(alert, s.hold_down_s, rules.expected_time(eta, due, now))
            if notice is not None:
                notices.append((notice, alert.at))
        return self._queue(conn, notices)

    def _queue(
        self, conn: psycopg.Connection[Any], notices: list[tuple[Notice, datetime]]
    ) -> list[Outbound]:
        """The messages the notices give, one per active subscription, leaving out
        what is queued already (a round repeated after a crash)."""
        parcels = sorted({n.tracking_id for n, _ in notices})
        subscriptions = _subscriptions(conn, parcels)
        wanted = [
            (notice, sub)
            for notice, seen_at in notices
            for sub in subscriptions.get(notice.tracking_id, [])
            if sub.created_at <= seen_at  # not what happened before they subscribed
        ]
        queued_before = _queued(conn, [(f"subscription:{s.subscription_id}", n.idempotency_key())
                                       for n, s in wanted])  # fmt: skip
        return [
            self._message(notice, sub)
            for notice, sub in wanted
            if (f"subscription:{sub.subscription_id}", notice.idempotency_key())
            not in queued_before
        ]

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


def _ensure_cursor(conn: psycopg.Connection[Any]) -> None:
    """A first notifier starts from now: positions at the current snapshot."""
    conn.execute(
        "INSERT INTO notify_cursor (name, scan_at, alert_event, scan_position, alert_position) "
        "SELECT %s, now(), coalesce(max(event_id), 0), pg_current_snapshot()::text, "
        "pg_current_snapshot()::text FROM alert_events ON CONFLICT (name) DO NOTHING",
        (CURSOR,),
    )


def _cursor(conn: psycopg.Connection[Any]) -> Cursor:
    row = conn.execute(
        "SELECT scan_at, alert_event, scan_position, alert_position FROM notify_cursor "
        "WHERE name = %s",
        (CURSOR,),
    ).fetchone()
    assert row is not None, "the cursor is made before the first round"
    return Cursor(
        row[0],
        int(row[1]),
        None if row[2] is None else feed.FeedPosition.parse(row[2]),
        None if row[3] is None else feed.FeedPosition.parse(row[3]),
    )


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
