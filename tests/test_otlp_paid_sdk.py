"""End to end: paid-python tracing around real openai and anthropic clients, into /v1/traces.

The app part runs in a child process (this file run as a script), because paid-python's tracing
initialises once per process and reads PAID_OTEL_COLLECTOR_ENDPOINT when it is first imported.
The child answers the LLM clients' HTTP itself, with a loopback server that returns realistic
responses including cached tokens, and sends the integration guide's chat_message signal both
ways: as a `signal` span with cost tracing, and as a REST `cost_attributed_signal`.

Expected costs are computed by hand from the per-token prices of the genai-prices 0.2.5 data
(USD per million tokens):
- gpt-4o-mini: input 0.15, cached input 0.075, output 0.60
- gpt-4.1-mini: input 0.40, cached input 0.10, output 1.60
- claude-sonnet-4-5 (under 200k input tokens): input 3, cache write 3.75, cache read 0.30, output 15
- claude-3-5-haiku: input 0.80, cache write 1, cache read 0.08, output 4
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

M = Decimal("0.000001")

# LLM responses by requested model; usage as the vendors report it.
OPENAI_USAGE = {
    "gpt-4o-mini": {"prompt_tokens": 2000, "completion_tokens": 300, "total_tokens": 2300,
                    "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
    "gpt-4.1-mini": {"prompt_tokens": 1200, "completion_tokens": 250, "total_tokens": 1450,
                     "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
}
OPENAI_SERVED_MODEL = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14"}
# Anthropic's input_tokens exclude cache reads and writes.
ANTHROPIC_USAGE = {
    "claude-sonnet-4-5": {"input_tokens": 50, "output_tokens": 400,
                          "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 3000},
    "claude-3-5-haiku-20241022": {"input_tokens": 20, "output_tokens": 150,
                                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048},
}
ANTHROPIC_SERVED_MODEL = {"claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
                          "claude-3-5-haiku-20241022": "claude-3-5-haiku-20241022"}

# Event 1: gpt-4o-mini (464 uncached + 1536 cached input, 300 output) and claude-sonnet-4-5.
EVENT_ONE_COST = (
    464 * Decimal("0.15") * M + 1536 * Decimal("0.075") * M + 300 * Decimal("0.60") * M
    + 50 * 3 * M + 1000 * Decimal("3.75") * M + 3000 * Decimal("0.30") * M + 400 * 15 * M
)
# Event 2: gpt-4.1-mini (176 uncached + 1024 cached input, 250 output) and claude-3-5-haiku.
EVENT_TWO_COST = (
    176 * Decimal("0.40") * M + 1024 * Decimal("0.10") * M + 250 * Decimal("1.60") * M
    + 20 * Decimal("0.80") * M + 2048 * Decimal("0.08") * M + 150 * 4 * M
)


class _LlmStub(BaseHTTPRequestHandler):
    """Answer OpenAI chat completions and Anthropic messages like the real APIs do."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        length = int(self.headers.get("content-length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        model = request.get("model", "")
        if self.path.endswith("/chat/completions") and model in OPENAI_USAGE:
            body = {
                "id": "chatcmpl-test", "object": "chat.completion", "created": 1767225600,
                "model": OPENAI_SERVED_MODEL[model], "service_tier": "default", "system_fingerprint": "fp_test",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hello!"}}],
                "usage": OPENAI_USAGE[model],
            }
        elif self.path.endswith("/messages") and model in ANTHROPIC_USAGE:
            body = {
                "id": "msg_test", "type": "message", "role": "assistant", "model": ANTHROPIC_SERVED_MODEL[model],
                "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": ANTHROPIC_USAGE[model],
            }
        else:
            self.send_error(404)
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass


def run_chatbot(root: str, api_key: str) -> None:
    """Be the guide's chatbot: two chat messages, each with an OpenAI and an Anthropic call."""
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _LlmStub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    stub_url = f"http://127.0.0.1:{stub.server_port}"

    # Read by paid.tracing when it is first imported, so it is set before the import.
    os.environ["PAID_OTEL_COLLECTOR_ENDPOINT"] = root + "/v1/traces"
    os.environ["PAID_API_KEY"] = api_key
    import warnings

    import anthropic
    import openai
    from paid.tracing import cost_attributed_signal, initialize_tracing, paid_autoinstrument, paid_tracing, signal
    from paid.tracing.tracing import ProcessorSettings, get_paid_tracer_provider

    initialize_tracing(
        api_key=api_key,
        collector_endpoint=root + "/v1/traces",
        processor_settings=ProcessorSettings(export_mode="simple"),
    )
    paid_autoinstrument(libraries=["openai", "anthropic"])
    openai_client = openai.OpenAI(api_key="sk-test", base_url=stub_url + "/v1", max_retries=0)
    anthropic_client = anthropic.Anthropic(api_key="sk-ant-test", base_url=stub_url, max_retries=0)
    messages = [{"role": "user", "content": "Hello"}]

    with paid_tracing("user-1", external_product_id="chatbot"):
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        anthropic_client.messages.create(model="claude-sonnet-4-5", max_tokens=500, messages=messages)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            signal("chat_message", enable_cost_tracing=True, data={"conversation": "c1"})

    with paid_tracing("user-1", external_product_id="chatbot"):
        openai_client.chat.completions.create(model="gpt-4.1-mini", messages=messages)
        anthropic_client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=500, messages=messages)
        cost_attributed_signal(
            "chat_message", data={"conversation": "c2"}, idempotency_key="c2-m1", base_url_override=root + "/api/v2"
        )

    get_paid_tracer_provider().force_flush(10_000)
    stub.shutdown()


def test_chatbot_events_carry_exact_cost_and_margin(tenant, store, repo_root):
    from tests.checkout_helpers import create_checkout, hosted_page
    from tests.guide import create_guide_catalog

    catalog = create_guide_catalog(tenant.paid())
    # user-1 buys the Pro plan: $79 a month for 2,000 Chat Credits, so a credit is worth $0.0395.
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-1")
    bought = hosted_page(checkout).pay(catalog.plan_ids["pro"])
    assert bought.status_code in (200, 303), bought.text

    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PAID_", "OTEL_"))}
    child = subprocess.run(
        [sys.executable, str(repo_root / "tests" / "test_otlp_paid_sdk.py"), tenant.server.root, tenant.api_key],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-4000:]

    signals = tenant.http.get("/signals/").json()["data"]
    by_conversation = {item["data"]["conversation"]: item for item in signals}
    assert set(by_conversation) == {"c1", "c2"}
    span_signal, rest_signal = by_conversation["c1"], by_conversation["c2"]

    assert span_signal["traceId"] is not None
    assert span_signal["cost"] == {"amount": f"{EVENT_ONE_COST:.12f}", "currency": "USD", "status": "priced"}
    assert rest_signal["cost"] == {"amount": f"{EVENT_TWO_COST:.12f}", "currency": "USD", "status": "priced"}
    # Each chat message drew one credit of the Pro plan's grant: revenue $79 / 2,000.
    credit_value = Decimal(79) / 2000
    for item, cost in ((span_signal, EVENT_ONE_COST), (rest_signal, EVENT_TWO_COST)):
        assert item["creditsConsumed"] == "1"
        assert item["creditCurrencyId"] == catalog.currency_id
        assert item["revenue"] == {"amount": f"{credit_value:.12f}", "currency": "USD"}
        assert item["margin"] == {"amount": f"{credit_value - cost:.12f}", "currency": "USD"}

    day = tenant.http.get("/costs/aggregates", params={"groupBy": "customer"}).json()["data"]
    (user_one,) = [item for item in day if item["externalCustomerId"] == "user-1"]
    assert user_one["signals"] == 2
    assert Decimal(user_one["cost"]["amount"]) == EVENT_ONE_COST + EVENT_TWO_COST
    assert Decimal(user_one["revenue"]["amount"]) == 2 * credit_value

    traces = tenant.http.get("/traces", params={"externalCustomerId": "user-1"}).json()
    assert traces["meta"]["total"] == 4
    assert {item["model"] for item in traces["traces"]} == {
        "gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14", "claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022"
    }
    assert {item["signalId"] for item in traces["traces"]} == {span_signal["id"], rest_signal["id"]}


if __name__ == "__main__":
    run_chatbot(sys.argv[1], sys.argv[2])
