"""Request ids, structured JSON logs and Prometheus metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Metrics are per server process: with several workers, scrape each one or aggregate them.
HTTP_REQUESTS = Counter(
    "tallystick_http_requests_total", "HTTP requests handled.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tallystick_http_request_duration_seconds",
    "Time from receiving a request to sending the last byte of its response.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SIGNALS_INGESTED = Counter("tallystick_signals_ingested_total", "Signals stored (duplicates excluded).")
SIGNALS_FAILED = Counter("tallystick_signals_failed_total", "Signals rejected by validation or rating.")
CREDITS_CONSUMED = Counter(
    "tallystick_credits_consumed_total", "Credits drawn from grants by signals.", ["currency_key"]
)
SPANS_PRICED = Counter("tallystick_spans_priced_total", "LLM spans priced.")
SPANS_UNPRICED = Counter("tallystick_spans_unpriced_total", "LLM spans stored without a price.")
WEBHOOK_FAILURES = Counter("tallystick_webhook_failures_total", "Webhook delivery attempts that failed.")
SIGNAL_REQUESTS_PER_TRANSACTION = Histogram(
    "tallystick_signal_requests_per_transaction",
    "One-signal requests written together in one shared transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000),
)
RENEWAL_LAG = Histogram(
    "tallystick_renewal_lag_seconds",
    "Delay between a billing period's start and the renewal that granted it.",
    buckets=(1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400),
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLogFormatter(logging.Formatter):
    """Render a record as one JSON object: time, level, logger, event, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Loggers kept at WARNING whatever the level: Alembic's plugin registry logs one INFO line per
# built-in plugin (seven) each time migrations run, which is noise in a server's log.
QUIET_LOGGERS = ("alembic.runtime.plugins",)


def logging_config(level: str = "info") -> dict[str, Any]:
    """Return the `logging.config.dictConfig` form of `configure_logging`, JSON lines to stderr.

    Uvicorn applies it in every worker process it starts; the process that runs `serve` has
    its own logging only, which worker processes do not inherit.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonLogFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {name: {"level": "WARNING"} for name in QUIET_LOGGERS},
    }


def configure_logging(level: str = "info", *, json_format: bool = True) -> None:
    """Send logs to standard error, as JSON lines unless `json_format` is false."""
    handler = logging.StreamHandler()
    if json_format:
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class RequestContextMiddleware:
    """Give each request an id (from X-Request-Id or new), echo it, and record metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # Accept a caller's id only when it is short and printable, so logs stay clean.
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        status_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_started
            if message["type"] == "http.response.start":
                status = message["status"]
                status_started = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Answer here instead of letting Starlette's outermost handler re-raise, which makes
            # the server drop the connection and the client's next pooled request fail.
            # The route template, not the path: paths can carry tokens such as a receipt's.
            log.exception("request.failed", extra={"method": scope["method"], "route": route_template(scope)})
            if status_started:
                raise
            await _send_internal_error(send_with_id)
        finally:
            template = route_template(scope)
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(elapsed)
            # The access log of this server: uvicorn's own would print paths and query strings,
            # which carry capability tokens (receipt links, checkout ids).
            log.info(
                "request.finished",
                extra={
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )
            request_id_var.reset(token)


class RepeatCounter:
    """Occurrences of a repeating event by key, logged at most once per interval for each key.

    While something stays wrong (a database down, a client over its rate limit), the same event
    repeats many times a second, and one log line each would bury the log. Safe to call from
    several threads.
    """

    def __init__(
        self, interval_seconds: float, *, max_keys: int = 10_000, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_seconds = interval_seconds
        self.max_keys = max_keys
        self.monotonic = monotonic
        self._lock = threading.Lock()
        # By key: when its event was last logged, and its occurrences since then.
        self._counts: dict[str, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: str = "") -> int | None:
        """Count one occurrence of `key`.

        Return the occurrences since the key was last logged, this one included, when it is
        due to be logged now, or None when it is not.
        """
        now = self.monotonic()
        with self._lock:
            logged_at, occurrences = self._counts.get(key, (float("-inf"), 0))
            occurrences += 1
            if now - logged_at < self.interval_seconds:
                self._counts[key] = (logged_at, occurrences)
                return None
            if len(self._counts) >= self.max_keys:
                # Keys not logged within the interval lose their counts, which bounds the table
                # by the keys that were logged in the last interval.
                self._counts = {
                    other: entry for other, entry in self._counts.items() if now - entry[0] < self.interval_seconds
                }
            self._counts[key] = (now, 0)
        return occurrences


def route_template(scope: Scope) -> str:
    """Return the matched route's template, such as /receipts/{token}; unmatched paths share one.

    A route served with and without its trailing slash is labeled with the spelling given in
    code (`metrics_path`, set by `routing.Router`).
    """
    route = scope.get("route")
    return getattr(route, "metrics_path", None) or getattr(route, "path", "unmatched")


_PENDING_COUNTS = "metrics_pending_counts"


def count_after_commit(session: Session, counter: Counter, amount: float = 1) -> None:
    """Add `amount` to `counter` when the session's transaction commits, and never if it rolls back.

    Counting at commit keeps retried transactions (deadlocks, serialization failures) from
    counting their work twice. Pass a labelled child, such as ``CREDITS_CONSUMED.labels(key)``.
    Work undone by rolling back a savepoint is still counted once the outer transaction commits.
    """
    if amount <= 0:
        return
    pending = session.info.get(_PENDING_COUNTS)
    if pending is None:
        pending = session.info[_PENDING_COUNTS] = []
        event.listen(session, "after_commit", _apply_pending_counts)
        event.listen(session, "after_transaction_end", _drop_pending_counts)
    pending.append((counter, amount))


def _apply_pending_counts(session: Session) -> None:
    # Releasing a savepoint fires after_commit too; only the outer commit counts.
    if session.in_nested_transaction():
        return
    pending = session.info.get(_PENDING_COUNTS) or []
    for counter, amount in pending:
        counter.inc(amount)
    pending.clear()


def _drop_pending_counts(session: Session, transaction: SessionTransaction) -> None:
    # Runs after _apply_pending_counts on commit; on rollback the counts are dropped unapplied.
    if transaction.nested or transaction.parent is not None:
        return
    pending = session.info.get(_PENDING_COUNTS)
    if pending:
        pending.clear()


async def _send_internal_error(send: Send) -> None:
    body = json.dumps({"error": "Internal server error", "code": "internal_error"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def metrics_response_body() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
