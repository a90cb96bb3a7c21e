"""What a customer is told: the notification of one parcel event, in their language.

Pure: a Notice (what happened, where, when, why, what is expected now) becomes an
e-mail (subject, plain text, HTML with an unsubscribe link) or a webhook body.
Texts are gettext messages of the `notify` domain; times are in the site's zone.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from parceltrack.i18n import N_, format_time, gettext_for
from parceltrack.webhooks import ParcelEvent
from storage.outbound import Email

DOMAIN = "notify"


# Subject line, then the sentence that opens the message; {tracking_id}, {site}, {time}.
_HEADLINES: dict[ParcelEvent, tuple[str, str]] = {
    ParcelEvent.ACCEPTED: (
        N_("Parcel {tracking_id} accepted"),
        N_("Your parcel {tracking_id} was accepted at {site} on {time}."),
    ),
    ParcelEvent.ARRIVED: (
        N_("Parcel {tracking_id} arrived at a sorting centre"),
        N_("Your parcel {tracking_id} arrived at {site} on {time}."),
    ),
    ParcelEvent.SORTED: (
        N_("Parcel {tracking_id} sorted"),
        N_("Your parcel {tracking_id} was sorted at {site} on {time}."),
    ),
    ParcelEvent.DISPATCHED: (
        N_("Parcel {tracking_id} dispatched"),
        N_("Your parcel {tracking_id} left {site} on {time}."),
    ),
    ParcelEvent.DELAYED: (
        N_("Parcel {tracking_id} delayed"),
        N_("Your parcel {tracking_id} is delayed at {site} (since {time})."),
    ),
    ParcelEvent.EXCEPTION: (
        N_("Parcel {tracking_id}: a problem is being corrected"),
        N_("A problem with your parcel {tracking_id} at {site} is being corrected ({time})."),
    ),
    ParcelEvent.MISSING: (
        N_("Parcel {tracking_id}: investigation opened"),
        N_(
            "Your parcel {tracking_id} has not been seen since {site}; "
            "we have opened an investigation ({time})."
        ),
    ),
    ParcelEvent.RESOLVED: (
        N_("Parcel {tracking_id} back on its way"),
        N_("The problem with your parcel {tracking_id} is resolved ({site}, {time})."),
    ),
}

# Why, by the alert kind that caused a delayed / exception / missing notice.
REASONS: dict[str, str] = {
    "delay": N_("It is taking longer than planned at one stage of sorting."),
    "late": N_("It can no longer arrive within its delivery standard."),
    "missort": N_("It was sorted to the wrong chute and is being re-sorted."),
    "misroute": N_("It reached the wrong sorting centre and is being redirected."),
    "missing": N_("It has not been scanned anywhere for longer than expected."),
}
_EXPECTED = N_("New expected time: {time}.")
_NO_EXPECTED = N_("We will tell you the new expected time as soon as we know it.")
_TRACK = N_("Track your parcel: {url}")
_UNSUBSCRIBE = N_("Stop these messages: {url}")
_WHY = N_("You receive this because you subscribed to updates for this parcel.")


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell the subscribers of a parcel."""

    tracking_id: str
    event: ParcelEvent
    at: datetime  # when the scan or alert happened
    site_id: str
    site_name: str
    timezone: str
    cause: str  # what caused it, unique per parcel: "scan:<site>:<stage>", "alert:<id>"
    reason: str | None = None  # the alert kind, for delayed / exception / missing
    expected: datetime | None = None

    @property
    def kind(self) -> str:
        return f"parcel.{self.event.value}"

    def idempotency_key(self) -> str:
        return f"{self.tracking_id}:{self.event.value}:{self.cause}"


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    lines: list[str]  # the sentences of the message, in order
    reason: str | None
    expected: str | None


def render(notice: Notice, language: str) -> Rendered:
    """The sentences of a notice in `language`, times in the site's zone."""
    _ = gettext_for(DOMAIN, language).gettext
    when = format_time(notice.at, notice.timezone, language)
    subject, opening = _HEADLINES[notice.event]
    fields = {"tracking_id": notice.tracking_id, "site": notice.site_name, "time": when}
    lines = [_(opening).format(**fields)]
    reason = _(REASONS[notice.reason]) if notice.reason in REASONS else None
    if reason:
        lines.append(reason)
    expected = None
    if notice.expected is not None:
        expected = format_time(notice.expected, notice.timezone, language)
        lines.append(_(_EXPECTED).format(time=expected))
    elif notice.event in (ParcelEvent.DELAYED, ParcelEvent.EXCEPTION):
        lines.append(_(_NO_EXPECTED))
    return Rendered(_(subject).format(**fields), lines, reason, expected)


def email(notice: Notice, language: str, track_url: str, unsubscribe_url: str) -> Email:
    """The e-mail of a notice: plain text and HTML, each with the unsubscribe link."""
    _ = gettext_for(DOMAIN, language).gettext
    shown = render(notice, language)
    track, stop, why = _(_TRACK), _(_UNSUBSCRIBE), _(_WHY)
    text = "\n\n".join(
        [*shown.lines, track.format(url=track_url), why, stop.format(url=unsubscribe_url)]
    )
    lang = "zh-CN" if language == "zh-CN" else "en"
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in shown.lines)
    link = '<a href="{0}">{0}</a>'
    body = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(shown.subject)}</title></head><body>{paragraphs}"
        f"<p>{track.format(url=link.format(html.escape(track_url, quote=True)))}</p>"
        f'<p style="color:#666">{html.escape(why)} '
        f"{stop.format(url=link.format(html.escape(unsubscribe_url, quote=True)))}</p>"
        "</body></html>"
    )
    return Email(shown.subject, text, body, unsubscribe_url)


def webhook_body(notice: Notice, language: str, subscription_id: int) -> dict[str, Any]:
    """The JSON a subscriber's webhook receives: machine fields plus the texts."""
    shown = render(notice, language)
    return {
        "event": notice.event.value,
        "kind": notice.kind,
        "tracking_id": notice.tracking_id,
        "occurred_at": notice.at.isoformat(),
        "site": {"id": notice.site_id, "name": notice.site_name, "timezone": notice.timezone},
        "reason": None if notice.reason is None else {"code": notice.reason, "text": shown.reason},
        "expected_at": None if notice.expected is None else notice.expected.isoformat(),
        "language": language,
        "subscription_id": subscription_id,
        "idempotency_key": notice.idempotency_key(),
        "message": " ".join(shown.lines),
        "subject": shown.subject,
    }
