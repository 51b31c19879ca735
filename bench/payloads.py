"""Request bodies of the server benchmark: signal batches and OTLP trace exports.

Bodies are built in the load generator's process, so the server receives finished bytes.
Every signal and span carries a new idempotency key or span id, so each request is new work.
"""

from __future__ import annotations

import itertools
import os
import random
import time

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

EVENT_NAME = "chat_message"
PRODUCT_EXTERNAL_ID = "chatbot"
CURRENCY_KEY = "chat_credits"


def customer_external_id(number: int) -> str:
    return f"bench-{number}"


class SignalBodies:
    """Build POST /signals/bulk bodies of `batch` signals spread over `customers` customers."""

    def __init__(self, *, batch: int, customers: int, key_prefix: str, seed: int = 0) -> None:
        self.batch = batch
        self.customers = customers
        self.key_prefix = key_prefix
        self.counter = itertools.count()
        self.random = random.Random(seed)

    def next_body(self) -> bytes:
        signals = []
        for _ in range(self.batch):
            number = next(self.counter)
            customer = number % self.customers if self.customers > 1 else 0
            signals.append(
                {
                    "eventName": EVENT_NAME,
                    "customer": {"externalCustomerId": customer_external_id(customer)},
                    "attribution": {"externalProductId": PRODUCT_EXTERNAL_ID},
                    "idempotencyKey": f"{self.key_prefix}{number}",
                    "data": {"model": "gpt-4o-mini", "tokens": 100 + number % 900},
                }
            )
        return orjson.dumps({"signals": signals})

    def random_customer(self) -> str:
        return customer_external_id(self.random.randrange(self.customers))


def _attribute(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


class TraceBodies:
    """Build OTLP protobuf exports of `spans` LLM chat spans, as openinference-openai 0.1.66 sends.

    One template request is built once. Each body gets new trace and span ids and is serialized
    again, which costs about a millisecond for 512 spans.
    """

    def __init__(self, *, spans: int, customers: int) -> None:
        self.request = ExportTraceServiceRequest()
        resource_spans = self.request.resource_spans.add()
        resource_spans.resource.attributes.append(_attribute("service.name", "bench"))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "openinference.instrumentation.openai"
        scope_spans.scope.version = "0.1.66"
        start = time.time_ns() - 60 * 1_000_000_000
        for number in range(spans):
            span = scope_spans.spans.add()
            span.name = "ChatCompletion"
            span.kind = 3  # SPAN_KIND_CLIENT
            span.start_time_unix_nano = start + number * 1_000_000
            span.end_time_unix_nano = span.start_time_unix_nano + 500_000_000
            attributes = {
                "llm.system": "openai",
                "llm.model_name": "gpt-4o-mini-2024-07-18",
                "llm.token_count.prompt": 2000,
                "llm.token_count.completion": 300,
                "llm.token_count.total": 2300,
                "llm.token_count.prompt_details.cache_read": 1536,
                "openinference.span.kind": "LLM",
                "paid.sdk.version": "python-1.12.0",
                "external_customer_id": customer_external_id(number % max(customers, 1)),
                "external_agent_id": PRODUCT_EXTERNAL_ID,
            }
            span.attributes.extend(_attribute(key, value) for key, value in attributes.items())
        self.spans = scope_spans.spans

    def next_body(self) -> bytes:
        # Eight LLM calls per trace, as an agent run that makes several calls would send.
        trace_id = b""
        for number, span in enumerate(self.spans):
            if number % 8 == 0:
                trace_id = os.urandom(16)
            span.trace_id = trace_id
            span.span_id = os.urandom(8)
        return self.request.SerializeToString()
