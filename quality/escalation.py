"""Escalation planning, pure: which messages the alerts due for escalation become.

An alert still open (not acknowledged, not resolved) `after_s` seconds after it
opened is due for round 0, the escalation; then every `repeat_s` seconds after the
last round for a reminder (round 1, 2 ...), until it is acknowledged or resolves.
Each person on the site's on-duty list gets the due alerts at or above their
chosen severity: one message per alert, or, when `digest_at` or more are due for
them at one site at once, a single digest that names the site's silent devices
and counts the alerts by kind and read point (a silent tunnel scanner stranding
300 parcels is one message, not 300).

Idempotency keys come from what is reported, never from time: an alert's round
(`escalation:{alert}:{round}`), or a digest's alerts and rounds, so a scheduler
restarted mid-tick queues nothing twice.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from quality import texts

RANK = {"minor": 1, "major": 2, "critical": 3}


@dataclass(frozen=True, slots=True)
class DueAlert:
    alert_id: int
    kind: str
    site_id: str
    severity: str
    round: int
    opened_at: datetime
    read_point_id: str | None = None
    device_id: str | None = None
    tracking_id: str | None = None
    assigned_to: str | None = None


@dataclass(frozen=True, slots=True)
class OnDuty:
    duty_id: int
    site_id: str
    name: str
    channel: str  # email | webhook
    address: str
    min_severity: str = "minor"
    language: str = "en"
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One message to one person on duty: about one alert, or a digest of several."""

    duty: OnDuty
    idempotency_key: str
    kind: str  # alert.escalation | alert.reminder | alert.digest
    subject: str
    text: str
    html: str
    body: dict[str, object]  # the webhook's JSON
    alerts: tuple[DueAlert, ...]


def _worst(alerts: Iterable[DueAlert]) -> str:
    return max((a.severity for a in alerts), key=lambda s: RANK.get(s, 0))


def _subject_of(alert: DueAlert) -> str:
    return alert.tracking_id or alert.device_id or alert.read_point_id or alert.site_id


def html_page(subject: str, lines: Sequence[str]) -> str:
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in lines)
    return f"<!doctype html><html><body><h1>{escape(subject)}</h1>{paragraphs}</body></html>"


def one(duty: OnDuty, alert: DueAlert, now: datetime) -> Message:
    """The escalation (round 0) or reminder of one alert for one person."""
    lang = duty.language
    values = {
        "severity": texts.severity(lang, alert.severity),
        "label": texts.label(lang, alert.kind),
        "site": alert.site_id,
        "minutes": int((now - alert.opened_at).total_seconds() // 60),
        "round": alert.round,
    }
    template = texts.ESCALATION_SUBJECT if alert.round == 0 else texts.REMINDER_SUBJECT
    subject = texts.say(lang, template, **values)
    line = texts.say(
        lang,
        texts.ALERT_LINE,
        alert_id=alert.alert_id,
        label=values["label"],
        subject=_subject_of(alert),
        opened=alert.opened_at.isoformat(timespec="seconds"),
        assignee=alert.assigned_to or texts.say(lang, texts.NOBODY),
    )
    lines = [line, texts.say(lang, texts.ACK_HINT)]
    kind = "alert.escalation" if alert.round == 0 else "alert.reminder"
    return Message(
        duty=duty,
        idempotency_key=f"escalation:{alert.alert_id}:{alert.round}",
        kind=kind,
        subject=subject,
        text="\n\n".join(lines) + "\n",
        html=html_page(subject, lines),
        body={
            "type": kind,
            "round": alert.round,
            "severity": alert.severity,
            "alert": {
                "alert_id": alert.alert_id,
                "kind": alert.kind,
                "site_id": alert.site_id,
                "read_point_id": alert.read_point_id,
                "device_id": alert.device_id,
                "tracking_id": alert.tracking_id,
                "opened_at": alert.opened_at.isoformat(),
                "assigned_to": alert.assigned_to,
            },
        },
        alerts=(alert,),
    )


def digest(duty: OnDuty, site: str, alerts: Sequence[DueAlert], silent: Sequence[str]) -> Message:
    """One message for many alerts of one site, naming its silent devices."""
    lang = duty.language
    kinds = Counter(a.kind for a in alerts)
    points = Counter(a.read_point_id for a in alerts if a.read_point_id)
    worst = _worst(alerts)
    subject = texts.say(
        lang,
        texts.DIGEST_SUBJECT,
        severity=texts.severity(lang, worst),
        count=len(alerts),
        site=site,
    )
    lines = []
    if silent:
        lines.append(texts.say(lang, texts.DIGEST_CAUSE, devices=", ".join(silent)))
    lines.append(
        texts.say(
            lang,
            texts.DIGEST_KINDS,
            kinds=", ".join(f"{texts.label(lang, k)} {n}" for k, n in kinds.most_common()),
        )
    )
    if points:
        top = ", ".join(f"{p} {n}" for p, n in points.most_common(5))
        lines.append(texts.say(lang, texts.DIGEST_POINTS, points=top))
    lines.append(texts.say(lang, texts.ACK_HINT))
    rounds = sorted((a.alert_id, a.round) for a in alerts)
    fingerprint = hashlib.sha256(repr(rounds).encode()).hexdigest()[:32]
    return Message(
        duty=duty,
        idempotency_key=f"digest:{site}:{fingerprint}",
        kind="alert.digest",
        subject=subject,
        text="\n\n".join(lines) + "\n",
        html=html_page(subject, lines),
        body={
            "type": "alert.digest",
            "site_id": site,
            "severity": worst,
            "count": len(alerts),
            "silent_devices": list(silent),
            "by_kind": dict(kinds),
            "by_read_point": dict(points),
            "alert_ids": [a.alert_id for a in alerts],
        },
        alerts=tuple(alerts),
    )


def plan(
    due: Sequence[DueAlert],
    on_duty: Sequence[OnDuty],
    silent: dict[str, list[str]],
    digest_at: int,
    now: datetime,
) -> list[Message]:
    """The messages for the alerts due now: per person, per site, one each or a digest."""
    messages: list[Message] = []
    for duty in on_duty:
        floor = RANK.get(duty.min_severity, 1)
        theirs = [a for a in due if a.site_id == duty.site_id and RANK.get(a.severity, 3) >= floor]
        if not theirs:
            continue
        if len(theirs) >= digest_at:
            messages.append(digest(duty, duty.site_id, theirs, silent.get(duty.site_id, [])))
        else:
            messages.extend(one(duty, alert, now) for alert in theirs)
    return messages
