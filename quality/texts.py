"""What escalations, reminders, digests, overdue-complaint notices and the daily
report say, in the recipient's language (gettext domain `quality`)."""

from __future__ import annotations

from parceltrack.i18n import N_, gettext_for

DOMAIN = "quality"

KIND_LABELS: dict[str, str] = {
    "delay": N_("Delayed at a stage"),
    "missing": N_("Missing"),
    "late": N_("Will miss its delivery standard"),
    "missort": N_("Mis-sorted"),
    "misroute": N_("Mis-routed"),
    "silence": N_("Device silent"),
    "noread": N_("No-read spike"),
}
SEVERITIES: dict[str, str] = {
    "minor": N_("minor"),
    "major": N_("major"),
    "critical": N_("critical"),
}

ESCALATION_SUBJECT = N_("[{severity}] {label} at {site}, unacknowledged for {minutes} min")
REMINDER_SUBJECT = N_("Reminder {round}: [{severity}] {label} at {site} is still unacknowledged")
ALERT_LINE = N_("Alert {alert_id}: {label} ({subject}) opened {opened}; assigned to {assignee}.")
NOBODY = N_("nobody")
ACK_HINT = N_("Acknowledge it in the control room to stop the reminders.")
DIGEST_SUBJECT = N_("[{severity}] {count} alerts open at {site}")
DIGEST_CAUSE = N_("Silent devices: {devices}.")
DIGEST_KINDS = N_("By kind: {kinds}.")
DIGEST_POINTS = N_("Most at: {points}.")
COMPLAINT_SUBJECT = N_("Complaint {feedback_id} at {site} is overdue")
COMPLAINT_LINE = N_(
    "The complaint about parcel {tracking_id} was due for an answer by {deadline} and has none."
)
REPORT_SUBJECT = N_("Service quality {site}, {day}")
REPORT_HEADING = N_("Service quality, {day}")
REPORT_INTRO = N_("The figures of the manager page for the day; every table is below.")


def say(language: str, message: str, **values: object) -> str:
    """`message` translated into `language`, then filled in."""
    return gettext_for(DOMAIN, language).gettext(message).format(**values)


def label(language: str, kind: str) -> str:
    """The kind's label in `language`; a kind newer than this list by its own name."""
    message = KIND_LABELS.get(kind)
    return gettext_for(DOMAIN, language).gettext(message) if message else kind


def severity(language: str, name: str) -> str:
    message = SEVERITIES.get(name)
    return gettext_for(DOMAIN, language).gettext(message) if message else name
