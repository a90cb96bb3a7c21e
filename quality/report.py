"""The daily quality report: the manager page's figures for one day, as an HTML
e-mail (with a plain-text part), queued through the delivery engine.

Each recipient in `report_recipients` gets yesterday's report (UTC day; their site,
or every site) once `report_at` has passed today. `daily_reports` records what was
queued, in the same transaction, and the idempotency key is the day, so a restarted
scheduler sends nothing twice and one that was down catches up with the last day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from parceltrack.i18n import gettext_for
from quality import texts
from storage import figures
from storage.outbound import Email, Outbound, enqueue_async

log = logging.getLogger(__name__)

PENDING = """
SELECT r.address, r.name, r.site_id, r.language FROM report_recipients r
WHERE NOT EXISTS (SELECT 1 FROM daily_reports d WHERE d.day = %(day)s AND d.address = r.address)
ORDER BY r.address
"""


@dataclass(frozen=True, slots=True)
class Report:
    subject: str
    text: str
    html: str


def _value(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (column.endswith("_rate") or column == "uptime"):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="minutes")
    return str(value)


def _glance(summary: dict[str, float | int | None], lang: str) -> list[tuple[str, str]]:
    translate = gettext_for(texts.DOMAIN, lang).gettext
    shown = []
    for key, value in summary.items():
        if value is None:
            text = "-"
        elif key == "overdue_complaints":
            text = str(value)
        else:
            text = f"{value:.1%}"
        shown.append((translate(figures.SUMMARY[key]), text))
    return shown


def render(day: date, site: str | None, found: list[figures.Figure], lang: str) -> Report:
    """The report of `day`: the figures at a glance, then every figure as a table."""
    translate = gettext_for(texts.DOMAIN, lang).gettext
    where = site or "*"
    subject = texts.say(lang, texts.REPORT_SUBJECT, site=where, day=day.isoformat())
    heading = texts.say(lang, texts.REPORT_HEADING, day=day.isoformat())
    glance = _glance(figures.summary(found), lang)
    parts = [
        f"<h1>{escape(heading)} · {escape(where)}</h1>",
        f"<p>{escape(texts.say(lang, texts.REPORT_INTRO))}</p>",
        "<table><tbody>"
        + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in glance)
        + "</tbody></table>",
    ]
    lines = [f"{heading} · {where}", ""] + [f"{k}: {v}" for k, v in glance]
    for figure in found:
        title = translate(figures.TITLES[figure.name])
        head = "".join(f"<th>{escape(c)}</th>" for c in figure.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td>{escape(_value(c, v))}</td>" for c, v in zip(figure.columns, row, strict=True)
            )
            + "</tr>"
            for row in figure.rows
        )
        parts.append(
            f'<h2>{escape(title)}</h2><table border="1" cellpadding="3">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
        lines += ["", title, ",".join(figure.columns)]
        lines += [
            ",".join(_value(c, v) for c, v in zip(figure.columns, row, strict=True))
            for row in figure.rows
        ]
    html = (
        f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head><body>{''.join(parts)}</body></html>"
    )
    return Report(subject, "\n".join(lines) + "\n", html)


def due_day(now: datetime, report_at: time) -> date | None:
    """The day whose report is due at `now` (yesterday, UTC), or None before `report_at`."""
    now = now.astimezone(UTC)
    if now.time() < report_at:
        return None
    return now.date() - timedelta(days=1)


async def send_due(
    conn: AsyncConnection[Any], now: datetime, report_at: time, lost_after_s: float = 3600.0
) -> int:
    """Queue the reports due at `now` to every recipient who has not had that day's."""
    day = due_day(now, report_at)
    if day is None:
        return 0
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(PENDING, {"day": day})
        recipients = await cur.fetchall()
    if not recipients:
        return 0
    since = datetime.combine(day, time(), tzinfo=UTC)
    cache: dict[str | None, list[figures.Figure]] = {}
    queued = 0
    async with conn.transaction():
        for r in recipients:
            site = r["site_id"]
            if site not in cache:
                period = figures.Period(since, since + timedelta(days=1), site, lost_after_s)
                cache[site] = await figures.all_figures(conn, period)
            report = render(day, site, cache[site], r["language"])
            message = Outbound(
                target=r["address"],
                subscriber=f"report:{r['address']}",
                idempotency_key=f"daily-report:{day.isoformat()}",
                kind="quality.daily_report",
                content=Email(subject=report.subject, text=report.text, html=report.html),
            )
            if await enqueue_async(conn, message) is not None:
                queued += 1
            await conn.execute(
                "INSERT INTO daily_reports (day, address, sent_at) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (day, r["address"], now),
            )
    log.info("daily report of %s queued for %d recipients", day, queued)
    return queued
