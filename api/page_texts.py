"""The pages' texts in the reader's language: HTML translated on the server, JS texts
sent with the page.

The pages stay plain files in api/static/. Their texts are marked in place, in English
(the message id is the English text itself):

- an element with `data-i18n` holds one message: its text, with runs of white space
  made single spaces (it may hold text only, no element);
- `data-i18n-attrs="placeholder aria-label"` names attributes whose values are messages;
- an element with `data-languages` gets the language switcher: one link per language,
  its name in its own language;
- `<script id="page-config" type="application/json">` gets what the scripts need:
  the language, the domain's catalog (the scripts' `_()` texts) and each site's
  time zone. A JSON data block is not script, so the CSP (script-src 'self') allows it.

`extract_html` is the Babel extractor for the same marks; tests/unit/test_i18n.py
uses it (and Babel's JavaScript extractor for the scripts) so that every text of
the pages is in both catalogs of the `pages` domain.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import cache
from html.parser import HTMLParser
from typing import IO, Any

from babel.messages.pofile import read_po

from parceltrack.i18n import LANGUAGE_NAMES, LANGUAGES, LOCALE_DIR, gettext_for, locale_name

DOMAIN = "pages"
CONFIG_ID = "page-config"
_SPACE = re.compile(r"\s+")


class PageTextError(ValueError):
    """A page whose marks cannot be used (an element inside a `data-i18n` one)."""


def message_of(raw: str) -> str:
    """The message id of an element's raw text: entities decoded, white space folded."""
    return _SPACE.sub(" ", html.unescape(raw)).strip()


class _Marks(HTMLParser):
    """Walks a page, noting each marked text and attribute with its line (`found`)
    and writing the page back, translated, into `out`."""

    def __init__(self, translate: Callable[[str], str], language: str = "en") -> None:
        super().__init__(convert_charrefs=False)
        self.translate = translate
        self.language = language
        self.out: list[str] = []
        self.found: list[tuple[int, str]] = []  # (line, message) for extraction
        self.config = ""  # JSON for the page-config block
        self.switcher = ""  # HTML of the language links
        self._open: str | None = None  # the data-i18n element being read
        self._text: list[str] = []
        self._line = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._open is not None:
            raise PageTextError(
                f"line {self.getpos()[0]}: <{tag}> inside the data-i18n element <{self._open}>"
            )
        named = dict(attrs)
        marked = (named.get("data-i18n-attrs") or "").split()
        if tag == "html" or marked:
            rewritten = []
            for name, value in attrs:
                if name in marked and value:
                    self.found.append((self.getpos()[0], message_of(value)))
                    value = self.translate(message_of(value))
                elif tag == "html" and name == "lang":
                    value = self.language
                rewritten.append(name if value is None else f'{name}="{html.escape(value)}"')
            self.out.append(f"<{' '.join([tag, *rewritten])}>")
        else:
            self.out.append(self.get_starttag_text() or "")
        if "data-i18n" in named:
            self._open, self._text, self._line = tag, [], self.getpos()[0]
        if "data-languages" in named:
            self.out.append(self.switcher)
        if tag == "script" and named.get("id") == CONFIG_ID:
            self.out.append(self.config)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open:
            message = message_of("".join(self._text))
            self.found.append((self._line, message))
            self.out.append(html.escape(self.translate(message), quote=False))
            self._open = None
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        (self._text if self._open is not None else self.out).append(data)

    def handle_entityref(self, name: str) -> None:
        self.handle_data(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.handle_data(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        self.out.append(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.out.append(f"<!{decl}>")


def switcher(language: str) -> str:
    """Links to the page in each language, each named in its own language."""
    links = []
    for tag in LANGUAGES:
        name = gettext_for("common", tag).gettext(LANGUAGE_NAMES[tag])
        current = ' aria-current="true"' if tag == language else ""
        links.append(
            f'<a href="?lang={tag}" lang="{tag}" hreflang="{tag}" data-lang="{tag}"{current}>'
            f"{html.escape(name)}</a>"
        )
    return " · ".join(links)


@cache
def catalog(language: str) -> dict[str, str]:
    """Every message of the `pages` domain in `language` (English: the ids themselves)."""
    path = LOCALE_DIR / locale_name(language) / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return {}
    with path.open("rb") as po:
        parsed = read_po(po, locale=locale_name(language), domain=DOMAIN)
    return {
        m.id: m.string
        for m in parsed
        if isinstance(m.id, str) and m.id and isinstance(m.string, str) and m.string
    }


def config_json(language: str, zones: Mapping[str, str]) -> str:
    """The page-config block's content; `<` escaped so no text can close the element."""
    body = {"lang": language, "messages": catalog(language), "zones": dict(zones)}
    return json.dumps(body, ensure_ascii=False, sort_keys=True).replace("<", "\\u003c")


def render(page: str, language: str, zones: Mapping[str, str]) -> str:
    """The page's HTML in `language`, with its config and the language switcher."""
    marks = _Marks(gettext_for(DOMAIN, language).gettext, language)
    marks.config = config_json(language, zones)
    marks.switcher = switcher(language)
    marks.feed(page)
    marks.close()
    return "".join(marks.out)


def extract_html(
    fileobj: IO[bytes],
    keywords: Collection[str],
    comment_tags: Collection[str],
    options: Mapping[str, Any],
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extraction method for the marks above (`api.page_texts:extract_html`)."""
    marks = _Marks(lambda message: message)
    marks.feed(fileobj.read().decode(str(options.get("encoding", "utf-8"))))
    marks.close()
    for line, message in marks.found:
        if message:
            yield line, "_", message, []
