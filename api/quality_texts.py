"""The texts of the manager page and the floor view (gettext domain `quality`).

The page's HTML names each text by key (`{{key}}`); the scripts get the same texts
as JSON. Both are translated on the server from
parceltrack/locale/<locale>/LC_MESSAGES/quality.po, so a fresh clone needs no
build and a new language is a new catalog.
"""

from __future__ import annotations

import html
import json

from parceltrack.i18n import N_, gettext_for
from storage import figures

DOMAIN = "quality"

TEXTS: dict[str, str] = {
    "page_title": N_("Service quality"),
    "nav_track": N_("Track a parcel"),
    "nav_control_room": N_("Control room"),
    "nav_manager": N_("Service quality"),
    "skip": N_("Skip to content"),
    "sign_in": N_("Sign in"),
    "key_label": N_("Manager API key"),
    "key_button": N_("Open the quality page"),
    "key_hint": N_("A key with role manager or admin. It is kept in this browser tab only."),
    "forget_key": N_("Forget key"),
    "period": N_("Period"),
    "site": N_("Site"),
    "all_sites": N_("All sites"),
    "last_day": N_("Last 24 hours"),
    "last_week": N_("Last 7 days"),
    "last_month": N_("Last 30 days"),
    "show": N_("Show"),
    "loading": N_("Loading…"),
    "as_of": N_("Figures as of {time}"),
    "key_refused": N_("The API key was not accepted"),
    "key_forbidden": N_("This key may not open the quality page"),
    "unreachable": N_("The figures could not be loaded"),
    "at_a_glance": N_("At a glance"),
    "on_time_rate": figures.SUMMARY["on_time_rate"],
    "mis_sort_rate": figures.SUMMARY["mis_sort_rate"],
    "no_read_rate": figures.SUMMARY["no_read_rate"],
    "loss_rate": figures.SUMMARY["loss_rate"],
    "overdue_complaints": figures.SUMMARY["overdue_complaints"],
    "lowest_uptime": figures.SUMMARY["lowest_uptime"],
    "no_data": N_("no data"),
    "chart_on_time": figures.TITLES["on_time"],
    "chart_rates": figures.TITLES["rates"],
    "chart_dwell": figures.TITLES["dwell"],
    "chart_complaints": figures.TITLES["complaints"],
    "chart_uptime": figures.TITLES["uptime"],
    "view_table": N_("Table"),
    "view_chart": N_("Chart"),
    "download_csv": N_("Download CSV"),
    "dwell_p50": N_("Median dwell (p50)"),
    "dwell_p95": N_("Dwell p95"),
    "hour": N_("Hour"),
    "seconds": N_("seconds"),
    "hours": N_("hours"),
    "deadline": N_("Deadline"),
    "answered_in_time": N_("answered in time"),
    "answered_late": N_("answered late"),
    "overdue": N_("overdue"),
    "waiting": N_("waiting"),
    "uptime": N_("Uptime"),
    "staff_title": N_("Counter staff ratings"),
    "staff_hint": N_(
        "From customers' feedback naming them: everyone starts at 100 points (one star); "
        "praise adds 10, a complaint takes 20; 200 points make two stars, under 100 none; "
        "the bonus follows the score; under 60 points calls for a review."
    ),
    "staff_member": N_("Staff member"),
    "counter": N_("Counter"),
    "score": N_("Score"),
    "stars": N_("Stars"),
    "bonus": N_("Bonus"),
    "praise_complaints": N_("Praise / complaints"),
    "review": N_("Review"),
    "needs_review": N_("needs review"),
    "history": N_("History"),
    "history_of": N_("History of {name}"),
    "when": N_("When"),
    "feedback": N_("Feedback"),
    "change": N_("Change"),
    "praise": N_("praise"),
    "complaint": N_("complaint"),
    "no_staff": N_("No staff registered for this site."),
    "floor_title": N_("Floor"),
    "floor_hint": N_(
        "Read points in flow order, coloured by open alerts and by how long parcels "
        "have waited there; the line is scans per minute over the last hour."
    ),
    "floor_alerts": N_("open alerts"),
    "floor_parcels": N_("parcels here"),
    "floor_dwell": N_("longest wait"),
    "floor_per_min": N_("scans/min"),
    "floor_no_points": N_("No read points at this site."),
    "stage_induction": N_("Induction"),
    "stage_tunnel": N_("Tunnel"),
    "stage_sort": N_("Sorter"),
    "stage_chute": N_("Chutes"),
    "stage_dispatch": N_("Doors"),
}


def texts(language: str) -> dict[str, str]:
    """Every text of the page in `language` (English where the catalog lacks one)."""
    translate = gettext_for(DOMAIN, language).gettext
    return {key: translate(message) for key, message in TEXTS.items()}


def render(template: str, language: str) -> str:
    """The page with each `{{key}}` replaced by its text, escaped for HTML, the
    `{{lang}}` of <html> set, and every text as JSON for the scripts."""
    chosen = texts(language)
    page = template.replace("{{lang}}", html.escape(language))
    # Inside <script type="application/json">: not run, and "<" escaped so no text
    # can close the element.
    page = page.replace("{{texts_json}}", json.dumps(chosen).replace("<", "\\u003c"))
    for key, text in chosen.items():
        page = page.replace("{{" + key + "}}", html.escape(text))
    return page
