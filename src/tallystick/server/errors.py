"""API errors and the one place that renders them as ``{"error", "code", "details"}``."""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tallystick.server.encryption import EncryptionKeyError
from tallystick.server.field_hints import MAX_HINTS, field_location, misspelling_hint
from tallystick.server.observability import RepeatCounter, route_template

log = logging.getLogger(__name__)

# Longest rendering of a rejected input value echoed back in an error message.
_MAX_ECHOED_VALUE = 80


class ApiError(Exception):
    """An error the client can act on, with an HTTP status and a stable snake_case code.

    Args:
        status: HTTP status code.
        code: stable machine-readable code, such as ``not_found``.
        message: one sentence for a person, naming the field and value involved.
        details: optional longer explanation or hint.
        fields: optional per-field problems as ``{"field", "message", "value"}`` mappings.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: str | None = None,
        fields: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.fields = fields
        self.headers = headers

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        if self.fields:
            body["fields"] = self.fields
        return body


def not_found(kind: str, key: str, value: str) -> ApiError:
    """Build the 404 for a `kind` (such as "Customer") looked up by `key` = `value`."""
    return ApiError(404, "not_found", f"{kind} with {key} '{value}' not found")


def field_error_text(field: str, message: str, value: Any = None) -> str:
    """Return "Invalid {field} {value}: {message}", without the value when it is None."""
    if value is None:
        return f"Invalid {field}: {message}"
    return f"Invalid {field} {show_value(value)}: {message}"


def bad_request(field: str, message: str, value: Any = None, code: str = "validation_error") -> ApiError:
    """Build a 400 that names the offending field, such as ``key`` or ``signals[3].eventName``."""
    text = field_error_text(field, message, value)
    return ApiError(400, code, text, fields=[{"field": field, "message": message, "value": _jsonable(value)}])


def conflict_as_bad_request(field: str, value: Any, what: str) -> ApiError:
    """Build the 400 for a duplicate unique value.

    The paid-python client retries 409 twice before giving up, so duplicates answer 400: a
    retry cannot fix them.
    """
    return ApiError(
        400,
        "duplicate",
        f"Invalid {field} {show_value(value)}: {what} already exists",
        fields=[{"field": field, "message": f"{what} already exists", "value": _jsonable(value)}],
    )


def show_value(value: Any) -> str:
    """Render a client's value for an error message, cut to 80 characters.

    Values mostly come from JSON bodies, so numbers, true, false, null, lists and objects read
    as JSON spells them. A string on its own keeps the single quotes of Python's repr, as these
    messages always quoted it, so the string '1.5' reads apart from the number 1.5.
    """
    if isinstance(value, datetime):
        value = timestamp_text(value)
    text = repr(value) if isinstance(value, str) else _json_text(value)
    if len(text) > _MAX_ECHOED_VALUE:
        text = text[: _MAX_ECHOED_VALUE - 3] + "..."
    return text


def timestamp_text(moment: datetime) -> str:
    """Format a date-time as the API writes it, in RFC 3339 with Z for UTC."""
    return moment.isoformat().replace("+00:00", "Z")


def _json_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return _number_text(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    # Each item takes at least one character, so items past the 80th are cut off anyway.
    if isinstance(value, (list, tuple)):
        items = [_json_text(item) for item in itertools.islice(value, _MAX_ECHOED_VALUE)]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, dict):
        pairs = itertools.islice(value.items(), _MAX_ECHOED_VALUE)
        members = [f"{json.dumps(str(key), ensure_ascii=False)}: {_json_text(item)}" for key, item in pairs]
        return "{" + ", ".join(members) + "}"
    return repr(value)


def _number_text(number: int | float | Decimal) -> str:
    # The exact body parser reads JSON numbers with a fraction or an exponent as Decimals.
    # str() of a Decimal keeps the digits and exponent that the client sent, so 10.0 stays 10.0
    # and 1e400 reads 1E+400. The e is lowercased, as json.dumps and JavaScript write it.
    if isinstance(number, int):
        return str(number)
    if isinstance(number, float):
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        # repr is the shortest text that reads back as the same float, as json.dumps writes it.
        return repr(number)
    if number.is_nan():
        return "NaN"
    return str(number).replace("E", "e")


def format_location(location: tuple[Any, ...] | list[Any]) -> str:
    """Render a pydantic error location as a field path, such as ``signals[0].eventName``."""
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts)


def validation_error_to_api_error(
    errors: list[dict[str, Any]], source: str = "body", body: Any = None, body_type: Any = None
) -> ApiError:
    """Turn pydantic's error list into one 400 whose message names the first bad field.

    `body` is the parsed request body and `body_type` the type it was validated as, usually a
    model class. With both, a missing field suggests a key of the same object that the body
    carries and that no field of the object accepts, such as eventNme for eventName.
    """
    fields: list[dict[str, Any]] = []
    # Kept as parsed for the message, since `fields` carries a Decimal as a string, which would
    # show quoted.
    first_value: Any = None
    hints = 0
    for error in errors:
        location = list(error.get("loc", ()))
        if location and location[0] in ("body", "query", "path", "header"):
            source = location[0]
            location = location[1:]
        if source == "body" and isinstance(error.get("input"), (bytes, bytearray)):
            return ApiError(
                400,
                "unsupported_media_type",
                "Request body must be JSON: send it with the header 'Content-Type: application/json'",
            )
        # Discriminated unions add the tag name (such as "RecurringPerUnit") to the path.
        raw_location = list(location)
        location = field_location({**error, "loc": location})
        if error.get("type") == "json_invalid":
            return ApiError(
                400,
                "invalid_json",
                "Request body is not valid JSON",
                details=str(error.get("ctx", {}).get("error", "")) or None,
            )
        field = format_location(location) or source
        value = error.get("input")
        message = problem_reason(error)
        if error.get("type") == "missing":
            value = None
            if source == "body" and hints < MAX_HINTS:
                hints += 1
                message += misspelling_hint(body, body_type, raw_location)
        if not fields:
            first_value = value
        fields.append({"field": field, "message": message, "value": _jsonable(value)})

    first = fields[0]
    message = field_error_text(first["field"], first["message"], first_value)
    message += more_problems_suffix(len(fields))
    # With one problem, `message` contains all of it, and a client that shows both would repeat it.
    details = "; ".join(f"{item['field']}: {item['message']}" for item in fields) if len(fields) > 1 else None
    return ApiError(400, "validation_error", message, details=details, fields=fields)


def more_problems_suffix(count: int) -> str:
    """Return " (and 2 more problems)" for an error message that names the first of `count`."""
    if count < 2:
        return ""
    return f" (and {count - 1} more problem{'s' if count > 2 else ''})"


def problem_reason(problem: Mapping[str, Any]) -> str:
    """Return pydantic's message for one problem, in terms a client of the JSON API can use."""
    # pydantic's text for these names the Python class, which means nothing to a client.
    if problem.get("type") in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object"
    if problem.get("type") == "decimal_type":
        return "must be a number, or a string that holds one"
    text = str(problem.get("msg", "invalid"))
    # pydantic prefixes the text of ValueErrors raised by validators.
    return text.removeprefix("Value error, ")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # The error response's JSON cannot hold NaN or Infinity as numbers.
        return show_value(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return timestamp_text(value)
    if isinstance(value, (dict, list)):
        # Echo small structures only; a whole rejected body is not useful in an error.
        text = repr(value)
        if len(text) > _MAX_ECHOED_VALUE:
            return text[: _MAX_ECHOED_VALUE - 3] + "..."
        # Bodies parsed with exact decimals contain Decimal numbers, which JSON cannot encode.
        # The items are converted as well, so such a number is echoed as its text.
        if isinstance(value, dict):
            return {str(key): _jsonable(item) for key, item in value.items()}
        return [_jsonable(item) for item in value]
    return str(value)


def _body_type(request: Request) -> Any:
    """Return the type that the matched route validates its JSON body as, if it has a body."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    return body_field.field_info.annotation if body_field is not None else None


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


# SQLAlchemy's errors for a database that cannot serve a request now. They cover refused or
# lost connections, timeouts, locks, and a pool without a free connection.
DATABASE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
)
# Seconds a client is asked to wait (Retry-After) when the database is unavailable.
DATABASE_RETRY_AFTER_SECONDS = 1
# Minimum seconds between two database.unavailable errors in the log of one app.
DATABASE_ERROR_LOG_INTERVAL_SECONDS = 10.0


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, including framework ones, in the API's error shape."""
    # Requests that failed on the database, between two database.unavailable errors.
    database_failures = RepeatCounter(DATABASE_ERROR_LOG_INTERVAL_SECONDS)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.to_body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        api_error = validation_error_to_api_error(list(error.errors()), body=error.body, body_type=_body_type(request))
        return JSONResponse(api_error.to_body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(error.status_code, "http_error")
        if error.status_code == 404:
            message = f"No route for {request.method} {request.url.path}"
        else:
            message = str(error.detail)
        return JSONResponse(
            {"error": message, "code": code},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
        # The database refused or dropped the connection, timed out, or is locked. Clients retry
        # a 503, and a 500 they may not. A database without tallystick's tables gets here too,
        # since SQLite reports "no such table" as an OperationalError, so the log names the cause.
        failed = database_failures.count()
        if failed is not None:
            cause = getattr(error, "orig", None) or error
            reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            log.error(
                "database.unavailable",
                extra={
                    "method": request.method,
                    "route": route_template(request.scope),
                    "error_type": type(cause).__name__,
                    "error": reason,
                    "failed_requests": failed,
                },
            )
        return JSONResponse(
            {"error": "The database is unavailable; retry the request", "code": "database_unavailable"},
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    for error_type in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, _database_unavailable)  # type: ignore[arg-type]

    # Requests that needed a stored secret this server cannot decrypt, between two log lines.
    unreadable_secrets = RepeatCounter(DATABASE_ERROR_LOG_INTERVAL_SECONDS)

    @app.exception_handler(EncryptionKeyError)
    async def _secret_unreadable(request: Request, error: EncryptionKeyError) -> JSONResponse:
        # The operator's configuration, not the request, is wrong (such as secrets encrypted
        # while this server runs without TALLYSTICK_ENCRYPTION_KEYS), and retrying cannot help.
        failed = unreadable_secrets.count()
        if failed is not None:
            log.error(
                "secret.unreadable",
                extra={
                    "method": request.method,
                    "route": route_template(request.scope),
                    "error": str(error),
                    "failed_requests": failed,
                },
            )
        return JSONResponse(
            {"error": f"The server cannot read a stored secret: {error}", "code": "server_misconfigured"},
            status_code=503,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        # The route template, not the path, because paths can carry tokens such as a receipt's.
        log.exception(
            "request.failed",
            extra={"method": request.method, "route": route_template(request.scope)},
        )
        return JSONResponse(
            {"error": "Internal server error", "code": "internal_error"}, status_code=500
        )
