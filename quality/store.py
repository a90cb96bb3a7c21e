"""The escalation scheduler's reads and writes, and one tick of it.

A tick runs in one transaction under a transaction-level advisory lock: two
schedulers never plan at once (the second skips its tick). The messages are queued
with the delivery engine's `enqueue_async` and each alert's round is recorded in
`alert_escalations` in that same transaction, so after a crash either both exist or
neither does; the idempotency keys are the second wall.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from quality import texts
from quality.escalation import DueAlert, Message, OnDuty, html_page, plan
from storage.outbound import Email, Outbound, Webhook, enqueue_async

log = logging.getLogger(__name__)

# Any fixed number; one escalation tick at a time across processes.
_LOCK_KEY = 0x7175_616C_6974

# The rule and severity in force per site and kind: the site's own row, else the default.
_IN_FORCE = """
rules AS (
    SELECT DISTINCT ON (st.site_id, r.kind) st.site_id, r.kind, r.after_s, r.repeat_s
    FROM sites st JOIN escalation_rules r ON r.site_id = st.site_id OR r.site_id IS NULL
    ORDER BY st.site_id, r.kind, r.site_id NULLS LAST
), severities AS (
    SELECT DISTINCT ON (st.site_id, s.kind) st.site_id, s.kind, s.severity
    FROM sites st JOIN alert_severities s ON s.site_id = st.site_id OR s.site_id IS NULL
    ORDER BY st.site_id, s.kind, s.site_id NULLS LAST
)"""

DUE = f"""
WITH {_IN_FORCE}, done AS (
    SELECT alert_id, max(round) AS last_round, max(sent_at) AS last_sent
    FROM alert_escalations GROUP BY 1
)
SELECT a.alert_id, a.kind, a.site_id, coalesce(sv.severity, 'major') AS severity,
       coalesce(d.last_round + 1, 0) AS round, a.opened_at, a.read_point_id, a.device_id,
       a.tracking_id, a.assigned_to
FROM alerts a
JOIN rules r ON r.site_id = a.site_id AND r.kind = a.kind
LEFT JOIN severities sv ON sv.site_id = a.site_id AND sv.kind = a.kind
LEFT JOIN done d USING (alert_id)
WHERE a.state = 'open'
  AND CASE WHEN d.last_sent IS NULL THEN a.opened_at + make_interval(secs => r.after_s)
           ELSE d.last_sent + make_interval(secs => r.repeat_s) END <= %(now)s
ORDER BY a.alert_id
"""

SILENT = """
SELECT site_id, array_agg(device_id ORDER BY opened_at) AS devices FROM alerts
WHERE kind = 'silence' AND state <> 'resolved' AND device_id IS NOT NULL
  AND site_id = ANY(%(sites)s)
GROUP BY 1
"""

ON_DUTY = """
SELECT duty_id, site_id, name, channel, address, min_severity, language, secret
FROM on_duty WHERE site_id = ANY(%(sites)s) ORDER BY duty_id
"""

OVERDUE = """
SELECT f.feedback_id, f.tracking_id, f.site_id, f.deadline FROM feedback f
WHERE f.kind = 'complaint' AND f.first_answer_at IS NULL AND f.deadline <= %(now)s
  AND f.site_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM complaint_escalations c WHERE c.feedback_id = f.feedback_id)
ORDER BY f.feedback_id
"""


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did: alert rounds recorded, messages queued, complaints escalated."""

    rounds: int = 0
    queued: int = 0
    complaints: int = 0
    skipped: bool = False  # another scheduler held the lock


async def _rows(conn: AsyncConnection[Any], sql: str, params: dict[str, Any]) -> list[Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


def outbound(message: Message) -> Outbound:
    """The delivery engine's message for one planned message."""
    duty = message.duty
    content: Email | Webhook
    if duty.channel == "webhook":
        content = Webhook(body=message.body, secret=duty.secret or "")
    else:
        content = Email(subject=message.subject, text=message.text, html=message.html)
    return Outbound(
        target=duty.address,
        subscriber=f"on-duty:{duty.duty_id}",
        idempotency_key=message.idempotency_key,
        kind=message.kind,
        content=content,
    )


async def _queue(conn: AsyncConnection[Any], messages: list[Message]) -> int:
    queued = 0
    for message in messages:
        if await enqueue_async(conn, outbound(message)) is not None:
            queued += 1
    return queued


async def escalate(conn: AsyncConnection[Any], now: datetime, digest_at: int) -> TickResult:
    """Queue the escalations and reminders due at `now`; record each alert's round."""
    due = [DueAlert(**r) for r in await _rows(conn, DUE, {"now": now})]
    if not due:
        return TickResult()
    sites = sorted({a.site_id for a in due})
    duty = [OnDuty(**r) for r in await _rows(conn, ON_DUTY, {"sites": sites})]
    silent = {r["site_id"]: r["devices"] for r in await _rows(conn, SILENT, {"sites": sites})}
    messages = plan(due, duty, silent, digest_at, now)
    queued = await _queue(conn, messages)
    digests = {
        a.alert_id: m.idempotency_key for m in messages if len(m.alerts) > 1 for a in m.alerts
    }
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO alert_escalations (alert_id, round, sent_at, digest) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(a.alert_id, a.round, now, digests.get(a.alert_id)) for a in due],
        )
    unheard = sorted(set(sites) - {d.site_id for d in duty})
    if unheard:
        log.warning("alerts due for escalation at %s, but nobody is on duty there", unheard)
    log.info("escalation: %d alert rounds, %d messages queued", len(due), queued)
    return TickResult(rounds=len(due), queued=queued)


async def overdue_complaints(conn: AsyncConnection[Any], now: datetime) -> TickResult:
    """Escalate, once each, the complaints unanswered past their deadline."""
    overdue = await _rows(conn, OVERDUE, {"now": now})
    if not overdue:
        return TickResult()
    sites = sorted({r["site_id"] for r in overdue})
    duty = [OnDuty(**r) for r in await _rows(conn, ON_DUTY, {"sites": sites})]
    messages = []
    for complaint in overdue:
        for person in duty:
            if person.site_id == complaint["site_id"]:
                messages.append(_complaint_message(person, complaint))
    queued = await _queue(conn, messages)
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO complaint_escalations (feedback_id, sent_at) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            [(r["feedback_id"], now) for r in overdue],
        )
    return TickResult(queued=queued, complaints=len(overdue))


def _complaint_message(duty: OnDuty, complaint: dict[str, Any]) -> Message:
    lang = duty.language
    subject = texts.say(
        lang, texts.COMPLAINT_SUBJECT, feedback_id=complaint["feedback_id"], site=duty.site_id
    )
    line = texts.say(
        lang,
        texts.COMPLAINT_LINE,
        tracking_id=complaint["tracking_id"],
        deadline=complaint["deadline"].isoformat(timespec="minutes"),
    )
    return Message(
        duty=duty,
        idempotency_key=f"complaint-overdue:{complaint['feedback_id']}",
        kind="complaint.overdue",
        subject=subject,
        text=line + "\n",
        html=html_page(subject, [line]),
        body={
            "type": "complaint.overdue",
            "feedback_id": complaint["feedback_id"],
            "tracking_id": complaint["tracking_id"],
            "site_id": complaint["site_id"],
            "deadline": complaint["deadline"].isoformat(),
        },
        alerts=(),
    )


async def tick(conn: AsyncConnection[Any], now: datetime, digest_at: int) -> TickResult:
    """One scheduler pass at `now`, in one transaction; skipped while another runs."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = await cur.fetchone()
        if not row or not row[0]:
            return TickResult(skipped=True)
        alerts = await escalate(conn, now, digest_at)
        complaints = await overdue_complaints(conn, now)
    return TickResult(
        rounds=alerts.rounds,
        queued=alerts.queued + complaints.queued,
        complaints=complaints.complaints,
    )
