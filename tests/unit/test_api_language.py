"""Saying the API's errors in a language: Problems and FastAPI's validation errors."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po

from api.language import VALIDATION_MESSAGES, Problem, say, validation_errors
from parceltrack.i18n import LOCALE_DIR, gettext_for

FIELD = re.compile(r"\{(\w*)[^}]*\}")

TOO_LONG = {
    "type": "string_too_long",
    "loc": ["body", "message"],
    "msg": "String should have at most 4000 characters",
    "input": "x",
    "ctx": {"max_length": 4000},
}


def test_a_problem_keeps_its_message_id_and_values_apart() -> None:
    """The detail is the English sentence; the id and values let a handler say it again."""
    problem = Problem(403, "role {held} may not do this; needs {role}", held="customer", role="x")
    assert problem.detail == "role customer may not do this; needs x"
    assert (problem.message, problem.params) == (
        "role {held} may not do this; needs {role}",
        {"held": "customer", "role": "x"},
    )
    assert say(problem.message, "zh-CN", problem.params) == "角色 customer 无权执行此操作；需要 x"


def test_validation_errors_change_only_their_msg() -> None:
    """In Chinese only `msg` changes; every other field is as FastAPI made it."""
    (said,) = validation_errors([TOO_LONG], "zh-CN")
    assert said == {**TOO_LONG, "msg": "字符串最多只能有 4000 个字符"}
    assert validation_errors([TOO_LONG], "en") == [TOO_LONG]


def test_unknown_types_and_unexpected_ctx_keep_pydantics_words() -> None:
    """A type without a message, or a ctx lacking a field the message needs, stays as is."""
    unknown = {**TOO_LONG, "type": "uuid_parsing", "msg": "Input should be a valid UUID"}
    no_ctx = {k: v for k, v in TOO_LONG.items() if k != "ctx"}
    assert validation_errors([unknown, no_ctx], "zh-CN") == [unknown, no_ctx]


def test_every_validation_message_has_a_chinese_text() -> None:
    """Each validation message the API may say has its own Chinese text."""
    zh = gettext_for("api", "zh-CN").gettext
    assert all(zh(message) != message for message in VALIDATION_MESSAGES.values())


@pytest.mark.parametrize("domain", ["api", "pages"])
def test_translations_keep_the_fields_of_their_message(domain: str) -> None:
    """A translation names exactly its message's {fields}: one that dropped or renamed
    a field would fail when the values are filled in (a 500 instead of an answer)."""
    path = LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / f"{domain}.po"
    with path.open("rb") as po:
        catalog = read_po(po)
    wrong = [
        (m.id, m.string)
        for m in catalog
        if m.id and sorted(FIELD.findall(str(m.id))) != sorted(FIELD.findall(str(m.string)))
    ]
    assert wrong == []
