"""The integration guide with the SDK against the live server: real openai and anthropic
clients (their HTTP served in-process), traced costs attributed to chat_message signals,
credits consumed, balance checks and holds.

Expected costs come from the published per-token prices (USD per million tokens):
- gpt-4o-mini-2024-07-18: input 0.15, cached input 0.075, output 0.60. The fake reports 1,200
  prompt tokens of which 1,000 cached, and 300 completion tokens:
  200 x 0.15 + 1,000 x 0.075 + 300 x 0.60 = 285 -> $0.000285.
- claude-3-5-haiku-20241022: input 0.80, cache read 0.08, cache write 1.00, output 4.00. The fake
  reports 200 input, 800 cache read, 100 cache write and 150 output tokens:
  200 x 0.80 + 800 x 0.08 + 100 x 1.00 + 150 x 4.00 = 924 -> $0.000924.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import tallystick
from tallystick import Client
from tallystick.tracing import flush, stats
from tests.sdk_fakes import anthropic_clients, create_chatbot, openai_clients, run_async

OPENAI_CALL_COST = Decimal("0.000285")
ANTHROPIC_CALL_COST = Decimal("0.000924")
MESSAGES = [{"role": "user", "content": "How do I reset my password?"}]


@pytest.fixture
def client(tenant) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    tallystick.initialize_tracing(api_key=tenant.api_key, api_url=tenant.server.root)
    tallystick.autoinstrument(["openai", "anthropic"])
    with Client(tenant.server.root, tenant.api_key) as made:
        create_chatbot(made)
        made.customers.create(name="Acme", external_id="acme")
        made.customers.grant_credits(
            external_customer_id="acme", credit_currency_key="chat_credits", amount=10
        )
        yield made


def available(client: Client) -> Decimal:
    balances = client.customers.credit_balances(external_customer_id="acme")["data"]
    return sum((Decimal(item["availableDecimal"]) for item in balances), Decimal(0))


def signal_by_key(client: Client, key: str) -> dict[str, Any]:
    for item in client.signals.list(external_customer_id="acme", limit=100)["data"]:
        if item.get("idempotencyKey") == key:
            return item
    raise AssertionError(f"signal {key} not found")


def settled_cost(client: Client, key: str, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until the signal's cost is priced (spans are exported in the background)."""
    deadline = time.monotonic() + timeout
    item = signal_by_key(client, key)
    while time.monotonic() < deadline:
        flush()
        item = signal_by_key(client, key)
        cost = item.get("cost") or {}
        if cost.get("status") == "priced" and Decimal(cost.get("amount") or 0) > 0:
            return item
        time.sleep(0.2)
    return item


def test_openai_call_cost_attributed(client: Client):
    openai_sync, _ = openai_clients()

    with tallystick.tracing("acme", external_product_id="chatbot"):
        reply = openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        receipt = tallystick.signal("chat_message", data={"chars": 12}, enable_cost_tracing=True)

    assert reply.choices[0].message.content == "Hello there!"
    assert receipt.status == "sent"
    assert available(client) == 9
    item = settled_cost(client, receipt.idempotency_key)
    assert Decimal(item["cost"]["amount"]) == OPENAI_CALL_COST
    assert item["cost"]["currency"] == "USD"
    assert Decimal(item["creditsConsumed"]) == 1


def test_openai_async_stream_cost_attributed(client: Client):
    _, openai_async = openai_clients()

    async def chat() -> tuple[str, tallystick.SignalReceipt]:
        async with tallystick.tracing("acme", external_product_id="chatbot"):
            stream = await openai_async.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
            receipt = await tallystick.asignal("chat_message", enable_cost_tracing=True)
            return text, receipt

    text, receipt = run_async(chat())

    assert text == "Hello there!"
    assert receipt.status == "sent"
    item = settled_cost(client, receipt.idempotency_key)
    assert Decimal(item["cost"]["amount"]) == OPENAI_CALL_COST


def test_anthropic_call_cost_attributed(client: Client):
    anthropic_sync, _ = anthropic_clients()

    with tallystick.tracing("acme", external_product_id="chatbot"):
        anthropic_sync.messages.create(model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES)
        receipt = tallystick.signal("chat_message", enable_cost_tracing=True)

    item = settled_cost(client, receipt.idempotency_key)
    assert Decimal(item["cost"]["amount"]) == ANTHROPIC_CALL_COST
    assert available(client) == 9


def test_anthropic_async_stream_cost_attributed(client: Client):
    _, anthropic_async = anthropic_clients()

    async def chat() -> tallystick.SignalReceipt:
        async with tallystick.tracing("acme", external_product_id="chatbot"):
            async with anthropic_async.messages.stream(
                model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES
            ) as stream:
                assert "".join([text async for text in stream.text_stream]) == "Hello there!"
            return await tallystick.asignal("chat_message", enable_cost_tracing=True)

    receipt = run_async(chat())

    item = settled_cost(client, receipt.idempotency_key)
    assert Decimal(item["cost"]["amount"]) == ANTHROPIC_CALL_COST


def test_each_signal_takes_its_own_calls(client: Client):
    openai_sync, _ = openai_clients()
    anthropic_sync, _ = anthropic_clients()

    with tallystick.tracing("acme", external_product_id="chatbot"):
        openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        first = tallystick.signal("chat_message", enable_cost_tracing=True)
        anthropic_sync.messages.create(model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES)
        openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        second = tallystick.signal("chat_message", enable_cost_tracing=True)

    assert first.scope_id != second.scope_id
    first_item = settled_cost(client, first.idempotency_key)
    second_item = settled_cost(client, second.idempotency_key)
    assert Decimal(first_item["cost"]["amount"]) == OPENAI_CALL_COST
    assert Decimal(second_item["cost"]["amount"]) == OPENAI_CALL_COST + ANTHROPIC_CALL_COST
    assert available(client) == 8


def test_spans_accepted_by_server(client: Client):
    openai_sync, _ = openai_clients()
    anthropic_sync, _ = anthropic_clients()
    exported_before = stats()["spans_exported"]

    with tallystick.tracing("acme", external_product_id="chatbot"):
        openai_sync.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        anthropic_sync.messages.create(model="claude-3-5-haiku-20241022", max_tokens=100, messages=MESSAGES)
    delivered = flush()

    assert delivered is True
    assert stats()["spans_pending"] == 0
    assert stats()["spans_exported"] - exported_before == 3


def test_signal_data_carries_scope_id(client: Client):
    with tallystick.tracing("acme", external_product_id="chatbot"):
        receipt = tallystick.signal("chat_message", data={"chars": 12}, enable_cost_tracing=True)
        plain = tallystick.signal("chat_message")

    item = signal_by_key(client, receipt.idempotency_key)
    plain_item = signal_by_key(client, plain.idempotency_key)
    assert item["data"] == {"chars": 12, "paid": {"paid_scope_id": receipt.scope_id}}
    assert item["externalProductId"] == "chatbot"
    assert plain_item.get("data") in (None, {})
    assert available(client) == 8


def test_has_credits_stops_at_zero(client: Client):
    sent = 0
    for _ in range(15):
        if not tallystick.has_credits("acme", "chat_credits"):
            break
        with tallystick.tracing("acme", external_product_id="chatbot"):
            assert tallystick.signal("chat_message").status == "sent"
        sent += 1

    pending = client.customers.pending_consumption(external_customer_id="acme")
    assert sent == 10
    assert available(client) == 0
    assert pending["pagination"]["total"] == 0
    assert tallystick.has_credits("acme", "chat_credits", amount=0) is True
    assert tallystick.has_credits("nobody", "chat_credits") is False


def test_reserve_then_settle(client: Client):
    with tallystick.reserve_credits("acme", "chat_credits", 4) as hold:
        assert hold.allowed is True
        assert hold.available == 6
        assert tallystick.has_credits("acme", "chat_credits", 7) is False
        receipt = hold.settle("chat_message", external_product_id="chatbot")

    with tallystick.reserve_credits("acme", "chat_credits", 20) as denied:
        assert denied.allowed is False

    assert receipt.status == "sent"
    assert client.credits.get_hold(hold.hold_id or "")["status"] == "settled"
    # The signal costs one credit, so settling the 4-credit hold gives 3 back.
    assert available(client) == 9


def test_unsettled_hold_released(client: Client):
    with tallystick.reserve_credits("acme", "chat_credits", 3) as hold:
        assert available(client) == 7

    assert hold.released is True
    assert available(client) == 10


def test_rejected_signal_reported(client: Client):
    receipt = tallystick.signal(
        "chat_message", external_customer_id="acme", external_product_id="no-such-product"
    )

    assert receipt.status == "rejected"
    assert receipt.message is not None
    assert receipt.message.startswith("HTTP 400: Invalid signals[0].attribution.externalProductId 'no-such-product'")
    assert "{" not in receipt.message
    assert available(client) == 10


def test_signal_needs_a_customer(client: Client):
    with pytest.raises(ValueError, match="customer"):
        tallystick.signal("chat_message")
    with pytest.raises(ValueError, match="tracing"):
        tallystick.signal("chat_message", external_customer_id="acme", enable_cost_tracing=True)


def test_repeated_signal_key_counts_once(client: Client):
    with tallystick.tracing("acme", external_product_id="chatbot"):
        first = tallystick.signal("chat_message", idempotency_key="message-7")
        repeated = tallystick.signal("chat_message", idempotency_key="message-7")

    assert first.status == "sent"
    assert repeated.status == "duplicate"
    assert available(client) == 9
