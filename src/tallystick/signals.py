"""`signal()`: send a billable event now, or buffer it and retry until the server takes it.

A signal is sent to ``POST /api/v2/signals/bulk`` in the caller's thread with a short timeout
(``initialize_tracing(signal_timeout=...)``, 2 s by default), so a balance read right after it
reflects it. When the server cannot be reached, times out, or responds with 408, 429 or 5xx, the
signal goes to a bounded in-memory buffer that a background thread resends with backoff. Every
signal carries an idempotency key (generated when the caller gives none) and the time of the
`signal()` call, so a resent signal is counted once and keeps its event time. A signal the
buffer cannot take is dropped, counted and logged; so is a signal the server rejects as
invalid, since resending cannot fix it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from opentelemetry import context as otel_context

from tallystick import tracing as tracing_module
from tallystick._background import retry_loop
from tallystick._http import API_PREFIX, build_headers, decode_json, encode_json
from tallystick.resources import mapping_argument, signal_body

log = logging.getLogger("tallystick")

# Signals per request when the buffer is resent.
RESEND_BATCH = 100
# Seconds a background resend may wait for the server (it does not block the application).
RESEND_TIMEOUT = 10.0
# Backoff after consecutive failed resends: min(MAX, INITIAL * 2**(failures-1)), +-25 % jitter.
INITIAL_RESEND_BACKOFF = 0.5
MAX_RESEND_BACKOFF = 30.0

SignalStatus = Literal["sent", "duplicate", "buffered", "rejected", "dropped"]


@dataclass(frozen=True)
class SignalReceipt:
    """What became of one `signal()` call.

    `status` is one of:
    - "sent": stored now;
    - "duplicate": the idempotency key was already used, so nothing changed;
    - "buffered": the server was unavailable, and the signal will be resent;
    - "rejected": the server rejected it as invalid, and `message` gives the reason;
    - "dropped": the buffer was full.
    """

    idempotency_key: str
    status: SignalStatus
    message: str | None = None
    # The paid_scope_id the signal claimed costs for, when sent with enable_cost_tracing.
    scope_id: int | None = None


@dataclass(frozen=True)
class _Target:
    api_url: str
    api_key: str


@dataclass
class _Outcome:
    kind: Literal["ok", "retry", "rejected"]
    result: dict[str, Any] | None = None
    message: str | None = None


_clients: dict[_Target, httpx.Client] = {}
_clients_lock = threading.Lock()


def _http_client(target: _Target) -> httpx.Client:
    # One client per server, because each request sets its own timeout.
    with _clients_lock:
        client = _clients.get(target)
        if client is None:
            client = httpx.Client(
                base_url=target.api_url + API_PREFIX,
                headers=build_headers(target.api_key, {"Content-Type": "application/json"}),
            )
            _clients[target] = client
        return client


def _post_signals(target: _Target, signals: list[dict[str, Any]], timeout: float) -> _Outcome:
    # Our own HTTP call must not show up in the application's traces.
    token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        response = _http_client(target).post(
            "signals/bulk", content=encode_json({"signals": signals}), timeout=timeout
        )
    except httpx.TransportError as error:
        return _Outcome("retry", message=f"{type(error).__name__}: {error}")
    finally:
        otel_context.detach(token)

    status = response.status_code
    if response.is_success:
        try:
            return _Outcome("ok", result=decode_json(response.content))
        except ValueError:
            return _Outcome("ok", result={})
    if status in (408, 429) or status >= 500:
        return _Outcome("retry", message=f"HTTP {status}")
    return _Outcome("rejected", message=_rejection_message(response))


def _rejection_message(response: httpx.Response) -> str:
    """Return the server's error sentence for a rejected request, or the start of its body."""
    try:
        body = decode_json(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return f"HTTP {response.status_code}: {body['error']}"
    return f"HTTP {response.status_code}: {response.text[:300]}"


@dataclass
class _Pending:
    target: _Target
    body: dict[str, Any]


class SignalBuffer:
    """Bounded buffer of signals waiting to be resent; the retry thread drains it.

    Each server (target) has its own backoff, so signals for a server that is still down
    never hold back those for another one (after `initialize_tracing` switched servers).
    """

    def __init__(self) -> None:
        self._items: deque[_Pending] = deque()
        self._lock = threading.Lock()
        # Serializes resends from the retry thread and from flush(), so no batch goes out twice.
        self._send_lock = threading.Lock()
        # Per target: consecutive failed resends and the monotonic time of the next attempt.
        self._backoff: dict[_Target, tuple[int, float]] = {}
        self._last_drop_log = 0.0
        self.sent = 0
        self.dropped = 0
        self.rejected = 0

    @property
    def pending(self) -> int:
        return len(self._items)

    def pending_keys(self) -> set[str]:
        """Return the idempotency keys of the signals still waiting."""
        with self._lock:
            return {item.body["idempotencyKey"] for item in self._items}

    def add(self, target: _Target, body: dict[str, Any], max_size: int) -> bool:
        with self._lock:
            if len(self._items) >= max_size:
                self._drop(body)
                return False
            self._items.append(_Pending(target, body))
        retry_loop.wake()
        return True

    def retry_pending(self) -> bool:
        """Resend one batch per target whose backoff has passed; return True while signals wait."""
        now = time.monotonic()
        for target in self._targets():
            if now >= self._backoff.get(target, (0, 0.0))[1]:
                self._resend_batch(target, RESEND_TIMEOUT)
        return bool(self._items)

    def flush(self, timeout: float) -> int:
        """Resend until empty or `timeout` seconds passed, ignoring backoff; return what is left.

        A resend by the retry thread holds the send lock for up to RESEND_TIMEOUT, so this
        waits for the lock only until the deadline too.
        """
        deadline = time.monotonic() + timeout
        for target in self._targets():
            while any(item.target == target for item in list(self._items)):
                if not self._resend_batch(target, RESEND_TIMEOUT, deadline=deadline):
                    break
        return len(self._items)

    def _targets(self) -> list[_Target]:
        with self._lock:
            return list(dict.fromkeys(item.target for item in self._items))

    def _resend_batch(self, target: _Target, timeout: float, *, deadline: float | None = None) -> bool:
        """Send the oldest signals for `target`; return True when the server took the batch.

        With a monotonic `deadline`, wait for the send lock and the server only until then.
        """
        if deadline is None:
            self._send_lock.acquire()
        elif not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return False
            return self._resend_batch_locked(target, timeout)
        finally:
            self._send_lock.release()

    def _resend_batch_locked(self, target: _Target, timeout: float) -> bool:
        with self._lock:
            batch = [item for item in self._items if item.target == target][:RESEND_BATCH]
        if not batch:
            return True

        outcome = _post_signals(target, [item.body for item in batch], timeout)
        failures = self._backoff.get(target, (0, 0.0))[0]
        if outcome.kind == "retry":
            failures += 1
            delay = min(MAX_RESEND_BACKOFF, INITIAL_RESEND_BACKOFF * 2 ** (failures - 1))
            self._backoff[target] = (failures, time.monotonic() + delay * random.uniform(0.75, 1.25))
            log.warning(
                "signals.resend_failed",
                extra={"pending": len(self._items), "failures": failures, "error": outcome.message},
            )
            return False

        with self._lock:
            sent = {id(item) for item in batch}
            self._items = deque(item for item in self._items if id(item) not in sent)
        if failures:
            log.info("signals.resend_recovered", extra={"after_failures": failures})
        self._backoff.pop(target, None)
        if outcome.kind == "rejected":
            self.rejected += len(batch)
            log.error("signals.resend_rejected", extra={"signals": len(batch), "error": outcome.message})
            return True

        result = outcome.result or {}
        failed = _failures_by_index(result)
        for index, item in enumerate(batch):
            if index in failed:
                self.rejected += 1
                log.error(
                    "signal.rejected",
                    extra={"idempotency_key": item.body.get("idempotencyKey"), "error": failed[index]},
                )
            else:
                self.sent += 1
        log.info(
            "signals.resent",
            extra={
                "ingested": result.get("ingested"),
                "duplicates": result.get("duplicates"),
                "failed": result.get("failed"),
                "pending": len(self._items),
            },
        )
        return True

    def _drop(self, body: dict[str, Any]) -> None:
        self.dropped += 1
        now = time.monotonic()
        # At most one warning every 10 s, carrying the running total.
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            log.warning(
                "signal.dropped",
                extra={
                    "event_name": body.get("eventName"),
                    "idempotency_key": body.get("idempotencyKey"),
                    "total_dropped": self.dropped,
                    "reason": "buffer_full",
                },
            )


def _failures_by_index(result: Mapping[str, Any]) -> dict[int, str]:
    failed: dict[int, str] = {}
    for error in result.get("errors") or []:
        if isinstance(error, Mapping) and isinstance(error.get("index"), int):
            failed[error["index"]] = str(error.get("message") or error.get("code"))
    return failed


def _flush_at_exit(timeout: float) -> None:
    left = buffer.flush(timeout)
    if left:
        buffer.dropped += left
        log.warning("signals.lost_at_shutdown", extra={"signals": left})


buffer = SignalBuffer()
retry_loop.register(buffer.retry_pending)
tracing_module.add_exit_hook(_flush_at_exit)


def signal(
    event_name: str,
    data: Mapping[str, Any] | None = None,
    enable_cost_tracing: bool = False,
    *,
    idempotency_key: str | None = None,
    external_customer_id: str | None = None,
    external_product_id: str | None = None,
    hold_id: str | None = None,
) -> SignalReceipt:
    """Send one billable event for the customer (and product) of the current `tracing` context.

    With ``enable_cost_tracing=True`` the signal carries ``data.paid.paid_scope_id``, which
    links it to the AI costs traced in this context since the previous such signal; the
    context then moves on to a new scope id. `external_customer_id` and `external_product_id`
    override the context's (and are required outside one). `hold_id` settles a credit hold.

    Never raises because of the server: see the module docstring for what happens when it is
    down. Raises RuntimeError when no API key is configured, TypeError when `data` is not a
    mapping, and ValueError for other invalid arguments.
    """
    settings = tracing_module.current_settings()
    if settings is None:
        raise RuntimeError(
            "tallystick is not configured: call initialize_tracing(api_key=...) or set TALLYSTICK_API_KEY"
        )

    scope = tracing_module.current_scope()
    customer = external_customer_id or (scope.external_customer_id if scope else None)
    if customer is None:
        raise ValueError(
            "signal() needs a customer: call it inside tracing(...) or pass external_customer_id="
        )
    product = external_product_id or (scope.external_product_id if scope else None)

    payload = dict(mapping_argument("data", data)) if data is not None else {}
    scope_id = None
    if enable_cost_tracing:
        if scope is None:
            raise ValueError(
                "enable_cost_tracing=True needs a tracing(...) context whose costs the signal takes"
            )
        scope_id = scope.scope_id
        payload["paid"] = {**dict(payload.get("paid") or {}), "paid_scope_id": scope_id}

    body = signal_body(
        event_name,
        external_customer_id=customer,
        external_product_id=product,
        data=payload or None,
        idempotency_key=idempotency_key,
        timestamp=datetime.now(UTC),
        hold_id=hold_id,
    )
    try:
        encode_json(body)
    except (TypeError, ValueError) as error:
        raise ValueError(f"signal data for {event_name!r} is not JSON-serializable: {error}") from None
    key = body["idempotencyKey"]
    if scope is not None and scope_id is not None:
        # Spans started from now on belong to the next cost-traced signal.
        scope.scope_id = tracing_module.new_scope_id()
    target = _Target(settings.api_url, settings.api_key)

    outcome = _post_signals(target, [body], settings.signal_timeout)
    if outcome.kind == "retry":
        if buffer.add(target, body, settings.max_buffered_signals):
            log.warning("signal.buffered", extra={"idempotency_key": key, "error": outcome.message})
            return SignalReceipt(key, "buffered", outcome.message, scope_id)
        return SignalReceipt(key, "dropped", "signal buffer is full", scope_id)
    if outcome.kind == "rejected":
        buffer.rejected += 1
        log.error("signal.rejected", extra={"idempotency_key": key, "error": outcome.message})
        return SignalReceipt(key, "rejected", outcome.message, scope_id)

    result = outcome.result or {}
    failed = _failures_by_index(result)
    if 0 in failed:
        buffer.rejected += 1
        log.error("signal.rejected", extra={"idempotency_key": key, "error": failed[0]})
        return SignalReceipt(key, "rejected", failed[0], scope_id)
    buffer.sent += 1
    status: SignalStatus = "duplicate" if result.get("duplicates") else "sent"
    return SignalReceipt(key, status, None, scope_id)


async def asignal(
    event_name: str,
    data: Mapping[str, Any] | None = None,
    enable_cost_tracing: bool = False,
    **options: Any,
) -> SignalReceipt:
    """`signal()` for asyncio code: the request runs in a worker thread, not on the event loop."""
    return await asyncio.to_thread(signal, event_name, data, enable_cost_tracing, **options)


def stats() -> dict[str, int]:
    """Return counters of signals: sent, pending (buffered), dropped and rejected."""
    return {
        "signals_sent": buffer.sent,
        "signals_pending": buffer.pending,
        "signals_dropped": buffer.dropped,
        "signals_rejected": buffer.rejected,
    }


def flush_signals(timeout: float = 5.0) -> int:
    """Resend buffered signals now, for up to `timeout` seconds; return how many still wait."""
    return buffer.flush(timeout)
