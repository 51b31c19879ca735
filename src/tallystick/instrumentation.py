"""`autoinstrument()`: trace LLM client libraries with the OpenInference instrumentors.

The instrumentors come with the extras (``pip install "tallystick[openai]"``,
``"tallystick[anthropic]"`` or ``"tallystick[instrument]"``) and are bound to the SDK's own
tracer provider, never to the global one. Unless ``initialize_tracing(store_prompt=True)``,
they are configured not to record prompt or completion text at all.

Streamed OpenAI chat completions report token usage only when the request asks for it with
``stream_options={"include_usage": True}``. When a streamed ``chat.completions.create`` call
does not say, the SDK asks for it so the span records usage, and hides the extra final chunk
(no choices, only usage) from the caller, whose stream then looks as it would have without it.
A caller who sets ``include_usage`` either way is left alone.

The Anthropic ``messages.stream(...)`` helper is traced by the SDK itself: the 0.x
OpenInference instrumentor returns a raw event stream from it (so ``stream.text_stream`` fails)
and does not trace the async helper at all. The SDK's span records the model and the final
message's usage with the instrumentor's attribute names.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tallystick import tracing as tracing_module

log = logging.getLogger("tallystick")


@dataclass(frozen=True)
class Instrumentable:
    """A library and the OpenInference instrumentor that traces it."""

    name: str
    library_module: str
    instrumentor_module: str
    instrumentor_class: str


# Provider client libraries: one span per LLM call, with token usage.
PROVIDER_LIBRARIES = (
    Instrumentable("openai", "openai", "openinference.instrumentation.openai", "OpenAIInstrumentor"),
    Instrumentable(
        "anthropic", "anthropic", "openinference.instrumentation.anthropic", "AnthropicInstrumentor"
    ),
    Instrumentable("bedrock", "boto3", "openinference.instrumentation.bedrock", "BedrockInstrumentor"),
    Instrumentable(
        "google-genai",
        "google.genai",
        "openinference.instrumentation.google_genai",
        "GoogleGenAIInstrumentor",
    ),
    Instrumentable("vertexai", "vertexai", "openinference.instrumentation.vertexai", "VertexAIInstrumentor"),
    Instrumentable(
        "mistralai", "mistralai", "openinference.instrumentation.mistralai", "MistralAIInstrumentor"
    ),
    Instrumentable("groq", "groq", "openinference.instrumentation.groq", "GroqInstrumentor"),
    Instrumentable(
        "claude-agent-sdk",
        "claude_agent_sdk",
        "openinference.instrumentation.claude_agent_sdk",
        "ClaudeAgentSDKInstrumentor",
    ),
)

# Frameworks that call the provider libraries above: their LLM spans repeat the provider spans'
# usage, so they are instrumented only when named, to keep costs from being counted twice.
FRAMEWORK_LIBRARIES = (
    Instrumentable(
        "langchain", "langchain_core", "openinference.instrumentation.langchain", "LangChainInstrumentor"
    ),
    Instrumentable(
        "openai-agents", "agents", "openinference.instrumentation.openai_agents", "OpenAIAgentsInstrumentor"
    ),
    Instrumentable(
        "llama-index",
        "llama_index.core",
        "openinference.instrumentation.llama_index",
        "LlamaIndexInstrumentor",
    ),
    Instrumentable("litellm", "litellm", "openinference.instrumentation.litellm", "LiteLLMInstrumentor"),
    Instrumentable(
        "instructor", "instructor", "openinference.instrumentation.instructor", "InstructorInstrumentor"
    ),
    Instrumentable("dspy", "dspy", "openinference.instrumentation.dspy", "DSPyInstrumentor"),
    Instrumentable("crewai", "crewai", "openinference.instrumentation.crewai", "CrewAIInstrumentor"),
)

_BY_NAME = {item.name: item for item in PROVIDER_LIBRARIES + FRAMEWORK_LIBRARIES}
_instrumented: dict[str, Any] = {}
_lock = threading.Lock()


def autoinstrument(libraries: Iterable[str] | None = None, *, openai_stream_usage: bool = True) -> list[str]:
    """Instrument LLM libraries on the SDK's tracer provider; return the names instrumented.

    `libraries` names them ("openai", "anthropic", "langchain", ...). None means every provider
    library of PROVIDER_LIBRARIES that is installed together with its instrumentor. A library
    that is missing, or whose instrumentor is not installed, is skipped with a warning; nothing
    here raises. Each library is instrumented once per process.

    Tracing is initialized from the environment first if `initialize_tracing` was not called.
    With ``openai_stream_usage=False`` streamed OpenAI calls are left as the caller made them.
    """
    provider = tracing_module.tracer_provider()
    if provider is None:
        tracing_module.current_settings()
        provider = tracing_module.tracer_provider()
    if provider is None:
        log.error("instrumentation.skipped", extra={"reason": "tracing is not initialized (no API key)"})
        return []

    explicit = libraries is not None
    if libraries is None:
        wanted = list(PROVIDER_LIBRARIES)
    else:
        wanted = []
        for name in libraries:
            item = _BY_NAME.get(name)
            if item is None:
                log.warning(
                    "instrumentation.unknown_library", extra={"library": name, "known": sorted(_BY_NAME)}
                )
            else:
                wanted.append(item)

    done = []
    with _lock:
        for item in wanted:
            if item.name in _instrumented or _instrument(item, provider, explicit=explicit):
                done.append(item.name)
        if "openai" in done and openai_stream_usage:
            _patch_openai_stream_usage()
        if "anthropic" in done:
            _trace_anthropic_stream_helpers(provider)
    return done


def _instrument(item: Instrumentable, provider: Any, *, explicit: bool) -> bool:
    missing = _missing_module(item.library_module) or _missing_module(item.instrumentor_module)
    if missing:
        # Only worth a warning when the caller named the library.
        (log.warning if explicit else log.debug)(
            "instrumentation.unavailable", extra={"library": item.name, "missing_module": missing}
        )
        return False

    try:
        module = importlib.import_module(item.instrumentor_module)
        instrumentor = getattr(module, item.instrumentor_class)()
        if instrumentor.is_instrumented_by_opentelemetry:
            log.warning("instrumentation.already_instrumented", extra={"library": item.name})
            return False
        instrumentor.instrument(tracer_provider=provider, config=_trace_config())
    except Exception:  # noqa: BLE001 - a broken instrumentor must not stop the application
        log.exception("instrumentation.failed", extra={"library": item.name})
        return False

    if not instrumentor.is_instrumented_by_opentelemetry:
        # BaseInstrumentor declines, with its own log line, when the library's version is not
        # one the instrumentor supports.
        log.warning("instrumentation.declined", extra={"library": item.name})
        return False
    _instrumented[item.name] = instrumentor
    log.info("instrumentation.enabled", extra={"library": item.name})
    return True


def _missing_module(name: str) -> str | None:
    try:
        return None if importlib.util.find_spec(name) is not None else name
    except ModuleNotFoundError:
        return name


def _trace_config() -> Any:
    from openinference.instrumentation import TraceConfig

    settings = tracing_module.current_settings()
    hide = not (settings and settings.store_prompt)
    return TraceConfig(
        hide_inputs=hide,
        hide_outputs=hide,
        hide_input_messages=hide,
        hide_output_messages=hide,
        hide_llm_invocation_parameters=hide,
        hide_embedding_vectors=True,
    )


_openai_patched = False


def _patch_openai_stream_usage() -> None:
    global _openai_patched
    if _openai_patched:
        return

    import wrapt

    wrapt.wrap_function_wrapper(
        "openai.resources.chat.completions.completions", "Completions.create", _create_with_stream_usage
    )
    wrapt.wrap_function_wrapper(
        "openai.resources.chat.completions.completions", "AsyncCompletions.create", _acreate_with_stream_usage
    )
    _openai_patched = True


def _ask_for_usage(kwargs: dict[str, Any]) -> bool:
    """Add include_usage to a streamed request that does not set it; return True if added."""
    if kwargs.get("stream") is not True:
        return False
    # with_raw_response and with_streaming_response hand the caller the raw HTTP response, where
    # the usage chunk could not be hidden, so those calls stay as the caller made them.
    headers = kwargs.get("extra_headers") or {}
    if any(str(name).lower() == "x-stainless-raw-response" for name in headers):
        return False
    options = kwargs.get("stream_options")
    if isinstance(options, dict):
        if "include_usage" in options:
            return False
        kwargs["stream_options"] = {**options, "include_usage": True}
        return True
    if options is None or type(options).__name__ in ("Omit", "NotGiven"):
        kwargs["stream_options"] = {"include_usage": True}
        return True
    return False


def _create_with_stream_usage(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    import openai

    added = _ask_for_usage(kwargs)
    result = wrapped(*args, **kwargs)
    if added and isinstance(result, openai.Stream):
        return _stream_proxies()[0](result)
    return result


async def _acreate_with_stream_usage(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    import openai

    added = _ask_for_usage(kwargs)
    result = await wrapped(*args, **kwargs)
    if added and isinstance(result, openai.AsyncStream):
        return _stream_proxies()[1](result)
    return result


def _is_usage_only(chunk: Any) -> bool:
    return getattr(chunk, "usage", None) is not None and not getattr(chunk, "choices", None)


_proxies: tuple[type, type] | None = None


def _stream_proxies() -> tuple[type, type]:
    """Build the stream proxy classes on first use, since wrapt comes only with the extras."""
    global _proxies
    if _proxies is not None:
        return _proxies

    import wrapt

    class HideUsageChunk(wrapt.ObjectProxy):  # type: ignore[misc]
        """A Stream that skips the usage-only chunk requested on the caller's behalf."""

        def __iter__(self) -> Any:
            for chunk in self.__wrapped__:
                if not _is_usage_only(chunk):
                    yield chunk

        def __next__(self) -> Any:
            while True:
                chunk = next(self.__wrapped__)
                if not _is_usage_only(chunk):
                    return chunk

        def __enter__(self) -> Any:
            self.__wrapped__.__enter__()
            return self

        def __exit__(self, *exc_info: Any) -> Any:
            return self.__wrapped__.__exit__(*exc_info)

    class AsyncHideUsageChunk(wrapt.ObjectProxy):  # type: ignore[misc]
        """An AsyncStream that skips the usage-only chunk requested on the caller's behalf."""

        async def _filtered(self) -> Any:
            async for chunk in self.__wrapped__:
                if not _is_usage_only(chunk):
                    yield chunk

        def __aiter__(self) -> Any:
            return self._filtered()

        async def __anext__(self) -> Any:
            while True:
                chunk = await self.__wrapped__.__anext__()
                if not _is_usage_only(chunk):
                    return chunk

        async def __aenter__(self) -> Any:
            await self.__wrapped__.__aenter__()
            return self

        async def __aexit__(self, *exc_info: Any) -> Any:
            return await self.__wrapped__.__aexit__(*exc_info)

    _proxies = (HideUsageChunk, AsyncHideUsageChunk)
    return _proxies


_anthropic_patched = False
ANTHROPIC_MESSAGES_MODULE = "anthropic.resources.messages.messages"


def _trace_anthropic_stream_helpers(provider: Any) -> None:
    """Trace Messages.stream and AsyncMessages.stream with the SDK's own span."""
    global _anthropic_patched
    if _anthropic_patched:
        return

    import importlib.metadata

    import wrapt

    messages = importlib.import_module(ANTHROPIC_MESSAGES_MODULE)
    instrumentor_version = importlib.metadata.version("openinference-instrumentation-anthropic")
    if not instrumentor_version.startswith("0."):
        # Newer instrumentors trace the helpers themselves.
        return

    tracer = provider.get_tracer("tallystick.anthropic")
    for class_name in ("Messages", "AsyncMessages"):
        cls = getattr(messages, class_name)
        # Undo the instrumentor's wrapper of the sync helper, which breaks its return value.
        current = cls.__dict__["stream"]
        cls.stream = getattr(current, "__wrapped__", current)
        wrapt.wrap_function_wrapper(
            ANTHROPIC_MESSAGES_MODULE, f"{class_name}.stream", _StreamHelperWrapper(tracer)
        )
    _anthropic_patched = True


class _StreamHelperWrapper:
    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def __call__(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        manager = wrapped(*args, **kwargs)
        return _anthropic_manager_proxy()(manager, self._tracer, kwargs.get("model"))


_manager_proxy: type | None = None


def _anthropic_manager_proxy() -> type:
    global _manager_proxy
    if _manager_proxy is not None:
        return _manager_proxy

    import wrapt
    from opentelemetry.trace import Status, StatusCode

    class TracedStreamManager(wrapt.ObjectProxy):  # type: ignore[misc]
        """A MessageStreamManager whose stream runs inside an LLM span."""

        def __init__(self, manager: Any, tracer: Any, model: Any) -> None:
            super().__init__(manager)
            self._self_tracer = tracer
            self._self_model = model
            self._self_span: Any = None
            self._self_stream: Any = None

        def _self_start(self) -> None:
            attributes = {
                "openinference.span.kind": "LLM",
                "llm.provider": "anthropic",
                "llm.system": "anthropic",
            }
            if isinstance(self._self_model, str):
                attributes["llm.model_name"] = self._self_model
            self._self_span = self._self_tracer.start_span("MessagesStream", attributes=attributes)

        def _self_finish(self, error: BaseException | None) -> None:
            span = self._self_span
            if span is None:
                return
            try:
                message = (
                    self._self_stream.current_message_snapshot if self._self_stream is not None else None
                )
            except Exception:  # noqa: BLE001 - no message yet (the stream failed before its start)
                message = None
            if message is not None:
                span.set_attributes(_anthropic_usage_attributes(message))
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
            else:
                span.set_status(Status(StatusCode.OK))
            span.end()

        def __enter__(self) -> Any:
            self._self_start()
            self._self_stream = self.__wrapped__.__enter__()
            return self._self_stream

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
            try:
                return self.__wrapped__.__exit__(exc_type, exc, tb)
            finally:
                self._self_finish(exc)

        async def __aenter__(self) -> Any:
            self._self_start()
            self._self_stream = await self.__wrapped__.__aenter__()
            return self._self_stream

        async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
            try:
                return await self.__wrapped__.__aexit__(exc_type, exc, tb)
            finally:
                self._self_finish(exc)

    _manager_proxy = TracedStreamManager
    return _manager_proxy


def _anthropic_usage_attributes(message: Any) -> dict[str, Any]:
    """Token counts of a finished message, in the instrumentor's non-streaming convention:
    the prompt count includes cache reads and cache writes."""
    attributes: dict[str, Any] = {}
    model = getattr(message, "model", None)
    if isinstance(model, str) and model:
        attributes["llm.model_name"] = model
    usage = getattr(message, "usage", None)
    if usage is None:
        return attributes
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
    prompt = (getattr(usage, "input_tokens", None) or 0) + cache_read + cache_write
    completion = getattr(usage, "output_tokens", None) or 0
    attributes["llm.token_count.prompt"] = prompt
    attributes["llm.token_count.completion"] = completion
    attributes["llm.token_count.total"] = prompt + completion
    if cache_read:
        attributes["llm.token_count.prompt_details.cache_read"] = cache_read
    if cache_write:
        attributes["llm.token_count.prompt_details.cache_write"] = cache_write
    message_id = getattr(message, "id", None)
    if isinstance(message_id, str):
        attributes["gen_ai.response.id"] = message_id
    return attributes
