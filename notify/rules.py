"""When a customer is told something: the rules, pure.

Scans: a parcel is told of each stage change once per site; repeated reads and
recirculation at the same stage produce nothing new (the notice's cause is the site
and stage, so its idempotency key repeats and the queue keeps the first).
- induction at the parcel's origin site: accepted; induction elsewhere: arrived;
- sort or chute: sorted; dispatch: dispatched. Other stages are not told.

Alerts (the hold-down rule): an alert is told only when it is still open `hold_down_s`
after it opened; its resolution is told only when its opening was. So an alert that
opens and closes within the hold-down (a parcel that arrives late at a stage gets its
delay alert opened and resolved at once) produces no notification at all.
- delay, late: delayed; missort, misroute: exception; missing: missing.

New expected time (delayed / exception / missing): the detector's ETA shifted by how
far the parcel is past its stage deadline: eta + max(0, now - next_due).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from notify.follow import AlertSeen, ScanSeen
from notify.texts import Notice
from parceltrack.layout import Stage
from parceltrack.webhooks import ParcelEvent

_ALERT_EVENTS: dict[str, ParcelEvent] = {
    "delay": ParcelEvent.DELAYED,
    "late": ParcelEvent.DELAYED,
    "missort": ParcelEvent.EXCEPTION,
    "misroute": ParcelEvent.EXCEPTION,
    "missing": ParcelEvent.MISSING,
}


def scan_notice(scan: ScanSeen) -> Notice | None:
    """The notice a scan gives, if its stage is one customers are told about."""
    if scan.stage == Stage.INDUCTION:
        at_origin = scan.origin_site is None or scan.origin_site == scan.site_id
        event = ParcelEvent.ACCEPTED if at_origin else ParcelEvent.ARRIVED
    elif scan.stage in (Stage.SORT, Stage.CHUTE):
        event = ParcelEvent.SORTED
    elif scan.stage == Stage.DISPATCH:
        event = ParcelEvent.DISPATCHED
    else:
        return None
    # Sort and chute both say "sorted": one cause, so one notice per site.
    return Notice(
        scan.tracking_id,
        event,
        scan.ts,
        scan.site_id,
        scan.site_name,
        scan.timezone,
        cause=f"{scan.site_id}",
    )


def outlived_hold_down(alert: AlertSeen, hold_down_s: float) -> bool:
    """True when the alert was still open `hold_down_s` after it opened."""
    if alert.resolved_at is None:
        return True
    return alert.resolved_at - alert.opened_at > timedelta(seconds=hold_down_s)


def expected_time(
    eta: datetime | None, next_due: datetime | None, now: datetime
) -> datetime | None:
    """The new expected time of a parcel held up: the ETA pushed by its lateness."""
    if eta is None:
        return None
    late = max(timedelta(0), now - next_due) if next_due is not None else timedelta(0)
    return eta + late


def alert_notice(alert: AlertSeen, hold_down_s: float, expected: datetime | None) -> Notice | None:
    """The notice an alert change gives under the hold-down rule, or None."""
    event = _ALERT_EVENTS.get(alert.kind)
    if event is None or not outlived_hold_down(alert, hold_down_s):
        return None
    if alert.change == "opened":
        return Notice(
            alert.tracking_id,
            event,
            alert.opened_at,
            alert.site_id,
            alert.site_name,
            alert.timezone,
            cause=f"alert:{alert.alert_id}",
            reason=alert.kind,
            expected=expected,
        )
    if alert.change == "resolved" and alert.resolved_at is not None:
        return Notice(
            alert.tracking_id,
            ParcelEvent.RESOLVED,
            alert.resolved_at,
            alert.site_id,
            alert.site_name,
            alert.timezone,
            cause=f"alert:{alert.alert_id}",
        )
    return None
