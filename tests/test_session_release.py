"""Many concurrent requests: every request's connection goes back to the pool, under any load."""

from __future__ import annotations

import threading

import httpx

from tests.test_signals_api import create_catalog, create_customer, grant_credits

# More concurrent requests than the server has worker threads (40) and pooled connections.
CONCURRENT_REQUESTS = 120


def test_concurrent_reads_all_answered(tenant, store) -> None:  # type: ignore[no-untyped-def]
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "ada")
    grant_credits(store, catalog, customer_id, "10")
    statuses: list[int] = []
    start = threading.Barrier(CONCURRENT_REQUESTS)

    def read() -> None:
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=20) as client:
            start.wait()
            try:
                statuses.append(client.get("/customers/external/ada/credits/balances").status_code)
            except httpx.TimeoutException:
                statuses.append(0)

    threads = [threading.Thread(target=read) for _ in range(CONCURRENT_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(statuses) == CONCURRENT_REQUESTS
    assert set(statuses) == {200}


def test_concurrent_writes_all_answered(tenant, store) -> None:  # type: ignore[no-untyped-def]
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "ada")
    grant_credits(store, catalog, customer_id, "1000")
    statuses: list[int] = []
    start = threading.Barrier(CONCURRENT_REQUESTS)
    body = {"creditCurrencyKey": "chat_credits", "amount": "1", "ttlSeconds": 30}

    def place_hold() -> None:
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=20) as client:
            start.wait()
            try:
                statuses.append(client.post("/customers/external/ada/credits/holds", json=body).status_code)
            except httpx.TimeoutException:
                statuses.append(0)

    threads = [threading.Thread(target=place_hold) for _ in range(CONCURRENT_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(statuses) == CONCURRENT_REQUESTS
    assert set(statuses) == {201}
