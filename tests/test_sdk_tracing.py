"""Tracing context, span attributes and export, read from a loopback OTLP collector.

The collector decodes the protobuf the SDK sends, so these tests see the spans exactly as the
server receives them. The LLM calls go through the real openai and anthropic libraries with
their HTTP answered in-process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace

import tallystick
from tallystick.tracing import flush, get_tracer, stats, tracer_provider
from tests.sdk_fakes import (
    OPENAI_USAGE,
    STREAM_WORDS,
    Collector,
    anthropic_clients,
    openai_clients,
    run_async,
    start_collector,
)


@pytest.fixture
def collector() -> Iterator[Collector]:
    made, server = start_collector()
    tallystick.initialize_tracing(
        api_key="sk_test", api_url="http://127.0.0.1:9", collector_endpoint=made.url
    )
    tallystick.autoinstrument(["openai", "anthropic"])
    yield made
    server.shutdown()


def wait_for_spans(collector: Collector, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(collector.spans) < count and time.monotonic() < deadline:
        flush()
        time.sleep(0.05)


def test_scope_attributes_on_every_span(collector: Collector):
    openai_sync, _ = openai_clients()

    with tallystick.tracing(
        "acme", external_product_id="chatbot", metadata={"plan": "pro", "seat": {"id": 7}}
    ):
        openai_sync.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    wait_for_spans(collector, 2)

    root = collector.named("tallystick.trace")[0]
    llm = collector.named("ChatCompletion")[0]
    for span in (root, llm):
        assert span.attributes["external_customer_id"] == "acme"
        assert span.attributes["external_agent_id"] == "chatbot"
        assert span.attributes["metadata.plan"] == "pro"
        assert span.attributes["metadata.seat.id"] == 7
        assert span.attributes["tallystick.sdk.version"] == tallystick.__version__
    assert isinstance(root.attributes["paid_scope_id"], int)
    assert llm.attributes["paid_scope_id"] == root.attributes["paid_scope_id"]
    assert llm.trace_id == root.trace_id
    assert llm.parent_span_id == root.span_id
    assert collector.authorization[0] == "Bearer sk_test"


def test_openai_usage_recorded(collector: Collector):
    openai_sync, _ = openai_clients()

    with tallystick.tracing("acme"):
        openai_sync.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    wait_for_spans(collector, 2)

    attributes = collector.named("ChatCompletion")[0].attributes
    assert attributes["llm.model_name"] == "gpt-4o-mini-2024-07-18"
    assert attributes["llm.token_count.prompt"] == OPENAI_USAGE["prompt_tokens"]
    assert attributes["llm.token_count.completion"] == OPENAI_USAGE["completion_tokens"]
    assert attributes["llm.token_count.prompt_details.cache_read"] == OPENAI_USAGE["cached_tokens"]


def test_prompt_text_not_exported(collector: Collector):
    openai_sync, _ = openai_clients()
    anthropic_sync, _ = anthropic_clients()

    with tallystick.tracing("acme"):
        openai_sync.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "the secret prompt"}]
        )
        anthropic_sync.messages.create(
            model="claude-3-5-haiku-20241022",
            max_tokens=50,
            messages=[{"role": "user", "content": "the secret prompt"}],
        )
        with get_tracer().start_as_current_span("manual", attributes={"input.value": "the secret prompt"}):
            pass
    wait_for_spans(collector, 4)

    assert len(collector.spans) == 4
    for span in collector.spans:
        values = " ".join(str(value) for value in span.attributes.values())
        assert "secret prompt" not in values, span.name
        assert "Hello there" not in values, span.name
        assert not any(
            key.startswith(("llm.input_messages", "llm.output_messages")) for key in span.attributes
        )


def test_store_prompt_keeps_manual_content(collector: Collector):
    tallystick.initialize_tracing(
        api_key="sk_test", api_url="http://127.0.0.1:9", collector_endpoint=collector.url, store_prompt=True
    )
    try:
        with tallystick.tracing("acme"):
            with get_tracer().start_as_current_span("manual", attributes={"input.value": "kept"}):
                pass
        wait_for_spans(collector, 2)
    finally:
        tallystick.initialize_tracing(
            api_key="sk_test", api_url="http://127.0.0.1:9", collector_endpoint=collector.url
        )

    assert collector.named("manual")[0].attributes["input.value"] == "kept"


def test_openai_stream_usage_hidden_from_caller(collector: Collector):
    calls: list[dict] = []
    openai_sync, _ = openai_clients(calls)

    with tallystick.tracing("acme"):
        chunks = list(
            openai_sync.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    wait_for_spans(collector, 2)

    assert calls[0]["stream_options"] == {"include_usage": True}
    assert len(chunks) == len(STREAM_WORDS) + 1
    assert all(chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "".join(STREAM_WORDS)
    attributes = collector.named("ChatCompletion")[0].attributes
    assert attributes["llm.token_count.prompt"] == OPENAI_USAGE["prompt_tokens"]
    assert attributes["llm.token_count.completion"] == OPENAI_USAGE["completion_tokens"]


def test_openai_async_stream_usage(collector: Collector):
    calls: list[dict] = []
    _, openai_async = openai_clients(calls)

    async def scenario() -> list:
        async with tallystick.tracing("acme"):
            stream = await openai_async.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return [chunk async for chunk in stream]

    chunks = run_async(scenario())
    wait_for_spans(collector, 2)

    assert calls[0]["stream_options"] == {"include_usage": True}
    assert len(chunks) == len(STREAM_WORDS) + 1
    assert collector.named("ChatCompletion")[0].attributes["llm.token_count.completion"] == 300


def test_caller_stream_options_respected(collector: Collector):
    calls: list[dict] = []
    openai_sync, _ = openai_clients(calls)

    with tallystick.tracing("acme"):
        without = list(
            openai_sync.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": False},
            )
        )
        with_usage = list(
            openai_sync.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    assert calls[0]["stream_options"] == {"include_usage": False}
    assert len(without) == len(STREAM_WORDS) + 1
    assert len(with_usage) == len(STREAM_WORDS) + 2
    assert with_usage[-1].usage.prompt_tokens == OPENAI_USAGE["prompt_tokens"]


def test_anthropic_stream_helper_traced(collector: Collector):
    anthropic_sync, anthropic_async = anthropic_clients()
    request = {
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    }

    async def stream_async() -> str:
        async with anthropic_async.messages.stream(**request) as stream:
            return "".join([text async for text in stream.text_stream])

    with tallystick.tracing("acme"):
        with anthropic_sync.messages.stream(**request) as stream:
            sync_text = "".join(stream.text_stream)
        async_text = run_async(stream_async())
    wait_for_spans(collector, 3)

    assert sync_text == async_text == "".join(STREAM_WORDS)
    spans = collector.named("MessagesStream")
    assert len(spans) == 2
    for span in spans:
        assert span.attributes["external_customer_id"] == "acme"
        assert span.attributes["llm.token_count.prompt"] == 200 + 800 + 100
        assert span.attributes["llm.token_count.prompt_details.cache_read"] == 800
        assert span.attributes["llm.token_count.prompt_details.cache_write"] == 100
        assert span.attributes["llm.token_count.completion"] == 150


def test_tracing_token_joins_one_trace(collector: Collector):
    token = tallystick.generate_tracing_token()

    with tallystick.tracing("acme", tracing_token=token):
        pass
    with tallystick.tracing("acme", tracing_token=format(token, "032x")):
        pass
    wait_for_spans(collector, 2)

    roots = collector.named("tallystick.trace")
    assert [span.trace_id for span in roots] == [format(token, "032x")] * 2
    assert roots[0].parent_span_id != roots[1].parent_span_id


def test_decorator_sync_async_and_errors(collector: Collector):
    @tallystick.tracing("acme", external_product_id="chatbot")
    def sync_work(value: int) -> int:
        return value * 2

    @tallystick.tracing("acme")
    async def async_work() -> str:
        return "done"

    @tallystick.tracing("acme")
    def failing() -> None:
        raise RuntimeError("boom")

    assert sync_work(21) == 42
    assert run_async(async_work()) == "done"
    with pytest.raises(RuntimeError):
        failing()
    wait_for_spans(collector, 3)

    roots = collector.named("tallystick.trace")
    assert len(roots) == 3
    assert [span.status_code for span in roots] == [1, 1, 2]  # OK, OK, ERROR
    assert len({span.attributes["paid_scope_id"] for span in roots}) == 3


def test_decorator_rejects_generators():
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        tallystick.tracing("acme")(numbers)


def test_global_provider_untouched(collector: Collector):
    assert trace.get_tracer_provider() is not tracer_provider()


def test_export_failures_buffered_then_delivered(collector: Collector):
    collector.status = 503
    with tallystick.tracing("acme"):
        for index in range(5):
            with get_tracer().start_as_current_span(f"work-{index}"):
                pass
    started = time.monotonic()
    flush()
    assert time.monotonic() - started < 7.0
    assert stats()["spans_pending"] == 6

    collector.status = 200
    deadline = time.monotonic() + 15
    while stats()["spans_pending"] and time.monotonic() < deadline:
        time.sleep(0.1)

    assert stats()["spans_pending"] == 0
    assert sorted(span.name for span in collector.spans) == sorted(
        ["tallystick.trace"] + [f"work-{index}" for index in range(5)]
    )


def test_full_backlog_drops_oldest_and_counts(collector: Collector):
    tallystick.initialize_tracing(
        api_key="sk_test",
        api_url="http://127.0.0.1:9",
        collector_endpoint=collector.url,
        max_buffered_spans=3,
    )
    dropped_before = stats()["spans_dropped"]
    collector.status = 503
    try:
        for index in range(5):
            with get_tracer().start_as_current_span(f"work-{index}"):
                pass
        flush()
        assert stats()["spans_pending"] == 3
        assert stats()["spans_dropped"] - dropped_before == 2
    finally:
        collector.status = 200
        tallystick.initialize_tracing(
            api_key="sk_test", api_url="http://127.0.0.1:9", collector_endpoint=collector.url
        )


def test_one_context_shared_by_threads(collector: Collector):
    from concurrent.futures import ThreadPoolExecutor

    shared = tallystick.tracing("acme")

    def work(index: int) -> None:
        with shared:
            with get_tracer().start_as_current_span(f"thread-work-{index}"):
                time.sleep(0.01)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(8)))
    wait_for_spans(collector, 16)

    roots = {span.span_id: span for span in collector.named("tallystick.trace")}
    children = [span for span in collector.spans if span.name.startswith("thread-work-")]
    assert len(roots) == 8
    assert len(children) == 8
    assert all(child.parent_span_id in roots for child in children)


def test_unserializable_signal_data_rejected(collector: Collector):
    with tallystick.tracing("acme") as context:
        with pytest.raises(ValueError, match="JSON"):
            tallystick.signal("chat_message", data={"when": object()}, enable_cost_tracing=True)
    assert context.external_customer_id == "acme"


def test_raw_response_stream_left_alone(collector: Collector):
    calls: list[dict] = []
    openai_sync, _ = openai_clients(calls)

    with tallystick.tracing("acme"):
        raw = openai_sync.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = list(raw.parse())

    assert "stream_options" not in calls[0]
    assert len(chunks) == len(STREAM_WORDS) + 1
