"""What the notifier reads: new scans and alert changes of subscribed parcels.

This is the one module that knows how changes are found, so it can move to the
commit-ordered scan feed (storage/feed.py, issue 13) when that lands. Until then it
follows `scans` by `ingested_at` as detection does, reading only rows at least
`lag_s` old: `ingested_at` is the writer's transaction start, so a row may commit
after a later one; the lag covers the ingest's short transactions. Alert changes are
read by `alert_events.event_id` once the hold-down has passed, which is a longer lag.

A commit slower than the lag (a loaded server's fsync can take seconds) would slip
behind the cursor, so the notifier also sweeps a window behind it every few seconds
(`since` moved back, `window_s`): what it finds again is dropped by the queue's
idempotency keys, what it finds late is told late rather than never.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from parceltrack.alerts import PARCEL_KINDS

_ACTIVE = "SELECT tracking_id FROM customer_subscriptions WHERE unsubscribed_at IS NULL"


@dataclass(frozen=True, slots=True)
class ScanSeen:
    ingested_at: datetime
    tracking_id: str
    ts: datetime
    site_id: str
    site_name: str
    timezone: str
    stage: str
    origin_site: str | None


@dataclass(frozen=True, slots=True)
class AlertSeen:
    event_id: int
    at: datetime  # when the change was written
    change: str  # opened, acknowledged, resolved, updated
    alert_id: int
    kind: str
    tracking_id: str
    site_id: str
    site_name: str
    timezone: str
    opened_at: datetime
    resolved_at: datetime | None  # as it is now, not as it was at the change


def scans_after(
    conn: psycopg.Connection[Any], since: datetime, lag_s: float, limit: int = 5000
) -> list[ScanSeen]:
    """Scans of subscribed parcels ingested after `since` and at least `lag_s` ago."""
    # RFID reads name the tag (EPC), not the parcel: the manifest says whose it is.
    rows = conn.execute(
        f"WITH watched AS (SELECT tracking_id, epc, origin_site FROM parcels "
        f"WHERE tracking_id IN ({_ACTIVE})) "
        "SELECT s.ingested_at, w.tracking_id, s.ts, s.site_id, st.name, st.timezone, "
        "rp.stage, w.origin_site FROM scans s "
        "JOIN watched w ON s.tracking_id = w.tracking_id "
        "OR (s.tracking_id IS NULL AND s.epc IS NOT NULL AND s.epc = w.epc) "
        "JOIN read_points rp ON rp.read_point_id = s.read_point_id "
        "JOIN sites st ON st.site_id = s.site_id "
        "WHERE s.ingested_at > %s AND s.ingested_at <= now() - make_interval(secs => %s) "
        "AND s.kind <> 'noread' ORDER BY s.ingested_at, s.ts LIMIT %s",
        (since, lag_s, limit),
    ).fetchall()
    return [ScanSeen(*row) for row in rows]


def alerts_after(
    conn: psycopg.Connection[Any],
    after: int,
    hold_down_s: float,
    limit: int = 5000,
    window_s: float | None = None,
) -> list[AlertSeen]:
    """Changes of subscribed parcels' alerts after event `after` (or, sweeping, written
    in the last `window_s` seconds), at least `hold_down_s` old."""
    if window_s is not None:
        after = _first_event_since(conn, window_s)
    rows = conn.execute(
        "SELECT e.event_id, e.at, e.change, a.alert_id, a.kind, a.tracking_id, "
        "coalesce(a.site_id, ''), coalesce(st.name, a.site_id, ''), coalesce(st.timezone, 'UTC'), "
        "a.opened_at, a.resolved_at FROM alert_events e "
        "JOIN alerts a ON a.alert_id = e.alert_id "
        "LEFT JOIN sites st ON st.site_id = a.site_id "
        "WHERE e.event_id > %s AND e.at <= now() - make_interval(secs => %s) "
        f"AND a.kind = ANY(%s) AND a.tracking_id IN ({_ACTIVE}) "
        "ORDER BY e.event_id LIMIT %s",
        (after, hold_down_s, [k.value for k in PARCEL_KINDS], limit),
    ).fetchall()
    return [AlertSeen(*row) for row in rows]


def _first_event_since(conn: psycopg.Connection[Any], window_s: float) -> int:
    row = conn.execute(
        "SELECT coalesce(min(event_id) - 1, (SELECT max(event_id) FROM alert_events), 0) "
        "FROM alert_events WHERE at > now() - make_interval(secs => %s)",
        (window_s,),
    ).fetchone()
    return 0 if row is None else int(row[0])


def last_alert_event(conn: psycopg.Connection[Any]) -> int:
    """The newest alert change's id (where a new notifier starts)."""
    row = conn.execute("SELECT coalesce(max(event_id), 0) FROM alert_events").fetchone()
    return 0 if row is None else int(row[0])
