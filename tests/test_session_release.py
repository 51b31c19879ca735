"""Many concurrent requests: every request's connection goes back to the pool, under any load."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.test_signals_api import create_catalog, create_customer, grant_credits

# More concurrent requests than the server has worker threads (40) and pooled connections.
CONCURRENT_REQUESTS = 120


def _statuses_of_concurrent(tenant, method: str, path: str, body: dict[str, Any] | None = None) -> list[int]:  # type: ignore[no-untyped-def]
    """Send CONCURRENT_REQUESTS identical requests at once; return their statuses, 0 for a timeout."""
    statuses: list[int] = []
    start = threading.Barrier(CONCURRENT_REQUESTS)

    def send() -> None:
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=20) as client:
            start.wait()
            try:
                statuses.append(client.request(method, path, json=body).status_code)
            except httpx.TimeoutException:
                statuses.append(0)

    threads = [threading.Thread(target=send) for _ in range(CONCURRENT_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def _customer_with_credits(tenant, store, amount: str) -> None:  # type: ignore[no-untyped-def]
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "ada")
    grant_credits(store, catalog, customer_id, amount)


def test_concurrent_reads_all_answered(tenant, store) -> None:  # type: ignore[no-untyped-def]
    _customer_with_credits(tenant, store, "10")

    statuses = _statuses_of_concurrent(tenant, "GET", "/customers/external/ada/credits/balances")

    assert len(statuses) == CONCURRENT_REQUESTS
    assert set(statuses) == {200}


def test_concurrent_writes_all_answered(tenant, store) -> None:  # type: ignore[no-untyped-def]
    _customer_with_credits(tenant, store, "1000")
    body = {"creditCurrencyKey": "chat_credits", "amount": "1", "ttlSeconds": 30}

    statuses = _statuses_of_concurrent(tenant, "POST", "/customers/external/ada/credits/holds", body)

    assert len(statuses) == CONCURRENT_REQUESTS
    assert set(statuses) == {201}
