"""Languages people read parceltrack in: choosing one, and its message catalogs.

zh-CN and en are both first-class. Texts are gettext messages in Babel `.po`
catalogs under `parceltrack/locale/<locale>/LC_MESSAGES/<domain>.po`, one domain
per audience (`pages`, `api`, `notify`, ...), so the people who write the texts
of one audience never edit another's catalog. The catalogs are read with Babel
when first needed (no compile step, so a fresh clone needs no build), and a test
fails on any message that a catalog lacks or leaves untranslated.

The language of a request is chosen by `?lang=`, then `Accept-Language`, then a
configured default (`choose`). Times are shown in a site's own zone, with the
zone named (`format_time`).
"""

from __future__ import annotations

import gettext
import io
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.core import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

# Language tags as people and HTTP write them (BCP 47), first the fallback.
ENGLISH = "en"
CHINESE = "zh-CN"
LANGUAGES: tuple[str, ...] = (ENGLISH, CHINESE)
DEFAULT_LANGUAGE = ENGLISH

LOCALE_DIR = Path(__file__).with_name("locale")


def locale_name(language: str) -> str:
    """The catalog folder (POSIX locale name) of a language tag: zh-CN -> zh_CN."""
    return language.replace("-", "_")


def supported(language: str | None) -> str | None:
    """The supported tag that `language` names (case and separator ignored), or None.

    A bare `zh` (or zh-Hans, zh-SG...) means Simplified Chinese here: it is the
    only Chinese the product ships.
    """
    if not language:
        return None
    wanted = language.strip().replace("_", "-").lower()
    for tag in LANGUAGES:
        if wanted == tag.lower():
            return tag
    primary = wanted.split("-", 1)[0]
    if primary == "zh" and wanted not in ("zh-tw", "zh-hk", "zh-hant", "zh-mo"):
        return CHINESE
    if primary == "en":
        return ENGLISH
    return None


def accepted(header: str | None) -> list[str]:
    """The language ranges of an Accept-Language header, best first (RFC 9110 q-values)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        name, _, params = part.strip().partition(";")
        name = name.strip()
        if not name or name == "*":
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, name))
    return [name for _, _, name in sorted(ranked)]


def choose(query: str | None, accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The language to answer in: `?lang=`, then Accept-Language, then `default`."""
    explicit = supported(query)
    if explicit:
        return explicit
    for name in accepted(accept_language):
        found = supported(name)
        if found:
            return found
    negotiated = negotiate_locale(
        [locale_name(n) for n in accepted(accept_language)],
        [locale_name(tag) for tag in LANGUAGES],
    )
    if negotiated:
        return negotiated.replace("_", "-")
    return supported(default) or DEFAULT_LANGUAGE


@cache
def translations(domain: str, language: str) -> gettext.NullTranslations:
    """The catalog of `domain` in `language`; English source text where none exists."""
    path = LOCALE_DIR / locale_name(language) / "LC_MESSAGES" / f"{domain}.po"
    if not path.exists():
        return gettext.NullTranslations()
    with path.open("rb") as po:
        catalog = read_po(po, locale=locale_name(language), domain=domain)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def gettext_for(domain: str, language: str) -> gettext.NullTranslations:
    """Alias kept short at call sites: `_ = gettext_for("pages", lang).gettext`."""
    return translations(domain, supported(language) or DEFAULT_LANGUAGE)


def format_time(moment: datetime, zone: str, language: str) -> str:
    """`moment` in the site's zone, with the zone named in the reader's language."""
    return format_datetime(
        moment,
        "yyyy-MM-dd HH:mm:ss zzzz",
        tzinfo=ZoneInfo(zone),
        locale=Locale.parse(locale_name(supported(language) or DEFAULT_LANGUAGE)),
    )


def N_(message: str) -> str:  # gettext's marker name, found by extraction
    """Marks a message for extraction where it is defined; translate it where it is shown."""
    return message


# The names of the languages, for language switchers (domain `common`).
LANGUAGE_NAMES: dict[str, str] = {ENGLISH: N_("English"), CHINESE: N_("Simplified Chinese")}
