"""SDK argument checks that fail before any request, and the messages of connection errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

import tallystick
from tallystick import ApiConnectionError, AsyncClient, Client, has_credits, hold_credits
from tests.sdk_fakes import run_async


class Recorder:
    """An httpx mock transport handler that stores each request and returns one balance."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/credits/holds"):
            body = {"allowed": True, "holdId": "hold_1", "available": 5, "availableDecimal": "5"}
            return httpx.Response(200, json=body)
        return httpx.Response(200, json={"data": [{"currencyKey": "chat_credits", "available": 5}]})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder) -> Iterator[Client]:
    with Client("http://127.0.0.1:8000", "sk_test", transport=httpx.MockTransport(recorder)) as made:
        yield made


@pytest.mark.parametrize("amount", [-1, Decimal("-0.5"), "-2", -0.5])
def test_has_credits_rejects_negative(client: Client, recorder: Recorder, amount):
    with pytest.raises(ValueError, match="invalid amount") as raised:
        has_credits("acme", "chat_credits", amount, client=client)

    assert repr(amount) in str(raised.value)
    assert recorder.requests == []


@pytest.mark.parametrize("amount", ["abc", "NaN", "Infinity", ""])
def test_has_credits_rejects_non_numbers(client: Client, recorder: Recorder, amount):
    with pytest.raises(ValueError, match="invalid amount") as raised:
        has_credits("acme", "chat_credits", amount, client=client)

    assert repr(amount) in str(raised.value)
    assert recorder.requests == []


@pytest.mark.parametrize("amount", [True, None, [1]])
def test_has_credits_rejects_other_types(client: Client, amount):
    with pytest.raises(TypeError, match="amount must be a number"):
        has_credits("acme", "chat_credits", amount, client=client)


def test_has_credits_accepts_zero_and_positive_amounts(client: Client):
    assert has_credits("acme", "chat_credits", 0, client=client) is True
    assert has_credits("acme", "chat_credits", 5, client=client) is True
    assert has_credits("acme", "chat_credits", "4.5", client=client) is True
    assert has_credits("acme", "chat_credits", 0.5, client=client) is True
    assert has_credits("acme", "chat_credits", 6, client=client) is False


@pytest.mark.parametrize("amount", [0, -1, "abc"])
def test_hold_credits_rejects_invalid_amount(client: Client, recorder: Recorder, amount):
    with pytest.raises(ValueError, match="invalid amount"):
        hold_credits("acme", "chat_credits", amount, client=client)

    assert recorder.requests == []


def test_hold_credits_sends_float_as_written(client: Client, recorder: Recorder):
    hold = hold_credits("acme", "chat_credits", 0.1, client=client)

    assert hold.amount == Decimal("0.1")
    assert json.loads(recorder.requests[0].content)["amount"] == 0.1
    assert b'"amount":0.1,' in recorder.requests[0].content


def test_grant_sends_float_as_written(client: Client, recorder: Recorder):
    client.customers.grant_credits(credit_currency_key="chat_credits", amount=0.1, external_customer_id="acme")

    assert b'"amount":0.1}' in recorder.requests[0].content


def test_grant_rejects_non_number(client: Client, recorder: Recorder):
    with pytest.raises(ValueError, match="invalid amount 'abc'"):
        client.customers.grant_credits(credit_currency_key="chat_credits", amount="abc", external_customer_id="acme")

    assert recorder.requests == []


@pytest.mark.parametrize("data", [[1, 2], "text", 5])
def test_signal_rejects_non_mapping_data(data):
    tallystick.initialize_tracing(api_key="sk_test", api_url="http://127.0.0.1:9")

    with pytest.raises(TypeError, match="data must be a dict"):
        tallystick.signal("chat_message", data, external_customer_id="acme")


@pytest.mark.parametrize("data", [[1, 2], "text"])
def test_signal_body_rejects_non_mapping_data(client: Client, recorder: Recorder, data):
    with pytest.raises(TypeError, match="data must be a dict"):
        client.signals.send("chat_message", external_customer_id="acme", data=data)

    assert recorder.requests == []


@pytest.mark.parametrize("url", ["127.0.0.1:8811", "localhost:8000", "http://[::1", "ftp://example.test", "http://"])
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_client_rejects_invalid_url(client_class, url):
    with pytest.raises(ValueError, match="invalid server URL") as raised:
        client_class(url, "sk_test")

    assert repr(url) in str(raised.value)


@pytest.mark.parametrize("timeout", [0, -1, 0.0])
@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_client_rejects_non_positive_timeout(client_class, timeout):
    with pytest.raises(ValueError, match="invalid timeout"):
        client_class("http://127.0.0.1:8000", "sk_test", timeout=timeout)


def test_client_accepts_url_forms():
    assert Client("http://127.0.0.1:8000/", "sk_test").api_url == "http://127.0.0.1:8000"
    assert Client("https://billing.example.test/api/v2", "sk_test").api_url == "https://billing.example.test"
    assert Client("http://[::1]:8000", "sk_test", timeout=None).api_url == "http://[::1]:8000"


@pytest.mark.parametrize("external_id", ["", ".", ".."])
def test_path_segment_rejects_dot_ids(client: Client, recorder: Recorder, external_id):
    calls = [
        lambda: client.customers.get_by_external_id(external_id),
        lambda: client.customers.credit_balances(external_customer_id=external_id),
        lambda: client.products.get_by_external_id(external_id),
        lambda: client.credits.get_hold(external_id),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid id") as raised:
            call()
        assert repr(external_id) in str(raised.value)

    assert recorder.requests == []


def test_path_segment_keeps_dotted_ids(client: Client, recorder: Recorder):
    client.customers.get_by_external_id("...")
    client.customers.get_by_external_id("a.b")

    assert [request.url.raw_path for request in recorder.requests] == [
        b"/api/v2/customers/external/...",
        b"/api/v2/customers/external/a.b",
    ]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Yield the root URL of a loopback port that accepts connections and never responds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_async_timeout_message_names_request(silent_server: str):
    async def fetch() -> None:
        async with AsyncClient(silent_server, "sk_test", timeout=0.3, max_retries=0) as client:
            await client.customers.get("cus_1")

    with pytest.raises(ApiConnectionError) as raised:
        run_async(fetch())

    message = str(raised.value)
    assert message.startswith("GET /customers/cus_1: request timed out after 0.3 s")
    assert "ReadTimeout" in message


def test_sync_timeout_message_names_request(silent_server: str):
    with Client(silent_server, "sk_test", timeout=0.3, max_retries=0) as client:
        with pytest.raises(ApiConnectionError) as raised:
            client.customers.get("cus_1")

    message = str(raised.value)
    assert message.startswith("GET /customers/cus_1: request timed out after 0.3 s")
    assert "ReadTimeout" in message


def test_client_names_url_from_environment(monkeypatch):
    monkeypatch.setenv("TALLYSTICK_API_URL", "127.0.0.1:8811")

    with pytest.raises(ValueError, match="invalid server URL") as raised:
        Client(api_key="sk_test")

    assert "'127.0.0.1:8811' (from TALLYSTICK_API_URL)" in str(raised.value)
