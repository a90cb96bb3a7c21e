"""Languages: choosing one per request, times in a site's zone, and complete catalogs.

The completeness check extracts every message that the source marks (gettext
keywords, see KEYWORDS) from each domain's sources and fails when a catalog of any
supported language lacks it, leaves it empty or fuzzy, or keeps a stale entry.
A new audience adds its domain and its source files to DOMAIN_SOURCES.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from parceltrack import i18n

ROOT = Path(__file__).resolve().parents[2]

# domain -> (glob, extraction method) of the files whose texts it holds.
DOMAIN_SOURCES: dict[str, list[tuple[str, str]]] = {
    "common": [("parceltrack/i18n.py", "python")],
    # The API's messages to its callers (errors, validation included; alert labels).
    "api": [
        ("api/language.py", "python"),
        ("api/customers.py", "python"),
        ("api/security.py", "python"),
        ("api/alerts.py", "python"),
        ("api/handling.py", "python"),
        ("api/feedback.py", "python"),
        ("api/staff.py", "python"),
        ("api/kpis.py", "python"),
        ("api/manager.py", "python"),
        ("api/operations.py", "python"),
        ("api/subscriptions.py", "python"),
        ("api/admin.py", "python"),
        ("api/site_settings.py", "python"),
        ("api/epcis_http.py", "python"),
        ("api/epcis_api.py", "python"),
        ("api/epcis_query.py", "python"),
        ("api/epcis_subscriptions.py", "python"),
        ("parceltrack/identifiers.py", "python"),
    ],
    # The built-in pages: texts marked in their HTML (api/page_texts.py) and scripts.
    "pages": [
        ("api/static/*.html", "api.page_texts:extract_html"),
        ("api/static/*.js", "javascript"),
    ],
    "quality": [
        ("api/quality_texts.py", "python"),
        ("quality/*.py", "python"),
        ("storage/figures.py", "python"),
    ],
    "notify": [("notify/texts.py", "python"), ("api/unsubscribe_texts.py", "python")],
}
KEYWORDS = {"_": None, "gettext": None, "N_": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2)}


def extracted(domain: str) -> set[str]:
    found: set[str] = set()
    for pattern, method in DOMAIN_SOURCES[domain]:
        paths = sorted(ROOT.glob(pattern))
        assert paths, f"{pattern} matches no file"
        for path in paths:
            for _line, message, _comments, _context in extract_from_file(
                method, str(path), keywords=KEYWORDS
            ):
                found.update([message] if isinstance(message, str) else message[:1])
    return found


def catalog(domain: str, language: str) -> dict[str, object]:
    path = i18n.LOCALE_DIR / i18n.locale_name(language) / "LC_MESSAGES" / f"{domain}.po"
    assert path.exists(), f"{path.relative_to(ROOT)} is missing"
    with path.open("rb") as po:
        parsed = read_po(po)
    return {m.id if isinstance(m.id, str) else m.id[0]: m for m in parsed if m.id}


@pytest.mark.parametrize("language", i18n.LANGUAGES)
@pytest.mark.parametrize("domain", sorted(DOMAIN_SOURCES))
def test_every_marked_message_is_translated(domain: str, language: str) -> None:
    """Each message the source marks has a non-empty, non-fuzzy translation, and no stale ones."""
    messages = extracted(domain)
    entries = catalog(domain, language)
    missing = sorted(messages - entries.keys())
    untranslated = sorted(
        key
        for key, message in entries.items()
        if key in messages
        and (getattr(message, "fuzzy", False) or not _filled(getattr(message, "string", "")))
    )
    stale = sorted(entries.keys() - messages)
    assert (missing, untranslated, stale) == ([], [], []), (
        f"{domain}/{language}: missing {missing}, untranslated {untranslated}, stale {stale}"
    )


def _filled(translation: object) -> bool:
    if isinstance(translation, str):
        return bool(translation.strip())
    return all(isinstance(form, str) and form.strip() for form in translation)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        ("zh-CN", "en", "zh-CN"),
        ("zh_cn", None, "zh-CN"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "fr-FR, zh;q=0.5, en;q=0.3", "zh-CN"),
        (None, "en;q=0.2, zh-Hans;q=0.8", "zh-CN"),
        ("klingon", "de", "en"),
        (None, None, "en"),
    ],
    ids=[
        "query-wins",
        "query-any-case",
        "header",
        "header-en",
        "first-supported",
        "q-order",
        "default",
        "nothing",
    ],
)
def test_language_is_chosen_by_query_then_header_then_default(
    query: str | None, header: str | None, expected: str
) -> None:
    """?lang= beats Accept-Language, which is read by quality; else the default."""
    assert i18n.choose(query, header) == expected


def test_configured_default_applies_when_nothing_matches() -> None:
    """A site configured for Chinese answers in Chinese to a browser asking for French."""
    assert i18n.choose(None, "fr", default="zh-CN") == "zh-CN"


def test_times_are_shown_in_the_site_zone_with_its_name() -> None:
    """09:00 UTC is 17:00 in Shanghai, named in the reader's language."""
    moment = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert i18n.format_time(moment, "Asia/Shanghai", "en") == (
        "2026-11-28 17:00:00 China Standard Time"
    )
    assert i18n.format_time(moment, "Asia/Shanghai", "zh-CN") == "2026-11-28 17:00:00 中国标准时间"


def test_catalogs_translate() -> None:
    """The Chinese catalog is what a Chinese reader gets; English falls back to the source."""
    names = i18n.LANGUAGE_NAMES
    assert i18n.gettext_for("common", "zh-CN").gettext(names["zh-CN"]) == "简体中文"
    assert i18n.gettext_for("common", "en").gettext(names["zh-CN"]) == "Simplified Chinese"
    assert i18n.gettext_for("no-such-domain", "zh-CN").gettext("Delayed") == "Delayed"
