"""Tracing: a private OpenTelemetry provider exporting to tallystick, and the `tracing` context.

`initialize_tracing()` builds a TracerProvider of its own (the application's global provider is
never touched) that exports spans over OTLP/HTTP to ``<server root>/v1/traces``. Inside a
`tracing(...)` context every span started on that provider, including the LLM spans of the
instrumentors that `autoinstrument()` installs, carries the attributes the server's cost
pipeline reads:

- ``external_customer_id``: the customer's external id;
- ``external_agent_id``: the product's external id (the name the Paid wire format uses);
- ``paid_scope_id``: an integer that links the costs of this scope to the next signal sent
  with ``enable_cost_tracing=True`` (see `signal`);
- ``metadata.<dotted.path>``: the flattened `metadata` mapping.

Prompt and completion text are removed from every span before export unless
``initialize_tracing(store_prompt=True)``.

Exporting never blocks the caller: spans go through OpenTelemetry's BatchSpanProcessor, and
batches the server did not accept wait in a bounded backlog that a background thread retries
with backoff. Spans that do not fit are dropped, counted and logged.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from tallystick._background import retry_loop
from tallystick._http import TRACES_PATH, resolve_api_key, resolve_api_url
from tallystick._version import __version__

log = logging.getLogger("tallystick")

TRACER_NAME = "tallystick"
ROOT_SPAN_NAME = "tallystick.trace"
SDK_VERSION_ATTRIBUTE = "tallystick.sdk.version"

# Seconds one OTLP export request may take, including the exporter's own retries.
DEFAULT_EXPORT_TIMEOUT = 5.0
# Seconds a signal's direct POST may take before it is buffered instead.
DEFAULT_SIGNAL_TIMEOUT = 2.0
DEFAULT_MAX_BUFFERED_SPANS = 10_000
DEFAULT_MAX_BUFFERED_SIGNALS = 10_000
# Spans per OTLP request when the backlog is sent.
EXPORT_CHUNK = 512
# Backoff after consecutive failed exports: min(MAX, INITIAL * 2**(failures-1)), +-25 % jitter.
INITIAL_EXPORT_BACKOFF = 0.5
MAX_EXPORT_BACKOFF = 30.0
# Seconds the interpreter's exit may spend delivering what is still buffered.
EXIT_FLUSH_TIMEOUT = 3.0
# Span attribute limit. OpenTelemetry evicts the oldest attributes past the limit, which could
# remove the customer attributes set at span start from LLM spans with long chat histories.
MAX_SPAN_ATTRIBUTES = 1024

# Attribute keys (and their dotted children) that hold prompt or completion text or request
# parameters, in the OpenInference, OpenTelemetry GenAI and Traceloop conventions.
CONTENT_ATTRIBUTE_PREFIXES = (
    "input.value",
    "output.value",
    "llm.input_messages",
    "llm.output_messages",
    "llm.invocation_parameters",
    "llm.prompts",
    "llm.prompt_template",
    "llm.choices",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.request.messages",
    "gen_ai.response.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "embedding.embeddings",
    "retrieval.documents",
    "langchain.prompt",
)

ScopeAttributeValue = (
    str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
)


@dataclass
class TraceScope:
    """Attributes that the current `tracing` context stamps on spans.

    `scope_id` changes after each cost-traced signal, so later spans belong to the next signal.
    """

    external_customer_id: str
    external_product_id: str | None
    metadata_attributes: dict[str, ScopeAttributeValue]
    scope_id: int

    def span_attributes(self) -> dict[str, ScopeAttributeValue]:
        attributes: dict[str, ScopeAttributeValue] = {"external_customer_id": self.external_customer_id}
        if self.external_product_id is not None:
            attributes["external_agent_id"] = self.external_product_id
        attributes["paid_scope_id"] = self.scope_id
        attributes.update(self.metadata_attributes)
        return attributes


_current_scope: ContextVar[TraceScope | None] = ContextVar("tallystick_trace_scope", default=None)


def current_scope() -> TraceScope | None:
    """Return the scope of the innermost active `tracing` context, or None outside one."""
    return _current_scope.get()


def new_scope_id() -> int:
    # A positive int32, as paid-python generates them, so the server can store it in any column.
    return random.SystemRandom().randint(1, 2**31 - 1)


def flatten_metadata(
    metadata: Mapping[str, Any] | None, prefix: str = "metadata"
) -> dict[str, ScopeAttributeValue]:
    """Turn nested metadata into ``metadata.a.b`` span attributes with OpenTelemetry types.

    Scalars keep their type. Lists of one scalar type become arrays, and other lists become
    arrays of strings. None values are left out because OpenTelemetry has no null, and any other
    value becomes str().
    """
    flat: dict[str, ScopeAttributeValue] = {}
    for key, value in (metadata or {}).items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metadata(value, name))
        elif value is None:
            continue
        elif isinstance(value, str | bool | int | float):
            flat[name] = value
        elif isinstance(value, list | tuple):
            flat[name] = _attribute_array(value)
        else:
            flat[name] = str(value)
    return flat


def _attribute_array(values: Sequence[Any]) -> Sequence[Any]:
    kinds = {type(item) for item in values}
    if len(kinds) == 1 and kinds <= {str, bool, int, float}:
        return list(values)
    return [str(item) for item in values]


def is_content_attribute(key: str) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in CONTENT_ATTRIBUTE_PREFIXES)


def without_content(span: ReadableSpan) -> ReadableSpan:
    """Return `span` without prompt or completion attributes (itself when it has none)."""
    attributes = span.attributes or {}
    events = span.events
    has_content = any(is_content_attribute(key) for key in attributes) or any(
        is_content_attribute(key) for event in events for key in (event.attributes or {})
    )
    if not has_content:
        return span

    from opentelemetry.sdk.trace import Event

    kept_events = [
        Event(
            event.name,
            {key: value for key, value in (event.attributes or {}).items() if not is_content_attribute(key)},
            event.timestamp,
        )
        for event in events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={key: value for key, value in attributes.items() if not is_content_attribute(key)},
        events=kept_events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScopeSpanProcessor(SpanProcessor):
    """Stamp the current scope's attributes on span start; strip content on end; then batch."""

    def __init__(self, delegate: SpanProcessor, *, store_prompt: Callable[[], bool]) -> None:
        self._delegate = delegate
        self._store_prompt = store_prompt

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        span.set_attribute(SDK_VERSION_ATTRIBUTE, __version__)
        scope = _current_scope.get()
        if scope is not None:
            span.set_attributes(scope.span_attributes())
        self._delegate.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not self._store_prompt():
            span = without_content(span)
        self._delegate.on_end(span)

    def shutdown(self) -> None:
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._delegate.force_flush(timeout_millis)


class RetryingSpanExporter(SpanExporter):
    """Keep span batches the server did not accept in a bounded backlog and resend them later.

    `export` never fails towards the BatchSpanProcessor: after a failed attempt it only appends
    to the backlog until the backoff has passed, so the processor's queue keeps draining while
    the server is down. When the backlog is full the oldest spans are dropped and counted. The
    server deduplicates spans by (trace id, span id), so a batch resent after a lost response
    is counted once.
    """

    # NOTE: the OTLP exporter reports every failure the same way, so a batch the server rejects
    # for good (a 400) is retried like an outage until newer spans push it out of the backlog.

    def __init__(self, inner: SpanExporter, *, max_spans: int) -> None:
        self._inner = inner
        self._max_spans = max_spans
        self._backlog: deque[ReadableSpan] = deque()
        self._lock = threading.Lock()
        self._failures = 0
        self._next_attempt = 0.0
        self._last_drop_log = 0.0
        # The monotonic time by which shutdown() must return, and a factory of inner exporters
        # whose timeout fits in what is left of it. close_for_exit() sets both.
        self._exit_deadline: float | None = None
        self._exit_inner: Callable[[float], SpanExporter] | None = None
        self.exported = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._backlog)

    def replace_inner(self, inner: SpanExporter, *, max_spans: int) -> None:
        """Send later batches to another endpoint; spans still waiting are dropped and counted."""
        with self._lock:
            old, self._inner = self._inner, inner
            self._max_spans = max_spans
            self._drop(len(self._backlog), reason="reconfigured")
            self._backlog.clear()
            self._failures = 0
            self._next_attempt = 0.0
        old.shutdown()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._backlog.extend(spans)
            overflow = len(self._backlog) - self._max_spans
            if overflow > 0:
                for _ in range(overflow):
                    self._backlog.popleft()
                self._drop(overflow, reason="backlog_full")
            if self._exit_deadline is None and time.monotonic() >= self._next_attempt:
                self._send_backlog()
        if self._backlog and self._exit_deadline is None:
            retry_loop.wake()
        return SpanExportResult.SUCCESS

    def retry_pending(self) -> bool:
        """Resend the backlog if its backoff has passed; return True while spans still wait."""
        if self._exit_deadline is not None:
            return False
        with self._lock:
            if self._backlog and time.monotonic() >= self._next_attempt:
                self._send_backlog()
            return bool(self._backlog)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._backlog:
                self._send_backlog()
            return not self._backlog

    def close_for_exit(self, deadline: float, make_inner: Callable[[float], SpanExporter]) -> None:
        """Stop sending until `shutdown()`, which then sends the backlog once before `deadline`.

        `make_inner(seconds)` returns an exporter whose requests take at most about `seconds`,
        used for that last attempt because the configured export timeout may be longer.
        """
        self._exit_deadline = deadline
        self._exit_inner = make_inner

    def shutdown(self) -> None:
        if self._exit_deadline is not None:
            self._shutdown_before_deadline(self._exit_deadline)
            self._inner.shutdown()
            return
        with self._lock:
            if self._backlog:
                self._send_backlog()
            self._count_lost_at_shutdown()
        self._inner.shutdown()

    def _shutdown_before_deadline(self, deadline: float) -> None:
        # The lock is held by a send in another thread for up to its export timeout, so wait
        # for it only until the deadline.
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            # The backlog stays as it is, because the other thread removes the batch it sends.
            # NOTE: the count includes that batch, which the server may still receive.
            lost = len(self._backlog)
            log.warning("spans.lost_at_shutdown", extra={"spans": lost})
            self.dropped += lost
            return
        try:
            remaining = deadline - time.monotonic()
            if self._backlog and remaining > 0 and self._exit_inner is not None:
                last_inner = self._exit_inner(remaining)
                try:
                    self._send_backlog(last_inner)
                finally:
                    last_inner.shutdown()
            self._count_lost_at_shutdown()
        finally:
            self._lock.release()

    def _count_lost_at_shutdown(self) -> None:
        lost = len(self._backlog)
        if lost:
            log.warning("spans.lost_at_shutdown", extra={"spans": lost})
            self.dropped += lost
            self._backlog.clear()

    def _send_backlog(self, inner: SpanExporter | None = None) -> None:
        # Called with the lock held. The exporter's own HTTP call must not be traced.
        inner = inner or self._inner
        token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while self._backlog:
                batch = [self._backlog[index] for index in range(min(EXPORT_CHUNK, len(self._backlog)))]
                try:
                    result = inner.export(batch)
                except Exception:  # noqa: BLE001 - an exporter bug must not lose the backlog
                    log.exception("spans.export_error")
                    result = SpanExportResult.FAILURE
                if result is not SpanExportResult.SUCCESS:
                    self._failures += 1
                    delay = min(MAX_EXPORT_BACKOFF, INITIAL_EXPORT_BACKOFF * 2 ** (self._failures - 1))
                    self._next_attempt = time.monotonic() + delay * random.uniform(0.75, 1.25)
                    log.warning(
                        "spans.export_failed",
                        extra={
                            "pending": len(self._backlog),
                            "failures": self._failures,
                            "retry_in": round(delay, 2),
                        },
                    )
                    return
                for _ in batch:
                    self._backlog.popleft()
                self.exported += len(batch)
                if self._failures:
                    log.info("spans.export_recovered", extra={"after_failures": self._failures})
                self._failures = 0
        finally:
            otel_context.detach(token)

    def _drop(self, count: int, *, reason: str) -> None:
        if count <= 0:
            return
        self.dropped += count
        now = time.monotonic()
        # At most one warning every 10 s, carrying the running total.
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            log.warning(
                "spans.dropped", extra={"spans": count, "total_dropped": self.dropped, "reason": reason}
            )


@dataclass(frozen=True)
class TracingSettings:
    api_url: str
    api_key: str
    collector_endpoint: str
    store_prompt: bool = False
    export_timeout: float = DEFAULT_EXPORT_TIMEOUT
    signal_timeout: float = DEFAULT_SIGNAL_TIMEOUT
    max_buffered_spans: int = DEFAULT_MAX_BUFFERED_SPANS
    max_buffered_signals: int = DEFAULT_MAX_BUFFERED_SIGNALS


@dataclass
class _Runtime:
    settings: TracingSettings
    provider: TracerProvider
    exporter: RetryingSpanExporter
    processor: ScopeSpanProcessor


_runtime: _Runtime | None = None
_runtime_lock = threading.RLock()
_exit_hooks: list[Callable[[float], None]] = []


def _otlp_exporter(settings: TracingSettings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=settings.collector_endpoint,
        headers={"Authorization": f"Bearer {settings.api_key}"},
        timeout=settings.export_timeout,
    )


def initialize_tracing(
    api_key: str | None = None,
    api_url: str | None = None,
    *,
    collector_endpoint: str | None = None,
    store_prompt: bool = False,
    export_timeout: float = DEFAULT_EXPORT_TIMEOUT,
    signal_timeout: float = DEFAULT_SIGNAL_TIMEOUT,
    max_buffered_spans: int = DEFAULT_MAX_BUFFERED_SPANS,
    max_buffered_signals: int = DEFAULT_MAX_BUFFERED_SIGNALS,
) -> TracerProvider | None:
    """Set up the SDK's tracer provider and the settings `signal()` uses; return the provider.

    The key comes from `api_key` or TALLYSTICK_API_KEY, the server root from `api_url` or
    TALLYSTICK_API_URL; spans go to `collector_endpoint`, by default ``<root>/v1/traces``.
    Without a key it logs an error and returns None, and nothing is exported. Calling it
    again with other settings reconfigures the same provider: later spans and signals use the
    new server, and spans still waiting for the old one are dropped and counted.

    Args:
        store_prompt: export prompt and completion text (off by default).
        export_timeout: seconds one OTLP export may take, in the background.
        signal_timeout: seconds `signal()` waits for the server before buffering the signal.
        max_buffered_spans, max_buffered_signals: bounds of the retry buffers.
    """
    global _runtime

    key = resolve_api_key(api_key)
    if not key:
        log.error(
            "tracing.not_configured", extra={"reason": "no API key: pass api_key= or set TALLYSTICK_API_KEY"}
        )
        return None
    root = resolve_api_url(api_url)
    settings = TracingSettings(
        api_url=root,
        api_key=key,
        collector_endpoint=collector_endpoint or root + TRACES_PATH,
        store_prompt=store_prompt,
        export_timeout=export_timeout,
        signal_timeout=signal_timeout,
        max_buffered_spans=max_buffered_spans,
        max_buffered_signals=max_buffered_signals,
    )

    with _runtime_lock:
        if _runtime is not None:
            if _runtime.settings != settings:
                _runtime.processor.force_flush(int(export_timeout * 1000))
                _runtime.exporter.replace_inner(_otlp_exporter(settings), max_spans=max_buffered_spans)
                _runtime.settings = settings
                log.info("tracing.reconfigured", extra={"collector_endpoint": settings.collector_endpoint})
            return _runtime.provider

        exporter = RetryingSpanExporter(_otlp_exporter(settings), max_spans=max_buffered_spans)
        batch = BatchSpanProcessor(
            exporter,
            schedule_delay_millis=500,
            max_export_batch_size=EXPORT_CHUNK,
            max_queue_size=4096,
        )
        processor = ScopeSpanProcessor(batch, store_prompt=lambda: _store_prompt())
        provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=Resource.create(),
            span_limits=SpanLimits(
                max_span_attributes=MAX_SPAN_ATTRIBUTES, max_event_attributes=MAX_SPAN_ATTRIBUTES
            ),
            shutdown_on_exit=False,
        )
        provider.add_span_processor(processor)
        _runtime = _Runtime(settings=settings, provider=provider, exporter=exporter, processor=processor)
        retry_loop.register(exporter.retry_pending)
        atexit.register(shutdown_tracing)
        log.info("tracing.initialized", extra={"collector_endpoint": settings.collector_endpoint})
        return provider


def _store_prompt() -> bool:
    runtime = _runtime
    return runtime is not None and runtime.settings.store_prompt


def current_settings() -> TracingSettings | None:
    """Return the settings of `initialize_tracing`, initializing from the environment if needed."""
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None and resolve_api_key(None):
                initialize_tracing()
    return _runtime.settings if _runtime is not None else None


def tracer_provider() -> TracerProvider | None:
    """Return the SDK's provider (None before `initialize_tracing`), for spans of your own."""
    return _runtime.provider if _runtime is not None else None


_tracers: dict[tuple[int, str], trace.Tracer] = {}


def get_tracer(name: str = TRACER_NAME) -> trace.Tracer:
    """Return a tracer of the SDK's provider (a no-op tracer before `initialize_tracing`)."""
    provider = tracer_provider()
    if provider is None:
        return trace.NoOpTracer()
    # Cached because building a Tracer on every `tracing(...)` entry costs measurable time.
    key = (id(provider), name)
    tracer = _tracers.get(key)
    if tracer is None:
        tracer = _tracers[key] = provider.get_tracer(name, __version__)
    return tracer


def add_exit_hook(hook: Callable[[float], None]) -> None:
    """Run `hook(timeout_seconds)` when tracing shuts down, before the provider flushes."""
    with _runtime_lock:
        if hook not in _exit_hooks:
            _exit_hooks.append(hook)


def flush(timeout: float = 5.0) -> bool:
    """Export every finished span now; return True when nothing is left waiting."""
    runtime = _runtime
    if runtime is None:
        return True
    runtime.processor.force_flush(int(timeout * 1000))
    return runtime.exporter.pending == 0


def stats() -> dict[str, int]:
    """Return counters of the span pipeline: exported, pending (buffered) and dropped spans."""
    runtime = _runtime
    if runtime is None:
        return {"spans_exported": 0, "spans_pending": 0, "spans_dropped": 0}
    exporter = runtime.exporter
    return {
        "spans_exported": exporter.exported,
        "spans_pending": exporter.pending,
        "spans_dropped": exporter.dropped,
    }


def shutdown_tracing(timeout: float = EXIT_FLUSH_TIMEOUT) -> None:
    """Deliver what is buffered (bounded by about `timeout` seconds per stage), then stop.

    The stages are each exit hook (such as resending buffered signals), then exporting spans.
    What a stage cannot deliver in time is counted as dropped and logged as lost.

    Runs at interpreter exit. A later `initialize_tracing` builds a new provider, but libraries
    instrumented by `autoinstrument` stay bound to the old one, so call this only at the end.
    """
    global _runtime
    with _runtime_lock:
        runtime, _runtime = _runtime, None
    if runtime is None:
        return
    for hook in list(_exit_hooks):
        try:
            hook(timeout)
        except Exception:  # noqa: BLE001 - shutting down must go on
            log.exception("tracing.exit_hook_failed")

    settings = runtime.settings
    runtime.exporter.close_for_exit(
        time.monotonic() + timeout,
        lambda seconds: _otlp_exporter(replace(settings, export_timeout=seconds)),
    )
    # NOTE: an export that another thread started before this point is not interrupted, so
    # this stage can take up to export_timeout when that is longer than `timeout`.
    runtime.provider.shutdown()


def generate_tracing_token() -> int:
    """Return a new random trace id; pass it as `tracing_token` in several processes so that
    their spans share one trace."""
    return RandomIdGenerator().generate_trace_id()


def _trace_id_of(token: int | str) -> int:
    if isinstance(token, str):
        token = int(token, 16)
    if not 0 < token < 2**128:
        raise ValueError(f"tracing_token {token!r} is not a 128-bit trace id")
    return token


F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _Opened:
    scope_token: Any
    span: trace.Span
    context_token: Any


# Scopes opened by `with tracing(...)` blocks, per thread and task, as (instance id, opened):
# one instance may be entered in several threads or tasks at once.
_open_frames: ContextVar[tuple[tuple[int, _Opened], ...]] = ContextVar("tallystick_open_frames", default=())


class tracing:  # noqa: N801 - named like a function because it is used like one
    """Attribute everything inside to a customer (and product): a context manager or decorator.

    ``with tracing("acme", external_product_id="chatbot"):``, ``async with tracing(...)`` and
    ``@tracing(...)`` on a function or coroutine function all open a scope: a root span named
    ``tallystick.trace`` and the attributes of the module docstring on every span inside.
    Signals sent with `signal()` inside take the customer and product from it.

    Args:
        external_customer_id: the customer's external id.
        external_product_id: the product's external id (optional).
        metadata: values stamped on every span as ``metadata.<key>`` attributes.
        tracing_token: a trace id from `generate_tracing_token()` (int, or 32 hex digits) that
            makes this scope part of an existing trace, for example one started in another
            process.
    """

    def __init__(
        self,
        external_customer_id: str,
        *,
        external_product_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tracing_token: int | str | None = None,
    ) -> None:
        if not external_customer_id:
            raise ValueError("external_customer_id must be a non-empty string")
        self.external_customer_id = external_customer_id
        self.external_product_id = external_product_id
        self.metadata_attributes = flatten_metadata(metadata)
        self.trace_id = _trace_id_of(tracing_token) if tracing_token is not None else None

    def _open(self) -> _Opened:
        current_settings()
        scope = TraceScope(
            external_customer_id=self.external_customer_id,
            external_product_id=self.external_product_id,
            metadata_attributes=self.metadata_attributes,
            scope_id=new_scope_id(),
        )
        scope_token = _current_scope.set(scope)

        parent = None
        if self.trace_id is not None:
            remote = SpanContext(
                trace_id=self.trace_id,
                span_id=RandomIdGenerator().generate_span_id(),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        span = get_tracer().start_span(ROOT_SPAN_NAME, context=parent)
        context_token = otel_context.attach(trace.set_span_in_context(span))
        return _Opened(scope_token, span, context_token)

    @staticmethod
    def _close(opened: _Opened, error: BaseException | None) -> None:
        span = opened.span
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end()
        otel_context.detach(opened.context_token)
        _current_scope.reset(opened.scope_token)

    def __enter__(self) -> tracing:
        opened = self._open()
        _open_frames.set((*_open_frames.get(), (id(self), opened)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        frames = _open_frames.get()
        # The innermost frame this instance opened in the current thread or task.
        index = max(position for position, (owner, _) in enumerate(frames) if owner == id(self))
        _open_frames.set(frames[:index] + frames[index + 1 :])
        self._close(frames[index][1], exc)

    async def __aenter__(self) -> tracing:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"@tracing cannot wrap the generator function {func.__qualname__}: its body runs "
                "after the call returns; use `with tracing(...)` inside it instead"
            )

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                opened = self._open()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as error:
                    self._close(opened, error)
                    raise
                self._close(opened, None)
                return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            opened = self._open()
            try:
                result = func(*args, **kwargs)
            except BaseException as error:
                self._close(opened, error)
                raise
            self._close(opened, None)
            return result

        return run  # type: ignore[return-value]
