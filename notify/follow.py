"""What the notifier reads: new scans and alert changes of subscribed parcels.

Both are followed in commit order, against snapshots (storage/feed.py): a time
column or a serial id is taken when a row is written, and a slow transaction can
commit after a later one, so a cursor on either would skip it. With positions,
nothing committed late is skipped and nothing is read twice.

- Scans: the commit-ordered scan feed, `commits_after` the stored position, read
  at once (no lag).
- Alert changes (`alert_events`, which carry their writer's `xact_id`): those that
  committed between the stored position and a snapshot taken the hold-down ago. So
  each change is read once, at least the hold-down after it committed (and so after
  its alert opened): by then an alert resolved within the hold-down shows it.

`scans_since` and a `None` position are the way in from a cursor older than the
positions (migration 170), or from a position whose scan log was pruned: those read
by time or id once, and the notifier follows by position from then on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from parceltrack.alerts import PARCEL_KINDS
from storage import feed

_ACTIVE = "SELECT tracking_id FROM customer_subscriptions WHERE unsubscribed_at IS NULL"

# RFID reads name the tag (EPC), not the parcel: the manifest says whose it is.
_SCANS = (
    f"WITH watched AS (SELECT tracking_id, epc, origin_site FROM parcels "
    f"WHERE tracking_id IN ({_ACTIVE})) "
    "SELECT s.ingested_at, w.tracking_id, s.ts, s.site_id, st.name, st.timezone, "
    "rp.stage, w.origin_site FROM scans s "
    "JOIN watched w ON s.tracking_id = w.tracking_id "
    "OR (s.tracking_id IS NULL AND s.epc IS NOT NULL AND s.epc = w.epc) "
    "JOIN read_points rp ON rp.read_point_id = s.read_point_id "
    "JOIN sites st ON st.site_id = s.site_id "
    "WHERE s.kind <> 'noread' AND {where} ORDER BY s.ingested_at, s.ts"
)


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


def scans_of(conn: psycopg.Connection[Any], commits: feed.Commits) -> list[ScanSeen]:
    """Scans of subscribed parcels written by `commits` (from `feed.commits_after`)."""
    if not commits:
        return []
    rows = conn.execute(_SCANS.format(where=feed.SCANS_OF_COMMITS), commits.params()).fetchall()
    return [ScanSeen(*row) for row in rows]


def scans_since(conn: psycopg.Connection[Any], since: datetime) -> list[ScanSeen]:
    """Scans of subscribed parcels ingested after `since` (visible now): the way in
    when there is no position to follow from."""
    rows = conn.execute(
        _SCANS.format(where="s.ingested_at > %(since)s"), {"since": since}
    ).fetchall()
    return [ScanSeen(*row) for row in rows]


def alerts_between(
    conn: psycopg.Connection[Any],
    older: feed.FeedPosition | None,
    after_event: int,
    newer: feed.FeedPosition,
) -> list[AlertSeen]:
    """Changes of subscribed parcels' alerts committed after `older` (without one:
    after event `after_event`) and before `newer`, in event order."""
    if older is None:
        visible, params = feed.visible_at("e.xact_id", newer)
        where = f"e.event_id > %(after)s AND {visible}"
        params["after"] = after_event
    else:
        where, params = feed.committed_between("e.xact_id", older, newer)
    params["kinds"] = [k.value for k in PARCEL_KINDS]
    rows = conn.execute(
        "SELECT e.event_id, e.at, e.change, a.alert_id, a.kind, a.tracking_id, "
        "coalesce(a.site_id, ''), coalesce(st.name, a.site_id, ''), coalesce(st.timezone, 'UTC'), "
        "a.opened_at, a.resolved_at FROM alert_events e "
        "JOIN alerts a ON a.alert_id = e.alert_id "
        "LEFT JOIN sites st ON st.site_id = a.site_id "
        f"WHERE {where} AND a.kind = ANY(%(kinds)s) AND a.tracking_id IN ({_ACTIVE}) "
        "ORDER BY e.event_id",
        params,
    ).fetchall()
    return [AlertSeen(*row) for row in rows]


def last_alert_event(conn: psycopg.Connection[Any]) -> int:
    """The newest alert change's id (where a cursor from before positions stood)."""
    row = conn.execute("SELECT coalesce(max(event_id), 0) FROM alert_events").fetchone()
    return 0 if row is None else int(row[0])
