"""Request rate per API key, and the `limits` storage that keeps its counts.

The storage is named by TALLYSTICK_RATE_LIMIT_STORAGE_URL. With the default, memory://, each
server process counts on its own, so N processes allow up to N times the limit. A Redis URI
such as redis://127.0.0.1:6379/0 makes every process that uses it share one count. The
dashboard's sign-in throttle keeps its counts in the same storage.

When the storage fails at request time (unreachable, timed out), the request is let through
unchecked, and a warning is logged at most once a minute per process. Rejecting every request
while Redis is down would stop the API from metering usage too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import (
    MemoryStorage,
    MovingWindowSupport,
    RedisClusterStorage,
    RedisSentinelStorage,
    RedisStorage,
    Storage,
    storage_from_string,
)
from limits.strategies import MovingWindowRateLimiter

from tallystick.server.errors import ApiError
from tallystick.server.observability import RepeatCounter
from tallystick.server.settings import RATE_LIMIT_OFF_VALUES

log = logging.getLogger(__name__)

STORAGE_SETTING = "TALLYSTICK_RATE_LIMIT_STORAGE_URL"

# Seconds that connecting to Redis, or one Redis command, may take before the check gives up
# and lets the request through. redis-py waits forever by default, so a Redis host that drops
# packets would hang every request. A URI's socket_timeout and socket_connect_timeout query
# parameters override it.
REDIS_TIMEOUT_SECONDS = 0.5
# Seconds the rate limit lets requests through without asking the storage after a failure, so
# that a storage that times out costs one timeout per process in that time, not one per request.
STORAGE_RETRY_SECONDS = 1.0
# Minimum seconds between two warnings about a failing storage, per process and per user of
# the storage (the rate limit, the sign-in throttle).
FAILURE_LOG_INTERVAL_SECONDS = 60.0
# Maximum number of API keys whose rejected requests are counted between two
# rate_limit.exceeded warnings.
MAX_TRACKED_KEYS = 10_000

# Schemes of the storages built on redis-py, which take a key prefix and socket timeouts.
_REDIS_SCHEMES = frozenset(
    [*RedisStorage.STORAGE_SCHEME, *RedisSentinelStorage.STORAGE_SCHEME, *RedisClusterStorage.STORAGE_SCHEME]
)
_MASK = "***"


class RateLimitStorageError(ValueError):
    """An invalid TALLYSTICK_RATE_LIMIT_STORAGE_URL. The message contains no password."""


def _url_secrets(url: str) -> list[str]:
    """Return the passwords in `url`, as written and percent-decoded, longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password or ""]
    found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True) if "password" in name.lower()]
    variants = {variant for secret in found if secret for variant in (secret, unquote(secret))}
    return sorted(variants, key=len, reverse=True)


def redact_storage_url(url: str) -> str:
    """Return `url` with its password, and the values of query parameters named like password, as ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # The password of such a URL cannot be located, so no part of it is shown.
        return "(a URL that cannot be parsed)"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.password is None and not any("password" in name.lower() for name, _value in query):
        # Returned as it is, since urlunsplit would drop the // of an empty host (redis+unix:///path).
        return url

    user_information, _, hosts = parts.netloc.rpartition("@")
    netloc = f"{user_information.partition(':')[0]}:{_MASK}@{hosts}" if parts.password is not None else parts.netloc
    masked_query = [(name, _MASK if "password" in name.lower() else value) for name, value in query]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(masked_query, safe="*")))


def _scrub(text: str, url: str) -> str:
    """Return `text`, a message about the storage at `url`, with every password of `url` as ***."""
    text = text.replace(url, redact_storage_url(url))
    for secret in _url_secrets(url):
        text = text.replace(secret, _MASK)
    return text


def build_storage(url: str, key_prefix: str) -> Storage:
    """Create the `limits` storage named by `url`, or raise RateLimitStorageError.

    Storages built on redis-py connect on first use, so an unreachable Redis is no error here.
    Redis Cluster is an exception, because its client reads the cluster's nodes at once.
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError as error:
        raise RateLimitStorageError(_invalid_message(url, str(error))) from None
    if scheme.startswith("async+"):
        raise RateLimitStorageError(
            _invalid_message(url, "asynchronous storage is not supported; remove the 'async+' prefix")
        )

    options: dict[str, float | str | bool] = {"wrap_exceptions": True}
    if scheme in _REDIS_SCHEMES:
        options.update(
            key_prefix=key_prefix,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
    try:
        storage = storage_from_string(url, **options)
    # Each storage library raises its own exception types for a bad URI or a missing client
    # package. Their messages may contain the URI, so none of them is chained.
    except Exception as error:  # noqa: BLE001 - reported as an invalid setting, without the password
        raise RateLimitStorageError(_invalid_message(url, str(error) or type(error).__name__)) from None

    if not isinstance(storage, Storage) or not isinstance(storage, MovingWindowSupport):
        raise RateLimitStorageError(
            _invalid_message(url, f"the {scheme!r} storage does not support the moving window strategy")
        )
    _check_connection_options(storage, url)
    return storage


def _check_connection_options(storage: Storage, url: str) -> None:
    # redis-py passes the URI's query parameters to each connection it opens, the first one at
    # the first request, so a misspelled parameter would fail every request. Building one
    # connection object, which does not connect, finds it at start instead.
    pool = getattr(getattr(storage, "storage", None), "connection_pool", None)
    if pool is None:
        return
    try:
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as error:
        raise RateLimitStorageError(_invalid_message(url, str(error))) from None


def _invalid_message(url: str, problem: str) -> str:
    return (
        # The library's "unknown storage scheme : ..." loses its space before the colon.
        f"Invalid {STORAGE_SETTING} {redact_storage_url(url)!r}: {_scrub(problem, url).rstrip('.').replace(' : ', ': ')}. "
        "Set it to memory:// or to a Redis URI such as redis://127.0.0.1:6379/0."
    )


class StorageFailureLog:
    """Warnings about a failing storage, at most one per FAILURE_LOG_INTERVAL_SECONDS.

    Each warning counts the requests let through unchecked since the previous one, and the
    first success after a failure logs the recovery. Safe to call from several threads.
    """

    def __init__(
        self,
        url: str,
        *,
        failed_event: str,
        recovered_event: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.failed_event = failed_event
        self.recovered_event = recovered_event
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._failing = False
        self._logged_at = float("-inf")
        # Requests let through unchecked since the last warning.
        self._unchecked = 0

    def record_failure(self, error: Exception, **ids: str) -> None:
        """Count a request let through because of `error`, and log a warning unless one was logged lately."""
        with self._lock:
            self._failing = True
            self._unchecked += 1
            now = self.monotonic()
            if now - self._logged_at < FAILURE_LOG_INTERVAL_SECONDS:
                return
            self._logged_at = now
            unchecked, self._unchecked = self._unchecked, 0
        cause = error.storage_error if isinstance(error, StorageError) else error
        log.warning(
            self.failed_event,
            extra={
                **ids,
                "storage": redact_storage_url(self.url),
                "error_type": type(cause).__name__,
                "error": _scrub(str(cause), self.url),
                "unchecked_requests": unchecked,
            },
        )

    def record_skip(self) -> None:
        """Count a request let through without asking the storage, which failed moments ago."""
        with self._lock:
            self._unchecked += 1

    def record_success(self) -> None:
        """Log the recovery when this is the first success after a failure."""
        # Read without the lock: a stale False only delays the recovery line to the next call.
        if not self._failing:
            return
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            unchecked, self._unchecked = self._unchecked, 0
        log.info(
            self.recovered_event,
            extra={"storage": redact_storage_url(self.url), "unchecked_requests": unchecked},
        )


class RateLimiter:
    """Requests per API key, in a moving window, counted in a `limits` storage."""

    def __init__(
        self, limit: str, storage: Storage, storage_url: str, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = limit.strip().lower() not in RATE_LIMIT_OFF_VALUES
        # The in-memory storage does no I/O. Any other storage is a network call.
        self.in_process = isinstance(storage, MemoryStorage)
        self.item: RateLimitItem | None = parse(limit) if self.enabled else None
        self.limiter = MovingWindowRateLimiter(storage)
        self.failures = StorageFailureLog(
            storage_url,
            failed_event="rate_limit.storage_failed",
            recovered_event="rate_limit.storage_recovered",
            monotonic=monotonic,
        )
        self.monotonic = monotonic
        # Until this time.monotonic() value, requests pass without asking the storage.
        self._storage_skipped_until = float("-inf")
        # Rejected requests by API key id, between two rate_limit.exceeded warnings.
        self._exceeded = RepeatCounter(FAILURE_LOG_INTERVAL_SECONDS, max_keys=MAX_TRACKED_KEYS, monotonic=monotonic)

    def check(self, api_key_id: str, organization_id: str) -> None:
        """Count one request for the key, and raise 429 with Retry-After when it is over the limit.

        When the storage fails, the request passes unchecked (see StorageFailureLog).
        """
        if self.item is None:
            return
        if self.monotonic() < self._storage_skipped_until:
            self.failures.record_skip()
            return

        try:
            allowed = self.limiter.hit(self.item, api_key_id)
            reset_at = None if allowed else self.limiter.get_window_stats(self.item, api_key_id).reset_time
        # Any error, not only the storage's own: a storage client that fails in an unforeseen
        # way must not turn every request into a 500.
        except Exception as error:  # noqa: BLE001 - logged by record_failure, and the request passes
            self._storage_skipped_until = self.monotonic() + STORAGE_RETRY_SECONDS
            self.failures.record_failure(error, api_key_id=api_key_id, organization_id=organization_id)
            return
        self.failures.record_success()
        if reset_at is None:
            return

        retry_after = max(1, int(reset_at - time.time()) + 1)
        self._log_exceeded(api_key_id, organization_id, retry_after)
        raise ApiError(
            429,
            "rate_limited",
            f"Too many requests for this API key (limit {self.item}); retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    def _log_exceeded(self, api_key_id: str, organization_id: str, retry_after: int) -> None:
        """Log a rejected request, at most once per FAILURE_LOG_INTERVAL_SECONDS for each key.

        A client over its limit may retry many times a second, so each warning counts the
        requests rejected since the one before.
        """
        rejected = self._exceeded.count(api_key_id)
        if rejected is None:
            return
        log.warning(
            "rate_limit.exceeded",
            extra={
                "api_key_id": api_key_id,
                "organization_id": organization_id,
                "retry_after": retry_after,
                "rejected_requests": rejected,
            },
        )
