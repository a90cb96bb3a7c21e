"""The pages' texts: marks in the HTML translated on the server, the page-config block,
the language switcher, and the extractor that keeps the catalogs complete."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from api.page_texts import PageTextError, catalog, extract_html, render
from api.tracking import STATUSES, UPU_EVENTS

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"

PAGE = """<!doctype html>
<html lang="en">
<head><title data-i18n>Track a parcel · parceltrack</title>
<script id="page-config" type="application/json"></script></head>
<body>
<nav aria-label="Language" data-i18n-attrs="aria-label" data-languages></nav>
<h1 data-i18n>Track
   a parcel</h1>
<p><span data-i18n>Parcel</span> <span id="parcel-id">&lt;x&gt;</span></p>
</body>
</html>
"""


def _config(html: str) -> dict[str, object]:
    match = re.search(r'<script id="page-config" type="application/json">(.*?)</script>', html)
    assert match, "no page-config block"
    parsed: dict[str, object] = json.loads(match.group(1))
    return parsed


def test_marked_texts_and_attributes_are_translated_and_the_rest_kept() -> None:
    """Marked text (white space folded) and marked attributes come out in Chinese; the
    html element says the language; unmarked markup and entities are untouched."""
    out = render(PAGE, "zh-CN", {})
    assert '<html lang="zh-CN">' in out
    assert "<title data-i18n>查询邮件 · parceltrack</title>" in out
    assert "<h1 data-i18n>查询邮件</h1>" in out
    assert '<nav aria-label="语言" data-i18n-attrs="aria-label" data-languages>' in out
    assert '<span data-i18n>邮件</span> <span id="parcel-id">&lt;x&gt;</span>' in out
    assert out.startswith("<!doctype html>")


def test_english_rendering_is_the_page_itself_plus_config_and_switcher() -> None:
    """In English only the folded white space, the config block and the switcher differ."""
    out = render(PAGE, "en", {})
    out = re.sub(r'(<script id="page-config" type="application/json">).*?(</script>)', r"\1\2", out)
    out = re.sub(r"(data-languages>).*?(</nav>)", r"\1\2", out)
    assert out == PAGE.replace("Track\n   a parcel", "Track a parcel")


def test_the_switcher_links_every_language_named_in_its_own() -> None:
    """One link per language, named in that language, the current one marked."""
    out = render(PAGE, "en", {})
    assert '<a href="?lang=en" lang="en" hreflang="en" data-lang="en" aria-current="true">' in out
    assert 'data-lang="zh-CN">简体中文</a>' in out


def test_page_config_carries_language_catalog_and_zones_and_cannot_close_its_element() -> None:
    """The config has the scripts' catalog and each site's zone, with `<` escaped so a
    site name or message can never end the script element."""
    out = render(PAGE, "zh-CN", {"PVG1": "Asia/Shanghai", "X</script><b>": "UTC"})
    config = _config(out)
    assert config["lang"] == "zh-CN"
    assert config["zones"] == {"PVG1": "Asia/Shanghai", "X</script><b>": "UTC"}
    messages = config["messages"]
    assert isinstance(messages, dict) and messages["Delayed"] == "延误"
    assert out.count("</script>") == PAGE.count("</script>")


def test_an_element_inside_a_marked_one_is_refused() -> None:
    """A marked element holding markup cannot be one message: rendering says where."""
    with pytest.raises(PageTextError, match=r"line 1: <b> inside the data-i18n element <p>"):
        render("<p data-i18n>Hello <b>world</b></p>", "en", {})


def test_the_extractor_finds_marked_texts_and_attributes_with_their_lines() -> None:
    """Babel's extraction method yields each marked message once per mark, by line."""
    found = list(extract_html(io.BytesIO(PAGE.encode()), ["_"], [], {}))
    assert [(line, message) for line, _f, message, _c in found] == [
        (3, "Track a parcel · parceltrack"),
        (6, "Language"),
        (7, "Track a parcel"),
        (9, "Parcel"),
    ]


@pytest.mark.parametrize("page", sorted(p.name for p in STATIC.glob("*.html")))
def test_every_page_renders_in_both_languages(page: str) -> None:
    """Each built-in page renders in Chinese with no marked text left in English."""
    source = (STATIC / page).read_text()
    english = {m for _l, _f, m, _c in extract_html(io.BytesIO(source.encode()), [], [], {})}
    out = render(source, "zh-CN", {})
    zh = catalog("zh-CN")
    assert all(zh[m] in out for m in english)


def test_status_names_and_upu_events_exist_in_both_languages() -> None:
    """Every UPU event the API reports has a Chinese description on the pages, and the
    tracking page names every status the API can answer."""
    zh = catalog("zh-CN")
    assert all(zh.get(description) for description in UPU_EVENTS.values())
    script = (STATIC / "track.js").read_text()
    assert all(re.search(rf"^\s+{status}: _\(", script, re.M) for status in STATUSES)
