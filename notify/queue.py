"""The engine's side of the outbound queue: claim due messages, record outcomes.

Claiming leases a message (its next_attempt_at moves a lease ahead) and logs the
attempt in the same transaction, so two engines never send one message at once, a
crashed engine's messages come back when the lease ends, and the rate limit counts
attempts in flight too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from notify.policy import RateLimit, RetryPolicy, admit
from storage.outbound import Channel


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed message and the attempt being made."""

    delivery_id: int
    attempt_id: int
    channel: Channel
    target: str
    subscriber: str
    idempotency_key: str
    kind: str
    subject: str | None
    body: str
    html: str | None
    unsubscribe_url: str | None
    secret: str | None
    attempts: int  # including this one
    retry_from: datetime
    signature_header: str | None = None  # None: X-Parceltrack-Signature


_COLUMNS = (
    "delivery_id, channel, target, subscriber, idempotency_key, kind, subject, body, html, "
    "unsubscribe_url, secret, attempts, retry_from, signature_header"
)


def claim(
    conn: psycopg.Connection[Any], batch: int, lease_s: float, limit: RateLimit
) -> list[Delivery]:
    """Lease up to `batch` due messages, oldest first, within each subscriber's limit;
    the ones over a limit wait until the subscriber's window has room."""
    with conn.transaction():
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbound_deliveries "
            "WHERE state = 'pending' AND next_attempt_at <= now() "
            "ORDER BY next_attempt_at, delivery_id LIMIT %s FOR UPDATE SKIP LOCKED",
            (batch,),
        ).fetchall()
        if not rows:
            return []
        subscribers = sorted({str(r[3]) for r in rows})
        used = dict(
            conn.execute(
                "SELECT subscriber, count(*)::int FROM outbound_attempts "
                "WHERE subscriber = ANY(%s) AND at > now() - make_interval(secs => %s) "
                "GROUP BY subscriber",
                (subscribers, limit.window_s),
            ).fetchall()
        )
        send, defer = admit(rows, lambda r: str(r[3]), used, limit)
        if defer:
            # A fraction of the window: room opens as the oldest attempts age out.
            conn.execute(
                "UPDATE outbound_deliveries SET next_attempt_at = now() "
                "+ make_interval(secs => %s) WHERE delivery_id = ANY(%s)",
                (limit.window_s / max(1, limit.per_window), [r[0] for r in defer]),
            )
        ids = [int(r[0]) for r in send]
        conn.execute(
            "UPDATE outbound_deliveries SET attempts = attempts + 1, "
            "next_attempt_at = now() + make_interval(secs => %s) WHERE delivery_id = ANY(%s)",
            (lease_s, ids),
        )
        attempt_of = dict(
            conn.execute(
                "INSERT INTO outbound_attempts (delivery_id, subscriber, ok, detail) "
                "SELECT d, s, false, 'in flight' FROM unnest(%s::bigint[], %s::text[]) AS t(d, s) "
                "RETURNING delivery_id, attempt_id",
                (ids, [str(r[3]) for r in send]),
            ).fetchall()
        )
        claimed = [
            Delivery(
                delivery_id=int(r[0]),
                attempt_id=int(attempt_of[r[0]]),
                channel=Channel(r[1]),
                target=str(r[2]),
                subscriber=str(r[3]),
                idempotency_key=str(r[4]),
                kind=str(r[5]),
                subject=r[6],
                body=str(r[7]),
                html=r[8],
                unsubscribe_url=r[9],
                secret=r[10],
                attempts=int(r[11]) + 1,
                retry_from=r[12],
                signature_header=r[13],
            )
            for r in send
        ]
    return claimed


def seconds_to_next(conn: psycopg.Connection[Any]) -> float:
    """Seconds until the next pending message falls due (infinity when none waits)."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 "
        "FROM outbound_deliveries WHERE state = 'pending'"
    ).fetchone()
    return float("inf") if row is None or row[0] is None else float(row[0])


def record(
    conn: psycopg.Connection[Any],
    outcomes: list[tuple[Delivery, bool, str, bool]],
    policy: RetryPolicy,
    now: datetime,
) -> list[tuple[Delivery, datetime | None]]:
    """Record the outcomes (delivery, ok, detail, permanent) of finished attempts in one
    transaction. For each failure, when it is tried next, or None: it is now a dead
    letter (the window is over, or the failure is permanent)."""
    failures: list[tuple[Delivery, datetime | None]] = []
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "UPDATE outbound_attempts SET ok = %s, detail = %s WHERE attempt_id = %s",
            [(ok, detail[:500], d.attempt_id) for d, ok, detail, _ in outcomes],
        )
        done = [d.delivery_id for d, ok, _, _ in outcomes if ok]
        if done:
            cur.execute(
                "UPDATE outbound_deliveries SET state = 'delivered', delivered_at = now(), "
                "last_error = NULL WHERE delivery_id = ANY(%s) AND state = 'pending'",
                (done,),
            )
        for delivery, ok, detail, permanent in outcomes:
            if ok:
                continue
            retry_at = (
                None
                if permanent
                else policy.next_attempt(delivery.retry_from, now, delivery.attempts)
            )
            if retry_at is None:
                cur.execute(
                    "UPDATE outbound_deliveries SET state = 'dead', dead_at = now(), "
                    "last_error = %s WHERE delivery_id = %s AND state = 'pending'",
                    (detail, delivery.delivery_id),
                )
            else:
                cur.execute(
                    "UPDATE outbound_deliveries SET next_attempt_at = %s, last_error = %s "
                    "WHERE delivery_id = %s AND state = 'pending'",
                    (retry_at, detail, delivery.delivery_id),
                )
            failures.append((delivery, retry_at))
    return failures


def prune(conn: psycopg.Connection[Any], keep_days: float) -> int:
    """Delete delivered and cancelled messages (and their attempts) older than
    `keep_days`; dead letters stay until an admin replays them. A message queued again
    with a pruned key is sent again: keys protect against repeats within that time."""
    cur = conn.execute(
        "DELETE FROM outbound_deliveries WHERE state IN ('delivered', 'cancelled') "
        "AND created_at < now() - make_interval(secs => %s * 86400)",
        (keep_days,),
    )
    return cur.rowcount
