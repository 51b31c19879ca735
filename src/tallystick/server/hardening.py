"""Limits on what a client can send: body size and JSON shape. The request rate is in rate_limit.py."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallystick.server.errors import ApiError

log = logging.getLogger(__name__)

# Deepest nesting of objects and arrays accepted in a JSON body. Signal data of real
# applications is a few levels deep; this bounds the work of validating hostile bodies.
MAX_JSON_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number; send a finite number")


def _parse_finite_float(text: str) -> float:
    # A number such as 1e400 parses to infinity, which neither PostgreSQL's jsonb nor the JSON
    # of a response can hold.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of the range of a 64-bit float; send a number of magnitude below 1.8e308")
    return value


# Characters no stored text may contain: NUL (PostgreSQL rejects it in text and jsonb) and lone
# UTF-16 surrogates (they cannot be encoded as UTF-8). JSON escapes can produce both.
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
_UNPAIRED_SURROGATES = re.compile("[\ud800-\udfff]")


def parse_strict_json(
    body: bytes, *, check_text: bool = True, parse_float: Callable[[str], Any] = _parse_finite_float
) -> Any:
    """Parse a request body, rejecting NaN and Infinity, documents nested too deeply and strings
    that no database could store.

    With `check_text` false, NUL characters are left to the route, which reports them per item;
    unpaired surrogates are rejected all the same, since no route could store or report them.
    `parse_float` reads each number that has a fraction or an exponent, such as Decimal for
    exact amounts.
    """
    try:
        value = json.loads(body, parse_constant=_reject_constant, parse_float=parse_float)
    except ValueError as error:
        raise ApiError(400, "invalid_json", f"Request body is not valid JSON: {error}") from None
    _check_shape(value, _UNSTORABLE_CHARACTERS if check_text else _UNPAIRED_SURROGATES)
    return value


def _check_shape(value: Any, unstorable: re.Pattern[str]) -> None:
    """Walk `value` iteratively (hostile input cannot exhaust the stack) and raise on a problem."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, str):
            if unstorable.search(current):
                raise _unstorable_text_error(value, unstorable)
            continue
        if isinstance(current, dict):
            if any(unstorable.search(key) for key in current):
                raise _unstorable_text_error(value, unstorable)
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if level > MAX_JSON_DEPTH:
            raise ApiError(
                400,
                "json_too_deep",
                f"Request body nests objects or arrays more than {MAX_JSON_DEPTH} levels deep",
            )
        stack.extend((child, level + 1) for child in children)


def _unstorable_text_error(value: Any, unstorable: re.Pattern[str]) -> ApiError:
    """Build the 400 for the first unstorable string in `value`, naming where it is."""
    stack: list[tuple[Any, str]] = [(value, "")]
    field, text = "body", ""
    while stack:
        current, path = stack.pop()
        if isinstance(current, str):
            if unstorable.search(current):
                field, text = path or "body", current
                break
        elif isinstance(current, dict):
            bad_key = next((key for key in current if unstorable.search(key)), None)
            if bad_key is not None:
                field, text = f"{path} key" if path else "body key", bad_key
                break
            stack.extend((child, f"{path}.{key}" if path else key) for key, child in current.items())
        elif isinstance(current, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(current))
    match = unstorable.search(text)
    found = "a NUL character (\\u0000)" if match and match.group() == "\x00" else "an unpaired UTF-16 surrogate"
    return ApiError(
        400,
        "validation_error",
        f"Invalid {field}: contains {found}, which cannot be stored; remove it",
        fields=[{"field": field, "message": f"contains {found}", "value": None}],
    )


# Routes whose handlers reject unstorable text item by item, and report it per item.
PER_ITEM_TEXT_CHECK_SUFFIXES = ("/signals/bulk",)


# Bodies larger than this many bytes are parsed in a worker thread. Parsing and checking the
# benchmark's 1,000-signal batch (190 KB) takes about 7 ms. In the event loop, that would stall
# every other request of the process, while in a thread the interpreter switches between them.
THREADED_PARSE_BYTES = 64 * 1024


class StrictJsonRoute(APIRoute):
    """A route that parses JSON bodies with `parse_strict_json` before FastAPI reads them.

    Starlette caches the parsed body on the request, so FastAPI's own `request.json()` call
    returns the value checked here, and the check's errors keep their own messages.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # Bulk signal ingestion checks text per signal, so that one signal with a NUL character
        # fails alone instead of failing the whole batch.
        check_text = not self.path.endswith(PER_ITEM_TEXT_CHECK_SUFFIXES)

        async def strict_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if "json" in content_type:
                body = await request.body()
                if len(body) > THREADED_PARSE_BYTES:
                    parsed = await run_in_threadpool(parse_strict_json, body, check_text=check_text)
                    request._json = parsed  # noqa: SLF001 - Starlette's cache slot
                elif body:
                    request._json = parse_strict_json(body, check_text=check_text)  # noqa: SLF001 - Starlette's cache slot
            return await handler(request)

        return strict_handler


def has_unstorable_characters(text: str) -> bool:
    """Return whether `text` contains NUL or an unpaired surrogate, which no database stores."""
    return _UNSTORABLE_CHARACTERS.search(text) is not None


_FORM_CONTENT_TYPE = b"application/x-www-form-urlencoded"
_UNSTORABLE_REASON = "contains a NUL character or an unpaired UTF-16 surrogate, which cannot be stored"
# C0 controls and DEL.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class UnstorableTextMiddleware:
    """Reject with 400 a path, query string or form with characters no database can store,
    and a path with a control character.

    Such characters are NUL (%00) and unpaired UTF-16 surrogates. Without this check,
    PostgreSQL fails lookups and writes with such text with an error (a 500). It covers every
    route, the server-rendered pages and their url-encoded forms included; JSON bodies are
    checked by `parse_strict_json`. It must run inside `BodySizeLimitMiddleware`, which bounds
    the form bodies this middleware reads into memory.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("utf-8", "surrogateescape")
        # The error's wording and the field to name in `fields`. The field is "path", or the
        # name of the query parameter or form field.
        problem: tuple[str, str] | None = None
        reason = _UNSTORABLE_REASON
        if has_unstorable_characters(scope["path"]):
            problem = ("Invalid path", "path")
        elif _CONTROL_CHARACTERS.search(scope["path"]):
            # Routes match with Python's `$`, which also matches before a final line break,
            # so /checkouts/%0A would reach the list route.
            problem = ("Invalid path", "path")
            reason = "contains a control character, such as a line break, which no route or id has"
        else:
            problem = _unstorable_field(query, "query parameter")

        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if problem is None and content_type.startswith(_FORM_CONTENT_TYPE):
            messages = await _read_body(receive)
            body = b"".join(message.get("body", b"") for message in messages)
            problem = _unstorable_field(body.decode("utf-8", "surrogateescape"), "form field")
            receive = _replay(messages, receive)

        if problem is None:
            await self.app(scope, receive, send)
            return
        wording, field = problem
        payload = json.dumps(
            {
                "error": f"{wording}: {reason}; remove it",
                "code": "validation_error",
                # The value is left out (null), as for a JSON body's unstorable text.
                "fields": [{"field": _printable(field), "message": reason, "value": None}],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _unstorable_field(encoded: str, kind: str) -> tuple[str, str] | None:
    """Return the error wording and name of the first unstorable name or value, or None."""
    for name, value in parse_qsl(encoded, keep_blank_values=True, errors="surrogateescape"):
        if has_unstorable_characters(name) or has_unstorable_characters(value):
            return f"Invalid {kind} {name!r}", name
    return None


def _printable(name: str) -> str:
    """Replace the unstorable characters of `name` with U+FFFD, since JSON parsers may reject them."""
    return _UNSTORABLE_CHARACTERS.sub("\ufffd", name)


async def _read_body(receive: Receive) -> list[Message]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a receive callable that yields `messages` again, then defers to `receive`."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class BodySizeLimitMiddleware:
    """Answer 413 to bodies larger than `max_bytes`, without reading more than that.

    Paths under `exempt_prefixes` enforce their own limits (the OTLP intake takes larger bodies).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": f"Request body is larger than the limit of {self.max_bytes} bytes",
                "code": "payload_too_large",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass
