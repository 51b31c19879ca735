"""Network-edge fakes for the SDK tests: LLM vendor APIs and a loopback OTLP collector.

The OpenAI and Anthropic fakes serve the real client libraries through their http_client
(openai uses httpx2, anthropic uses httpx) with realistic bodies, including usage with cached
tokens. The collector decodes the OTLP protobuf the SDK exports, so tests can read the span
attributes exactly as a server receives them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL = "claude-3-5-haiku-20241022"

# Usage the fakes report, so tests can compute expected costs by hand.
OPENAI_USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "cached_tokens": 1000}
ANTHROPIC_USAGE = {
    "input_tokens": 200,
    "output_tokens": 150,
    "cache_read_input_tokens": 800,
    "cache_creation_input_tokens": 100,
}


def openai_usage_json() -> dict[str, Any]:
    return {
        "prompt_tokens": OPENAI_USAGE["prompt_tokens"],
        "completion_tokens": OPENAI_USAGE["completion_tokens"],
        "total_tokens": OPENAI_USAGE["prompt_tokens"] + OPENAI_USAGE["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": OPENAI_USAGE["cached_tokens"], "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


STREAM_WORDS = ["Hello", " there", "!"]


def openai_chat_handler(
    request: Any, *, calls: list[dict[str, Any]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Respond to POST /v1/chat/completions like the OpenAI API (JSON or server-sent events)."""
    body = json.loads(request.content or b"{}")
    if calls is not None:
        calls.append(body)
    created = 1_767_000_000
    if not body.get("stream"):
        answer = {
            "id": "chatcmpl-fake1",
            "object": "chat.completion",
            "created": created,
            "model": OPENAI_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(STREAM_WORDS), "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": openai_usage_json(),
            "system_fingerprint": "fp_fake",
        }
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = []
    for index, word in enumerate(STREAM_WORDS):
        delta: dict[str, Any] = {"content": word}
        if index == 0:
            delta["role"] = "assistant"
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake2",
            "object": "chat.completion.chunk",
            "created": created,
            "model": OPENAI_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}],
        }
        if include_usage:
            chunk["usage"] = None
        events.append(chunk)
    events.append(
        {
            "id": "chatcmpl-fake2",
            "object": "chat.completion.chunk",
            "created": created,
            "model": OPENAI_MODEL,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}],
            **({"usage": None} if include_usage else {}),
        }
    )
    if include_usage:
        events.append(
            {
                "id": "chatcmpl-fake2",
                "object": "chat.completion.chunk",
                "created": created,
                "model": OPENAI_MODEL,
                "choices": [],
                "usage": openai_usage_json(),
            }
        )
    text = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    return 200, {"content-type": "text/event-stream"}, text.encode()


def anthropic_usage_json() -> dict[str, Any]:
    return {
        "input_tokens": ANTHROPIC_USAGE["input_tokens"],
        "output_tokens": ANTHROPIC_USAGE["output_tokens"],
        "cache_read_input_tokens": ANTHROPIC_USAGE["cache_read_input_tokens"],
        "cache_creation_input_tokens": ANTHROPIC_USAGE["cache_creation_input_tokens"],
    }


def anthropic_messages_handler(request: Any) -> tuple[int, dict[str, str], bytes]:
    """Respond to POST /v1/messages like the Anthropic API (JSON or server-sent events)."""
    body = json.loads(request.content or b"{}")
    message = {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": "".join(STREAM_WORDS)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage_json(),
    }
    if not body.get("stream"):
        return 200, {"content-type": "application/json"}, json.dumps(message).encode()

    start_usage = {**anthropic_usage_json(), "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    for word in STREAM_WORDS:
        events.append(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
            )
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return 200, {"content-type": "text/event-stream"}, text.encode()


def openai_clients(calls: list[dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """Return (OpenAI, AsyncOpenAI) clients whose HTTP is answered in-process."""
    import httpx2
    import openai

    def handle(request: httpx2.Request) -> httpx2.Response:
        status, headers, content = openai_chat_handler(request, calls=calls)
        return httpx2.Response(status, headers=headers, content=content)

    sync = openai.OpenAI(
        api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(handle)), max_retries=0
    )
    asynchronous = openai.AsyncOpenAI(
        api_key="sk-test",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handle)),
        max_retries=0,
    )
    return sync, asynchronous


def anthropic_clients() -> tuple[Any, Any]:
    """Return (Anthropic, AsyncAnthropic) clients whose HTTP is answered in-process."""
    import anthropic
    import httpx

    def handle(request: httpx.Request) -> httpx.Response:
        status, headers, content = anthropic_messages_handler(request)
        return httpx.Response(status, headers=headers, content=content)

    sync = anthropic.Anthropic(
        api_key="sk-ant-test", http_client=httpx.Client(transport=httpx.MockTransport(handle)), max_retries=0
    )
    asynchronous = anthropic.AsyncAnthropic(
        api_key="sk-ant-test",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        max_retries=0,
    )
    return sync, asynchronous


@dataclass
class ReceivedSpan:
    name: str
    scope: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int


@dataclass
class Collector:
    """A loopback OTLP/HTTP receiver that records spans and answers with `status`."""

    url: str
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    status: int = 200
    authorization: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.name == name]


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def start_collector() -> tuple[Collector, ThreadingHTTPServer]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    collector = Collector(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
            length = int(self.headers.get("Content-Length") or 0)
            payload = self.rfile.read(length)
            with collector.lock:
                collector.requests += 1
                collector.authorization.append(self.headers.get("Authorization", ""))
                status = collector.status
            if status != 200:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request = ExportTraceServiceRequest.FromString(payload)
            received = []
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        received.append(
                            ReceivedSpan(
                                name=span.name,
                                scope=scope_spans.scope.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes={item.key: _any_value(item.value) for item in span.attributes},
                                status_code=span.status.code,
                            )
                        )
            with collector.lock:
                collector.spans.extend(received)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector.url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return collector, server


@dataclass
class Chatbot:
    currency_id: str
    product_id: str


def create_chatbot(client: Any) -> Chatbot:
    """Create the guide's Chat Credits currency and ChatBot product (1 credit per chat_message)
    with a tallystick.Client."""
    currency = client.credits.create_currency(name="Chat Credits", key="chat_credits")
    product = client.products.create(name="ChatBot", external_id="chatbot", active=True)
    client.products.update(
        product["id"],
        product_attributes=[
            {
                "name": "Chat message",
                "pricing": {
                    "pricingType": "UsagePrepaidCredits",
                    "eventName": "chat_message",
                    "creditsCurrencyId": currency["id"],
                    "creditCost": 1,
                },
            }
        ],
    )
    return Chatbot(currency_id=currency["id"], product_id=product["id"])



def run_async(coroutine: Any) -> Any:
    """Run a coroutine to completion in a fresh event loop on a worker thread.

    asyncio.run() cannot start while another event loop runs in the calling thread, as the
    Playwright browser fixtures leave one running for the whole session. The worker gets a copy
    of the caller's context, so an enclosing `tracing(...)` scope still applies.
    """
    import asyncio
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, asyncio.run, coroutine).result()
