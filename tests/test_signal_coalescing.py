"""One-signal requests that arrive while a write is running share the next transaction."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx

from tallystick.server.app import create_app
from tallystick.server.observability import SIGNAL_REQUESTS_PER_TRANSACTION
from tallystick.server.settings import Settings
from tests.blocking_helpers import signal_writes_blocked, wait_until
from tests.conftest import Tenant, make_tenant, serve_app
from tests.test_signals_api import (
    available_credits,
    chat_message,
    create_catalog,
    create_customer,
    customer_id_of,
    grant_credits,
    stored_signals,
)


def _transactions_and_requests() -> tuple[float, float]:
    """Return the histogram's count (shared transactions) and sum (requests in them)."""
    samples = {sample.name: sample.value for metric in SIGNAL_REQUESTS_PER_TRANSACTION.collect() for sample in metric.samples}
    return samples["tallystick_signal_requests_per_transaction_count"], samples["tallystick_signal_requests_per_transaction_sum"]


@contextmanager
def _server(store, database_url: str) -> Iterator[tuple[Any, Tenant]]:  # type: ignore[no-untyped-def]
    """A server writing one transaction at a time, and a tenant on it."""
    app = create_app(Settings(database_url=database_url, ingestion_concurrency=1), store=store)
    with serve_app(app, database_url) as running:
        tenant = make_tenant(running, store)
        try:
            yield app, tenant
        finally:
            tenant.http.close()


def _send_while_blocked(store, app, tenant: Tenant, signals: list[dict[str, Any]]) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """Send one request per signal while the first write waits on a lock held by the test.

    The first request takes the only slot and waits; the others queue behind it and are
    written together once the test lets go. Returns the responses in the order of `signals`.
    """
    responses: list[httpx.Response | None] = [None] * len(signals)

    def send(position: int) -> None:
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=30) as client:
            responses[position] = client.post("/signals/bulk", json={"signals": [signals[position]]})

    coalescer_queue = lambda: sum(len(queue) for queue in app.state.signal_coalescer._queues.values())
    threads = [threading.Thread(target=send, args=(position,)) for position in range(len(signals))]
    with signal_writes_blocked(store):
        threads[0].start()
        assert wait_until(lambda: app.state.ingestion_limiter.statistics().borrowed_tokens == 1)
        for thread in threads[1:]:
            thread.start()
        assert wait_until(lambda: coalescer_queue() == len(signals) - 1)
    for thread in threads:
        thread.join(timeout=30)
    assert all(response is not None for response in responses)
    return [response for response in responses if response is not None]


def _warm_up(tenant: Tenant) -> None:
    """Send one signal, so the server has made its ingestion slots and coalescer."""
    response = tenant.http.post("/signals/bulk", json={"signals": [chat_message("warm-up", idempotencyKey="warm-up")]})
    assert response.status_code == 200, response.text


def test_queued_requests_share_one_transaction(store, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with _server(store, database_url) as (app, tenant):
        catalog = create_catalog(store, tenant.organization_id)
        customer_id = create_customer(store, tenant.organization_id, "ada")
        grant_credits(store, catalog, customer_id, "100")
        _warm_up(tenant)
        transactions_before, requests_before = _transactions_and_requests()

        signals = [chat_message("ada", idempotencyKey=f"message-{number}") for number in range(8)]
        responses = _send_while_blocked(store, app, tenant, signals)

        assert [response.status_code for response in responses] == [200] * 8
        assert [response.json()["ingested"] for response in responses] == [1] * 8
        transactions, requests = _transactions_and_requests()
        # The first request alone, then the seven that queued behind it together.
        assert transactions - transactions_before == 2
        assert requests - requests_before == 8
        assert available_credits(store, catalog, customer_id) == Decimal(92)
        keys = {signal.idempotency_key for signal in stored_signals(store, tenant.organization_id)}
        assert {f"message-{number}" for number in range(8)} <= keys


def test_failed_signal_in_group_fails_alone(store, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with _server(store, database_url) as (app, tenant):
        catalog = create_catalog(store, tenant.organization_id)
        customer_id = create_customer(store, tenant.organization_id, "ada")
        grant_credits(store, catalog, customer_id, "100")
        _warm_up(tenant)
        unknown_product = chat_message("newcomer", idempotencyKey="bad", attribution={"externalProductId": "nope"})
        signals = [
            chat_message("ada", idempotencyKey="first"),
            chat_message("ada", idempotencyKey="second"),
            unknown_product,
            chat_message("ada", idempotencyKey="second"),
        ]

        responses = _send_while_blocked(store, app, tenant, signals)

        assert [response.status_code for response in responses] == [200, 200, 400, 200]
        assert responses[2].json()["code"] == "product_not_found"
        assert "attribution.externalProductId" in responses[2].json()["error"]
        assert responses[0].json()["ingested"] == 1
        # Written alone after the split, the repeated key still counts once: whichever of the
        # two requests arrived first stores it.
        repeated = sorted((response.json()["ingested"], response.json()["duplicates"]) for response in (responses[1], responses[3]))
        assert repeated == [(0, 1), (1, 0)]
        assert available_credits(store, catalog, customer_id) == Decimal(98)
        # The customer created for the failed signal is rolled back with it.
        assert customer_id_of(store, tenant.organization_id, "newcomer") is None


def test_duplicate_keys_in_group_count_once(store, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with _server(store, database_url) as (app, tenant):
        catalog = create_catalog(store, tenant.organization_id)
        customer_id = create_customer(store, tenant.organization_id, "ada")
        grant_credits(store, catalog, customer_id, "100")
        _warm_up(tenant)
        signals = [chat_message("ada", idempotencyKey="first")] + [
            chat_message("ada", idempotencyKey="same") for _ in range(4)
        ]

        responses = _send_while_blocked(store, app, tenant, signals)

        bodies = [response.json() for response in responses]
        assert [response.status_code for response in responses] == [200] * 5
        assert sum(body["ingested"] for body in bodies) == 2
        assert sum(body["duplicates"] for body in bodies) == 3
        assert available_credits(store, catalog, customer_id) == Decimal(98)
