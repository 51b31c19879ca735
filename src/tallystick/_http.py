"""HTTP plumbing shared by Client and AsyncClient: configuration, JSON, retries and errors.

Retry rules. A request is retried, at most `max_retries` times with capped exponential backoff
and jitter, when:
- the connection could not be opened (nothing reached the server), whatever the method;
- the server answered 429 (rejected before doing anything), whatever the method;
- the request is idempotent and the server answered 408 or 5xx, or the connection failed after
  the request was sent. GET, PUT and DELETE are idempotent; so is a POST whose every effect is
  keyed by an idempotency key it carries (POST /signals/bulk, where the client fills in a key
  per signal), because the server counts a repeated key once.
A retry replays the identical request, so a signal keeps its idempotency key across attempts.
A Call may carry its own RetryPolicy, which then replaces the client's for that request.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tallystick._version import __version__
from tallystick.errors import ApiConnectionError, ApiError

log = logging.getLogger("tallystick")

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v2"
TRACES_PATH = "/v1/traces"
USER_AGENT = f"tallystick-python/{__version__}"

# Seconds to wait for a response before giving up on one attempt.
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2
# Backoff before retry n (counting from 0) is min(MAX, INITIAL * 2**n), then +-25 % jitter.
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# Seconds of Retry-After beyond which a response is returned instead of retried, because a
# retry sent sooner than the server requested would be rejected again.
MAX_RETRY_AFTER = 30.0

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def resolve_api_url(api_url: str | None) -> str:
    """Return the server root (no trailing slash) from the argument or TALLYSTICK_API_URL."""
    root = api_url or os.environ.get("TALLYSTICK_API_URL") or DEFAULT_API_URL
    root = root.rstrip("/")
    # Accept a REST base URL too, since paid-python users are used to passing one.
    return root.removesuffix(API_PREFIX)


def resolve_api_key(api_key: str | None) -> str | None:
    return api_key or os.environ.get("TALLYSTICK_API_KEY") or None


def check_client_options(api_url: str | None, timeout: float | None) -> str:
    """Return the server root for a client, raising ValueError for an unusable URL or timeout.

    The error names the URL as given, in `api_url` or in TALLYSTICK_API_URL.
    """
    given_url = api_url or os.environ.get("TALLYSTICK_API_URL") or DEFAULT_API_URL
    source = "" if api_url else " (from TALLYSTICK_API_URL)"
    root = resolve_api_url(api_url)
    try:
        parsed = httpx.URL(root)
    except httpx.InvalidURL as error:
        raise ValueError(f"invalid server URL {given_url!r}{source}: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"invalid server URL {given_url!r}{source}: expected http:// or https:// and a host, "
            f"such as {DEFAULT_API_URL}"
        )
    # None disables the timeout, as in httpx.
    if timeout is not None and not timeout > 0:
        raise ValueError(f"invalid timeout {timeout!r}: expected a number of seconds greater than 0")
    return root


def decimal_argument(name: str, value: Decimal | int | float | str) -> Decimal:
    """Convert a numeric argument to Decimal, raising ValueError that names `name` if invalid.

    A float is converted through its shortest repr, so 0.1 becomes Decimal("0.1") and not the
    binary value 0.1000000000000000055511151231257827021181583404541015625.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"invalid {name} {value!r}: expected a number") from None
    if not number.is_finite():
        raise ValueError(f"invalid {name} {value!r}: expected a finite number")
    return number


def new_idempotency_key() -> str:
    return f"ts_{uuid.uuid4().hex}"


def encode_json(value: Any) -> bytes:
    """Serialize `value` to JSON, writing Decimals as exact number literals (never via float)."""
    exact: dict[str, str] = {}

    def default(item: Any) -> Any:
        if isinstance(item, Decimal):
            if not item.is_finite():
                raise ValueError(f"cannot send the non-finite number {item} as JSON")
            placeholder = f"__tallystick_decimal_{len(exact)}_{uuid.uuid4().hex}__"
            exact[placeholder] = format(item, "f")
            return placeholder
        if isinstance(item, datetime):
            return format_timestamp(item)
        raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")

    text = json.dumps(value, default=default, separators=(",", ":"), allow_nan=False)
    for placeholder, literal in exact.items():
        text = text.replace(f'"{placeholder}"', literal)
    return text.encode()


def format_timestamp(moment: datetime) -> str:
    """Return RFC 3339 text; naive datetimes are rejected since their offset is unknown."""
    if moment.tzinfo is None:
        raise ValueError(f"datetime {moment.isoformat()} has no timezone; pass an aware datetime")
    return moment.isoformat().replace("+00:00", "Z")


def decode_json(content: bytes) -> Any:
    """Decode a response body; numbers with a fraction become Decimal so credits stay exact."""
    return json.loads(content, parse_float=Decimal)


@dataclass
class Call:
    """One API request before it is sent: a path relative to /api/v2 and its JSON body."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    # True when replaying the request cannot apply its effect twice (see the module docstring).
    idempotent: bool | None = None
    timeout: float | None = None
    # Replaces the client's retry policy for this request when set.
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if self.idempotent is None:
            self.idempotent = self.method in IDEMPOTENT_METHODS
        if self.params is not None:
            self.params = {
                key: _query_value(value) for key, value in self.params.items() if value is not None
            }


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and after how long a wait, a sender replays a request that may succeed later."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    # When set, a response whose Retry-After requests a longer wait (in seconds) is returned
    # instead of retried. When None, the limit is MAX_RETRY_AFTER.
    max_retry_after: float | None = None
    # When False, a timed-out attempt is not retried, because it already used the whole timeout
    # and a retry could take as long again.
    retry_timeouts: bool = True

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Return the seconds to wait before retry number `retry` (0 for the first retry)."""
        if retry_after is not None:
            return retry_after
        base = min(self.max_delay, self.initial_delay * (2**retry))
        return base * random.uniform(0.75, 1.25)


def build_headers(api_key: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, "Accept": "application/json"}
    headers.update(extra or {})
    return headers


def request_kwargs(call: Call) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"params": call.params}
    if call.body is not None or call.method in ("POST", "PUT", "PATCH"):
        kwargs["content"] = encode_json(call.body if call.body is not None else {})
        kwargs["headers"] = {"Content-Type": "application/json"}
    if call.timeout is not None:
        kwargs["timeout"] = call.timeout
    return kwargs


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Parse Retry-After as seconds or an HTTP date; None when absent or invalid."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if seconds < 0:
        return 0.0
    return seconds


def should_retry_response(call: Call, response: httpx.Response) -> bool:
    if response.status_code == 429:
        return True
    return bool(call.idempotent) and response.status_code in RETRYABLE_STATUSES


def should_retry_error(call: Call, error: httpx.TransportError) -> bool:
    # These fail before any byte of the request reaches the server.
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return bool(call.idempotent)


def error_retry_delay(call: Call, policy: RetryPolicy, attempt: int, error: httpx.TransportError) -> float | None:
    """Return the seconds to wait before replaying `call` after `error`, or None to give up."""
    if attempt >= policy.max_retries or not should_retry_error(call, error):
        return None
    if isinstance(error, httpx.TimeoutException) and not policy.retry_timeouts:
        return None
    return policy.delay(attempt)


def response_retry_delay(call: Call, policy: RetryPolicy, attempt: int, response: httpx.Response) -> float | None:
    """Return the seconds to wait before replaying `call` after `response`, or None to return it."""
    if attempt >= policy.max_retries or not should_retry_response(call, response):
        return None
    retry_after = retry_after_seconds(response)
    limit = MAX_RETRY_AFTER if policy.max_retry_after is None else policy.max_retry_after
    if retry_after is not None and retry_after > limit:
        return None
    return policy.delay(attempt, retry_after)


def decode_response(response: httpx.Response) -> Any:
    """Return the decoded body of a 2xx response, or raise ApiError."""
    try:
        body = decode_json(response.content) if response.content else {}
    except ValueError:
        body = response.text
    if response.is_success:
        return body

    headers = dict(response.headers)
    if isinstance(body, dict) and "error" in body:
        message = str(body["error"])
        if body.get("details"):
            message = f"{message} ({body['details']})"
        raise ApiError(response.status_code, body.get("code"), message, body, headers=headers)
    raise ApiError(response.status_code, None, str(body) or response.reason_phrase, body, headers=headers)


def connection_failure(
    call: Call, url: str, error: httpx.TransportError, timeout: httpx.Timeout
) -> ApiConnectionError:
    """Build the error for a request that got no response; `timeout` is the client's."""
    # Some httpx errors carry no message (an asyncio read timeout, for one), so the class
    # name is always part of the reason.
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        seconds = call.timeout if call.timeout is not None else _phase_timeout(timeout, error)
        limit = f" after {seconds:g} s" if seconds is not None else ""
        return ApiConnectionError(f"request timed out{limit} ({detail})", method=call.method, url=url)
    return ApiConnectionError(f"request failed ({detail})", method=call.method, url=url)


def _phase_timeout(timeout: httpx.Timeout, error: httpx.TimeoutException) -> float | None:
    # httpx times connect, write, read and the wait for a pooled connection separately.
    if isinstance(error, httpx.ConnectTimeout):
        return timeout.connect
    if isinstance(error, httpx.WriteTimeout):
        return timeout.write
    if isinstance(error, httpx.PoolTimeout):
        return timeout.pool
    return timeout.read


class SyncSender:
    """Sends Calls with an httpx.Client, applying the retry rules."""

    def __init__(self, http: httpx.Client, retry: RetryPolicy) -> None:
        self.http = http
        self.retry = retry

    def send(self, call: Call) -> Any:
        policy = call.retry or self.retry
        attempt = 0
        while True:
            try:
                response = self.http.request(call.method, _relative(call.path), **request_kwargs(call))
            except httpx.TransportError as error:
                delay = error_retry_delay(call, policy, attempt, error)
                if delay is None:
                    raise connection_failure(call, call.path, error, self.http.timeout) from error
                _log_retry(call, attempt, delay, error=error)
            else:
                delay = response_retry_delay(call, policy, attempt, response)
                if delay is None:
                    return decode_response(response)
                _log_retry(call, attempt, delay, status=response.status_code)
            time.sleep(delay)
            attempt += 1


class AsyncSender:
    """Sends Calls with an httpx.AsyncClient, applying the retry rules."""

    def __init__(self, http: httpx.AsyncClient, retry: RetryPolicy) -> None:
        self.http = http
        self.retry = retry

    async def send(self, call: Call) -> Any:
        import asyncio

        policy = call.retry or self.retry
        attempt = 0
        while True:
            try:
                response = await self.http.request(call.method, _relative(call.path), **request_kwargs(call))
            except httpx.TransportError as error:
                delay = error_retry_delay(call, policy, attempt, error)
                if delay is None:
                    raise connection_failure(call, call.path, error, self.http.timeout) from error
                _log_retry(call, attempt, delay, error=error)
            else:
                delay = response_retry_delay(call, policy, attempt, response)
                if delay is None:
                    return decode_response(response)
                _log_retry(call, attempt, delay, status=response.status_code)
            await asyncio.sleep(delay)
            attempt += 1


def _relative(path: str) -> str:
    # httpx joins a relative path onto base_url (which ends in /api/v2/).
    return path.lstrip("/")


def _log_retry(
    call: Call, attempt: int, delay: float, *, status: int | None = None, error: Exception | None = None
) -> None:
    log.info(
        "request.retrying",
        extra={
            "method": call.method,
            "path": call.path,
            "attempt": attempt + 1,
            "delay_seconds": round(delay, 3),
            "status": status,
            "error": repr(error) if error else None,
        },
    )
