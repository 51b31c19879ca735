"""Client and AsyncClient against the live server, and their retry rules at the network edge."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from tallystick import ApiConnectionError, ApiError, AsyncClient, Client
from tests.sdk_fakes import create_chatbot, run_async


@pytest.fixture
def client(tenant):  # type: ignore[no-untyped-def]
    with Client(tenant.server.root, tenant.api_key) as made:
        yield made


def test_client_customer_round_trip(client: Client):
    created = client.customers.create(name="Acme", external_id="acme", email="billing@acme.test")

    by_external_id = client.customers.get_by_external_id("acme")
    listed = client.customers.list(limit=10)

    assert by_external_id["id"] == created["id"]
    assert by_external_id["email"] == "billing@acme.test"
    assert [item["id"] for item in listed["data"]] == [created["id"]]
    assert listed["pagination"]["total"] == 1


def test_client_not_found_raises_api_error(client: Client):
    with pytest.raises(ApiError) as raised:
        client.customers.get_by_external_id("nobody")

    assert raised.value.status == 404
    assert raised.value.code == "not_found"
    assert "nobody" in raised.value.message


def test_client_wrong_key_raises_401(tenant):  # type: ignore[no-untyped-def]
    with Client(tenant.server.root, "sk_wrong") as client, pytest.raises(ApiError) as raised:
        client.customers.list()

    assert raised.value.status == 401


def test_client_reads_environment(tenant, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLYSTICK_API_URL", tenant.server.root)
    monkeypatch.setenv("TALLYSTICK_API_KEY", tenant.api_key)

    with Client() as client:
        assert client.api_url == tenant.server.root
        assert client.customers.list()["data"] == []


def test_client_grant_keeps_decimals_exact(client: Client):
    create_chatbot(client)
    client.customers.create(name="Acme", external_id="acme")

    client.customers.grant_credits(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=Decimal("2.000001")
    )
    balances = client.customers.credit_balances(external_customer_id="acme")["data"]

    assert len(balances) == 1
    assert balances[0]["currencyKey"] == "chat_credits"
    assert Decimal(balances[0]["availableDecimal"]) == Decimal("2.000001")


def test_client_grant_unit_value(client: Client):
    create_chatbot(client)
    client.customers.create(name="Acme", external_id="acme")

    exact = client.customers.grant_credits(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=5, unit_value=Decimal("0.000000000001")
    )
    text = client.customers.grant_credits(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=5, unit_value="0.05"
    )
    with pytest.raises(ApiError) as raised:
        client.customers.grant_credits(
            external_customer_id="acme", credit_currency_key="chat_credits", amount=5, unit_value="-1"
        )

    assert exact["grant"]["unitValue"] == "0.000000000001"
    assert text["grant"]["unitValue"] == "0.050000000000"
    assert raised.value.status == 400
    assert "unitValue" in raised.value.message
    [balance] = client.customers.credit_balances(external_customer_id="acme")["data"]
    assert [grant["unitValue"] for grant in balance["grants"]] == ["0.000000000001", "0.050000000000"]


def test_client_signal_counts_repeated_key_once(client: Client):
    create_chatbot(client)
    client.customers.create(name="Acme", external_id="acme")
    client.customers.grant_credits(external_customer_id="acme", credit_currency_key="chat_credits", amount=5)

    first = client.signals.send(
        "chat_message", external_customer_id="acme", external_product_id="chatbot", idempotency_key="msg-1"
    )
    repeated = client.signals.send(
        "chat_message", external_customer_id="acme", external_product_id="chatbot", idempotency_key="msg-1"
    )
    balances = client.customers.credit_balances(external_customer_id="acme")["data"]
    listed = client.signals.list(external_customer_id="acme")

    assert (first["ingested"], first["duplicates"]) == (1, 0)
    assert (repeated["ingested"], repeated["duplicates"]) == (0, 1)
    assert Decimal(balances[0]["availableDecimal"]) == 4
    assert listed["pagination"]["total"] == 1


def test_client_hold_reserves_then_releases(client: Client):
    create_chatbot(client)
    client.customers.create(name="Acme", external_id="acme")
    client.customers.grant_credits(external_customer_id="acme", credit_currency_key="chat_credits", amount=3)

    allowed = client.credits.hold(external_customer_id="acme", credit_currency_key="chat_credits", amount=2)
    denied = client.credits.hold(external_customer_id="acme", credit_currency_key="chat_credits", amount=2)
    released = client.credits.release_hold(allowed["holdId"])
    after = client.customers.credit_balances(external_customer_id="acme")["data"]

    assert allowed["allowed"] is True
    assert Decimal(allowed["availableDecimal"]) == 1
    assert denied["allowed"] is False
    assert denied["holdId"] is None
    assert released["status"] == "released"
    assert Decimal(after[0]["availableDecimal"]) == 3


def test_client_hold_with_key_reserves_once(client: Client):
    create_chatbot(client)
    client.customers.create(name="Acme", external_id="acme")
    client.customers.grant_credits(external_customer_id="acme", credit_currency_key="chat_credits", amount=3)

    first = client.credits.hold(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=2, idempotency_key="call-1"
    )
    retried = client.credits.hold(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=2, idempotency_key="call-1"
    )
    after = client.customers.credit_balances(external_customer_id="acme")["data"]

    assert first["allowed"] is True
    assert retried["allowed"] is True
    assert retried["holdId"] == first["holdId"]
    assert Decimal(after[0]["availableDecimal"]) == 1
    assert Decimal(after[0]["heldDecimal"]) == 2


def test_async_keyed_hold_reserves_once(tenant):  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[dict, dict]:
        async with AsyncClient(tenant.server.root, tenant.api_key) as client:
            await client.credits.create_currency(name="Chat Credits", key="chat_credits")
            await client.customers.create(name="Acme", external_id="acme")
            await client.customers.grant_credits(
                external_customer_id="acme", credit_currency_key="chat_credits", amount=3
            )
            placed = [
                await client.credits.hold(
                    external_customer_id="acme", credit_currency_key="chat_credits", amount=2, idempotency_key="call-1"
                )
                for _ in range(2)
            ]
            return placed[0], placed[1]

    first, retried = run_async(scenario())

    assert first["allowed"] is True
    assert retried["holdId"] == first["holdId"]


def test_async_client_same_requests(tenant):  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[dict, dict]:
        async with AsyncClient(tenant.server.root, tenant.api_key) as client:
            created = await client.customers.create(name="Acme", external_id="acme")
            fetched = await client.customers.get(created["id"])
            return created, fetched

    created, fetched = run_async(scenario())

    assert fetched["id"] == created["id"]
    assert fetched["externalId"] == "acme"


def test_async_client_not_found(tenant):  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        async with AsyncClient(tenant.server.root, tenant.api_key) as client:
            await client.products.get_by_external_id("missing")

    with pytest.raises(ApiError) as raised:
        run_async(scenario())

    assert raised.value.status == 404


# Retry rules, with the server replaced by httpx.MockTransport.


def scripted(responses: list[int | Exception]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that returns the next status for each request, or raises the next error."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        outcome = responses[min(len(seen), len(responses)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        body = (
            {"ingested": 1, "duplicates": 0, "failed": 0}
            if outcome < 300
            else {"error": "failed", "code": "x"}
        )
        return httpx.Response(outcome, json=body, headers={"Retry-After": "0"})

    return httpx.MockTransport(handle), seen


def fast_client(transport: httpx.MockTransport, max_retries: int = 2) -> Client:
    client = Client("http://127.0.0.1:9", "k", transport=transport, max_retries=max_retries)
    # Keep the test fast: no backoff between attempts.
    client._sender.retry = type(client._sender.retry)(
        max_retries=max_retries, initial_delay=0.0, max_delay=0.0
    )
    return client


def test_signal_retry_reuses_idempotency_key():
    transport, seen = scripted([503, httpx.ConnectError("refused"), 200])

    result = fast_client(transport).signals.send("chat_message", external_customer_id="acme")

    keys = [json.loads(request.content)["signals"][0]["idempotencyKey"] for request in seen]
    assert result["ingested"] == 1
    assert len(seen) == 3
    assert len(set(keys)) == 1
    assert keys[0].startswith("ts_")


def test_signal_keeps_caller_idempotency_key():
    transport, seen = scripted([500, 200])

    fast_client(transport).signals.send("chat_message", external_customer_id="acme", idempotency_key="mine")

    assert [json.loads(request.content)["signals"][0]["idempotencyKey"] for request in seen] == [
        "mine",
        "mine",
    ]


def test_grant_not_retried_after_server_error():
    transport, seen = scripted([500, 200])

    with pytest.raises(ApiError) as raised:
        fast_client(transport).customers.grant_credits(
            external_customer_id="acme", credit_currency_key="chat_credits", amount=1
        )

    assert raised.value.status == 500
    assert len(seen) == 1


def test_grant_with_key_retried_after_server_error():
    transport, seen = scripted([500, 200])

    fast_client(transport).customers.grant_credits(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=1, idempotency_key="bonus-1"
    )

    assert len(seen) == 2
    assert [json.loads(request.content)["idempotencyKey"] for request in seen] == ["bonus-1", "bonus-1"]


def test_keyed_hold_retried_after_error():
    transport, seen = scripted([500, 201])

    fast_client(transport).credits.hold(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=1, idempotency_key="call-1"
    )

    assert len(seen) == 2
    assert [json.loads(request.content)["idempotencyKey"] for request in seen] == ["call-1", "call-1"]


def test_grant_retried_when_connection_refused():
    transport, seen = scripted([httpx.ConnectError("refused"), 429, 200])

    fast_client(transport).customers.grant_credits(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=1
    )

    assert len(seen) == 3


def test_long_retry_after_not_retried():
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, json={"error": "rate limited", "code": "rate_limited"}, headers={"Retry-After": "60"})

    with pytest.raises(ApiError) as raised:
        fast_client(httpx.MockTransport(handle)).signals.send("chat_message", external_customer_id="acme")

    assert raised.value.status == 429
    assert len(seen) == 1


def test_get_retries_are_bounded():
    transport, seen = scripted([503])

    with pytest.raises(ApiError) as raised:
        fast_client(transport, max_retries=2).customers.list()

    assert raised.value.status == 503
    assert len(seen) == 3


def test_unreachable_server_raises_connection_error():
    transport, seen = scripted([httpx.ConnectError("refused")])

    with pytest.raises(ApiConnectionError):
        fast_client(transport, max_retries=1).customers.list()

    assert len(seen) == 2


def test_decimal_sent_as_exact_number():
    transport, seen = scripted([200])

    fast_client(transport).customers.grant_credits(
        external_customer_id="acme", credit_currency_key="chat_credits", amount=Decimal("0.1")
    )

    assert b'"amount":0.1' in seen[0].content
    assert json.loads(seen[0].content, parse_float=Decimal)["amount"] == Decimal("0.1")
