"""hold_credits and reserve_credits against the live server when the network between fails.

A transport in front of the real server loses responses or returns errors itself, and loopback
sockets stand in for a server that is down or does not respond. The helpers send an idempotency
key with every hold, retry once, and fall back to `if_unreachable` within a bounded time.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

import tallystick
from tallystick import Client
from tests.conftest import free_port

# Seconds the default client waits for each attempt in the tests that use it.
SHORT_TIMEOUT = 0.3


class FlakyEdge(httpx.BaseTransport):
    """A transport to the real server that spoils the first responses as `faults` lists.

    Each fault applies to one request, in order: "lose" lets the server process the request and
    then drops its response, as a connection broken on the way back does. A status code is
    returned by the edge itself, as a proxy in front of an overloaded server does, so the server
    never sees the request. Requests after the listed faults reach the server untouched.
    """

    def __init__(self, faults: list[str | int], retry_after: str | None = None) -> None:
        self.faults = list(faults)
        self.retry_after = retry_after
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        fault = self.faults.pop(0) if self.faults else None

        if isinstance(fault, int):
            headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return httpx.Response(fault, json={"error": "unavailable", "code": "unavailable"}, headers=headers)

        response = self.inner.handle_request(request)
        if fault == "lose":
            # Read the whole response first, so the server has finished with the request.
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return response

    def close(self) -> None:
        self.inner.close()

    def idempotency_keys(self) -> list[str]:
        return [json.loads(request.content)["idempotencyKey"] for request in self.requests]


class SilentServer:
    """A loopback socket that accepts connections, counts them and never responds."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def acme(tenant) -> Iterator[Client]:  # type: ignore[no-untyped-def]
    """A direct client of the tenant whose customer acme has 10 chat credits."""
    with Client(tenant.server.root, tenant.api_key) as client:
        client.credits.create_currency(name="Chat Credits", key="chat_credits")
        client.customers.create(name="Acme", external_id="acme")
        client.customers.grant_credits(external_customer_id="acme", credit_currency_key="chat_credits", amount=10)
        yield client


@pytest.fixture
def default_client_at(tenant) -> Iterator[Callable[[str], None]]:  # type: ignore[no-untyped-def]
    """Point the helpers' default client at another server root, then back at the tenant's."""

    def configure(root: str) -> None:
        tallystick.initialize_tracing(api_key="sk_test", api_url=root, signal_timeout=SHORT_TIMEOUT)

    yield configure
    tallystick.initialize_tracing(api_key=tenant.api_key, api_url=tenant.server.root)


def balance(client: Client) -> tuple[Decimal, Decimal]:
    """Return acme's available and held chat credits."""
    [row] = client.customers.credit_balances(external_customer_id="acme")["data"]
    return Decimal(row["availableDecimal"]), Decimal(row["heldDecimal"])


def flaky_client(tenant, edge: FlakyEdge) -> Client:  # type: ignore[no-untyped-def]
    # max_retries=0, as the helpers' default client has: the helpers retry by their own policy.
    return Client(tenant.server.root, tenant.api_key, transport=edge, max_retries=0)


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == "request.retrying"]


def test_hold_lost_response_reserves_once(tenant, acme: Client):  # type: ignore[no-untyped-def]
    edge = FlakyEdge(["lose"])

    with flaky_client(tenant, edge) as client:
        hold = tallystick.hold_credits("acme", "chat_credits", 4, client=client)

    keys = edge.idempotency_keys()
    assert hold.allowed is True
    assert hold.hold_id is not None
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert keys[0].startswith("ts_")
    assert balance(acme) == (Decimal(6), Decimal(4))
    assert acme.credits.get_hold(hold.hold_id)["status"] == "active"


def test_reserve_lost_response_releases_once(tenant, acme: Client):  # type: ignore[no-untyped-def]
    edge = FlakyEdge(["lose"])

    with flaky_client(tenant, edge) as client:
        with tallystick.reserve_credits("acme", "chat_credits", 3, client=client) as hold:
            during = balance(acme)

    assert hold.allowed is True
    assert hold.hold_id is not None
    assert during == (Decimal(7), Decimal(3))
    assert hold.released is True
    assert balance(acme) == (Decimal(10), Decimal(0))
    assert acme.credits.get_hold(hold.hold_id)["status"] == "released"


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, "0")])
def test_hold_retried_after_error_status(  # type: ignore[no-untyped-def]
    tenant, acme: Client, status: int, retry_after: str | None
):
    edge = FlakyEdge([status], retry_after=retry_after)

    with flaky_client(tenant, edge) as client:
        hold = tallystick.hold_credits("acme", "chat_credits", 2, client=client)

    assert hold.allowed is True
    assert hold.hold_id is not None
    assert len(edge.requests) == 2
    assert balance(acme) == (Decimal(8), Decimal(2))


@pytest.mark.parametrize("if_unreachable", [True, False])
def test_hold_long_retry_after_falls_back(tenant, acme: Client, if_unreachable: bool):  # type: ignore[no-untyped-def]
    edge = FlakyEdge([429], retry_after="5")

    with flaky_client(tenant, edge) as client:
        started = time.monotonic()
        hold = tallystick.hold_credits("acme", "chat_credits", 2, client=client, if_unreachable=if_unreachable)
        seconds = time.monotonic() - started

    assert hold.allowed is if_unreachable
    assert hold.hold_id is None
    assert len(edge.requests) == 1
    assert seconds < 1.0
    assert balance(acme) == (Decimal(10), Decimal(0))


@pytest.mark.parametrize(("status", "expected"), [(429, False), (503, True)])
def test_hold_rate_limited_own_fallback(  # type: ignore[no-untyped-def]
    tenant, acme: Client, status: int, expected: bool
):
    # Both attempts fail, so the helper falls back. if_rate_limited applies to a 429 only.
    edge = FlakyEdge([status, status], retry_after="0")

    with flaky_client(tenant, edge) as client:
        hold = tallystick.hold_credits("acme", "chat_credits", 2, client=client, if_rate_limited=False)

    assert hold.allowed is expected
    assert hold.hold_id is None
    assert len(edge.requests) == 2
    assert balance(acme) == (Decimal(10), Decimal(0))


@pytest.mark.parametrize(("if_rate_limited", "expected"), [(None, True), (False, False), (True, True)])
def test_check_rate_limited_fallback(  # type: ignore[no-untyped-def]
    tenant, acme: Client, if_rate_limited: bool | None, expected: bool
):
    edge = FlakyEdge([429], retry_after="0")

    with flaky_client(tenant, edge) as client:
        allowed = tallystick.has_credits("acme", "chat_credits", 50, client=client, if_rate_limited=if_rate_limited)

    # acme has 10 credits, so a True here can only come from the fallback.
    assert allowed is expected
    assert len(edge.requests) == 1


def test_rate_limited_allowed_when_outage_denied(tenant, acme: Client):  # type: ignore[no-untyped-def]
    edge = FlakyEdge([429, 429, 429], retry_after="0")

    with flaky_client(tenant, edge) as client:
        hold = tallystick.hold_credits(
            "acme", "chat_credits", 2, client=client, if_unreachable=False, if_rate_limited=True
        )
        allowed = tallystick.has_credits(
            "acme", "chat_credits", 50, client=client, if_unreachable=False, if_rate_limited=True
        )

    assert hold.allowed is True
    assert hold.hold_id is None
    assert allowed is True
    assert balance(acme) == (Decimal(10), Decimal(0))


def test_reserve_rate_limited_denied(tenant, acme: Client):  # type: ignore[no-untyped-def]
    edge = FlakyEdge([429, 429], retry_after="0")

    with flaky_client(tenant, edge) as client:
        with tallystick.reserve_credits("acme", "chat_credits", 2, client=client, if_rate_limited=False) as hold:
            allowed = hold.allowed

    assert allowed is False
    assert hold.hold_id is None
    assert balance(acme) == (Decimal(10), Decimal(0))


def test_hold_caller_key_places_one_hold(acme: Client):
    first = tallystick.hold_credits("acme", "chat_credits", 2, idempotency_key="message-7", client=acme)
    repeated = tallystick.hold_credits("acme", "chat_credits", 2, idempotency_key="message-7", client=acme)

    assert first.allowed is True
    assert first.hold_id is not None
    assert repeated.hold_id == first.hold_id
    assert balance(acme) == (Decimal(8), Decimal(2))


def test_hold_unreachable_server_falls_back(  # type: ignore[no-untyped-def]
    default_client_at, caplog: pytest.LogCaptureFixture
):
    # Nothing listens on a port that free_port() just released, so connections are refused.
    default_client_at(f"http://127.0.0.1:{free_port()}")
    caplog.set_level(logging.INFO, logger="tallystick")

    started = time.monotonic()
    allowed = tallystick.hold_credits("acme", "chat_credits", 2)
    denied = tallystick.hold_credits("acme", "chat_credits", 2, if_unreachable=False)
    seconds = time.monotonic() - started

    assert allowed.allowed is True
    assert allowed.hold_id is None
    assert denied.allowed is False
    assert denied.hold_id is None
    # One retry per call, after about 0.1 s.
    assert len(retry_records(caplog)) == 2
    assert seconds < 2.0


def test_hold_timeout_not_retried(default_client_at, caplog: pytest.LogCaptureFixture):  # type: ignore[no-untyped-def]
    silent = SilentServer()
    default_client_at(silent.root)
    caplog.set_level(logging.INFO, logger="tallystick")

    try:
        started = time.monotonic()
        hold = tallystick.hold_credits("acme", "chat_credits", 2)
        seconds = time.monotonic() - started
    finally:
        silent.close()

    assert hold.allowed is True
    assert hold.hold_id is None
    assert len(silent.connections) == 1
    assert retry_records(caplog) == []
    assert seconds < SHORT_TIMEOUT + 0.7
