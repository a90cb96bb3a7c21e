"""The language of an API answer, and customer-facing errors said in it.

A request's language is `?lang=`, then `Accept-Language`, then the configured default
(`ApiSettings.language`). Data stays language-neutral (status and event codes, UTC
times): only the sentences people read follow the language, which here means the
`detail` of errors. Texts live in the gettext domain `api`.

Errors are raised as `Problem(status, N_("... {name} ..."), name=value)`: the
message id and its values travel apart, so the handler can say the sentence in the
caller's language. FastAPI's own validation errors keep their structure (`loc`,
`type`, `ctx`); their `msg` is said in the caller's language by the error's `type`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from parceltrack.errors import ConfigError
from parceltrack.i18n import (
    DEFAULT_LANGUAGE,
    ENGLISH,
    LANGUAGES,
    N_,
    choose,
    gettext_for,
    supported,
)

DOMAIN = "api"


def configured(value: str) -> str:
    """The default language an operator configured, checked at start-up."""
    found = supported(value)
    if found is None:
        raise ConfigError(
            f"PARCELTRACK_LANGUAGE / --language {value!r} is not one of {', '.join(LANGUAGES)}"
        )
    return found


def language(request: Request) -> str:
    """The language this request is answered in."""
    settings = getattr(request.app.state, "settings", None)
    default = getattr(settings, "language", DEFAULT_LANGUAGE)
    return choose(request.query_params.get("lang"), request.headers.get("accept-language"), default)


async def declared_language(
    lang: Annotated[
        str | None,
        Query(
            max_length=35,
            description="language of the error messages: en or zh-CN (else Accept-Language, "
            "else the configured default); data is the same in every language",
        ),
    ] = None,
) -> None:
    """Dependency that only documents `?lang=` on an operation; `language` reads it."""


def say(message: str, lang: str, params: Mapping[str, Any]) -> str:
    """`message` (a message id with `{name}` fields) in `lang`, with its values."""
    return gettext_for(DOMAIN, lang).gettext(message).format(**params)


class Problem(HTTPException):
    """An HTTP error whose detail is a message id and its values, said in the caller's
    language. `detail` holds the English sentence, for logs and plain handlers."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(status_code, message.format(**params), dict(headers or {}) or None)
        self.message = message
        self.params = params


# FastAPI (pydantic) validation errors by type: what a person reads in other languages.
# English keeps pydantic's own wording; `{name}` fields come from the error's ctx.
VALIDATION_MESSAGES: Mapping[str, str] = {
    "missing": N_("Field required"),
    "string_type": N_("Input should be a valid string"),
    "string_too_short": N_("String should have at least {min_length} characters"),
    "string_too_long": N_("String should have at most {max_length} characters"),
    "string_pattern_mismatch": N_("String should match pattern '{pattern}'"),
    "literal_error": N_("Input should be {expected}"),
    "enum": N_("Input should be {expected}"),
    "int_type": N_("Input should be a valid integer"),
    "int_parsing": N_("Input should be a valid integer, unable to parse string as an integer"),
    "float_type": N_("Input should be a valid number"),
    "float_parsing": N_("Input should be a valid number, unable to parse string as a number"),
    "bool_parsing": N_("Input should be a valid boolean, unable to interpret input"),
    "greater_than": N_("Input should be greater than {gt}"),
    "greater_than_equal": N_("Input should be greater than or equal to {ge}"),
    "less_than": N_("Input should be less than {lt}"),
    "less_than_equal": N_("Input should be less than or equal to {le}"),
    "too_short": N_("List should have at least {min_length} items"),
    "too_long": N_("List should have at most {max_length} items"),
    "datetime_parsing": N_("Input should be a valid datetime"),
    "datetime_from_date_parsing": N_("Input should be a valid datetime or date"),
    "json_invalid": N_("The body is not valid JSON"),
    "model_attributes_type": N_("Input should be an object"),
    "dict_type": N_("Input should be an object"),
    "list_type": N_("Input should be a valid list"),
    "extra_forbidden": N_("Extra inputs are not permitted"),
    "url_parsing": N_("Input should be a valid URL"),
    "url_scheme": N_("URL scheme should be {expected_schemes}"),
    "value_error": N_("Value error, {error}"),
}


def validation_errors(errors: Sequence[Any], lang: str) -> list[Any]:
    """FastAPI's list of field errors with each `msg` in `lang` (same structure)."""
    if lang == ENGLISH:
        return list(errors)
    said = []
    for error in errors:
        message = VALIDATION_MESSAGES.get(str(error.get("type")))
        if message is not None:
            ctx = dict(error.get("ctx") or {})
            if "error" in ctx:  # a model's own ValueError: its text may be a message id
                ctx["error"] = gettext_for(DOMAIN, lang).gettext(str(ctx["error"]))
            # A ctx this version does not know: pydantic's own words stand.
            with suppress(KeyError, IndexError, ValueError):
                error = {**error, "msg": say(message, lang, ctx)}
        said.append(error)
    return said


def install(app: FastAPI) -> None:
    """Answer Problems and validation errors in the caller's language."""

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        detail = say(exc.message, language(request), exc.params)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors(), language(request))
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
