"""Concurrent signals through two server processes sharing one database.

A customer with 50 credits gets 200 signals of 1 credit each, from 20 threads, and each signal
goes to both processes with the same idempotency key. Exactly 50 credits must be consumed, 150
must become pending consumption, and 200 signals must be stored. Batches over many customers,
resent concurrently, must all be stored without a deadlock.
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tallystick.server.api_keys import create_api_key
from tallystick.server.models import LedgerEntry, Signal
from tests.conftest import free_port
from tests.test_signals_api import (
    available_credits,
    create_catalog,
    create_customer,
    grant_credits,
    pending_credits,
)

SIGNALS = 200
THREADS = 20
CREDITS = "50"
STARTUP_TIMEOUT_SECONDS = 60


def start_server(database_url: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `tallystick serve` as its own process on a free port; return it and its API URL."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from tallystick.cli.main import run; run()",
        "serve",
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(root + "/healthz", timeout=2).status_code == 200:
                return process, root + "/api/v2"
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not answer /healthz within {STARTUP_TIMEOUT_SECONDS} s")
        time.sleep(0.1)


@pytest.fixture
def two_servers(store, database_url: str, tmp_path: Path) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    processes = []
    try:
        for name in ("a", "b"):
            process, api_url = start_server(database_url, tmp_path / f"server-{name}.log")
            processes.append((process, api_url))
        yield [api_url for _, api_url in processes]
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_two_processes_consume_exactly_once(store, two_servers):
    with store.transaction() as session:
        created = create_api_key(session, f"org-{secrets.token_hex(6)}")
    catalog = create_catalog(store, created.organization_id)
    customer_id = create_customer(store, created.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, CREDITS)

    def send_twice(indexes: list[int]) -> list[dict[str, int]]:
        """Send each signal to both processes with the same key.

        Even signals go to one process and then, as a retry after a lost response, to the
        other. Odd signals go to both at once, so the two copies race for the key.
        """
        headers = {"Authorization": f"Bearer {created.secret}"}
        clients = [httpx.Client(base_url=url, headers=headers, timeout=120) for url in two_servers]

        def post(client: httpx.Client, signal: dict[str, object]) -> dict[str, int]:
            response = client.post("/signals/bulk", json={"signals": [signal]})
            assert response.status_code == 200, response.text
            return response.json()

        bodies = []
        try:
            with ThreadPoolExecutor(max_workers=2) as racers:
                for index in indexes:
                    signal = {
                        "eventName": "chat_message",
                        "customer": {"externalCustomerId": "user-1"},
                        "attribution": {"externalProductId": "chatbot"},
                        "idempotencyKey": f"message-{index}",
                    }
                    first, second = clients[index % 2], clients[(index + 1) % 2]
                    if index % 2 == 0:
                        bodies.append(post(first, signal))
                        bodies.append(post(second, signal))
                    else:
                        bodies.extend(racers.map(post, (first, second), (signal, signal)))
        finally:
            for client in clients:
                client.close()
        return bodies

    shares = [list(range(thread, SIGNALS, THREADS)) for thread in range(THREADS)]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        bodies = [body for share in pool.map(send_twice, shares) for body in share]

    assert sum(body["ingested"] for body in bodies) == SIGNALS
    assert sum(body["duplicates"] for body in bodies) == SIGNALS
    assert sum(body["failed"] for body in bodies) == 0

    with store.read_sessions() as session:
        signal_filter = Signal.organization_id == created.organization_id
        stored = session.scalar(select(func.count()).select_from(Signal).where(signal_filter))
        keys = session.scalar(select(func.count(func.distinct(Signal.idempotency_key))).where(signal_filter))
        consumed = session.scalar(select(func.sum(Signal.credits_consumed)).where(signal_filter))
        pending = session.scalar(select(func.sum(Signal.credits_pending)).where(signal_filter))
        spent = session.scalar(
            select(func.sum(LedgerEntry.amount)).where(
                LedgerEntry.organization_id == created.organization_id, LedgerEntry.entry_type == "spend"
            )
        )
    assert stored == SIGNALS
    assert keys == SIGNALS
    assert Decimal(consumed) == Decimal(CREDITS)
    assert Decimal(pending) == Decimal(SIGNALS) - Decimal(CREDITS)
    assert Decimal(spent) == -Decimal(CREDITS)
    assert available_credits(store, catalog, customer_id) == Decimal(0)
    assert pending_credits(store, catalog, customer_id) == Decimal(SIGNALS) - Decimal(CREDITS)


def test_concurrent_signals_create_one_customer(tenant, store):
    from sqlalchemy import select

    from tallystick.server.models import Customer
    from tests.test_signals_api import chat_message

    create_catalog(store, tenant.organization_id)

    def send_one(index: int) -> int:
        signal = chat_message("brand-new", idempotencyKey=f"n{index}")
        with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=60) as client:
            response = client.post("/signals/bulk", json={"signals": [signal]})
        assert response.status_code == 200, response.text
        return response.json()["ingested"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        ingested = sum(pool.map(send_one, range(10)))

    assert ingested == 10
    with store.read_sessions() as session:
        customers = session.scalars(
            select(Customer.id).where(
                Customer.organization_id == tenant.organization_id, Customer.external_id == "brand-new"
            )
        ).all()
        stored = session.scalar(
            select(func.count()).select_from(Signal).where(Signal.organization_id == tenant.organization_id)
        )
    assert len(customers) == 1
    assert stored == 10


RESENT_CUSTOMERS = 20
KEYS_PER_CUSTOMER = 30
RESEND_BATCH = 60


def test_resent_batches_never_deadlock(store, two_servers, tmp_path):
    """Batches that share keys and customers, sent three times in shuffled order at once.

    A batch whose keys a concurrent batch claimed first takes the general path. If that path
    claimed keys before locking accounts, the reverse of the fast path, two batches could wait
    for each other, and PostgreSQL would abort one (a 503 after three attempts).
    """
    with store.transaction() as session:
        created = create_api_key(session, f"org-{secrets.token_hex(6)}")
    catalog = create_catalog(store, created.organization_id)
    customers = [f"resend-{number}" for number in range(RESENT_CUSTOMERS)]
    for external_id in customers:
        grant_credits(store, catalog, create_customer(store, created.organization_id, external_id), "10")
    signals = [
        {
            "eventName": "chat_message",
            "customer": {"externalCustomerId": external_id},
            "attribution": {"externalProductId": "chatbot"},
            "idempotencyKey": f"{external_id}-{number}",
        }
        for external_id in customers
        for number in range(KEYS_PER_CUSTOMER)
    ]
    copies = signals * 3
    random.Random(7).shuffle(copies)
    batches = [copies[start : start + RESEND_BATCH] for start in range(0, len(copies), RESEND_BATCH)]
    headers = {"Authorization": f"Bearer {created.secret}"}

    def send(numbered: tuple[int, list[dict[str, object]]]) -> httpx.Response:
        number, batch = numbered
        with httpx.Client(base_url=two_servers[number % 2], headers=headers, timeout=120) as client:
            return client.post("/signals/bulk", json={"signals": batch})

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(send, enumerate(batches)))

    assert [response.status_code for response in responses] == [200] * len(batches)
    bodies = [response.json() for response in responses]
    assert sum(body["ingested"] for body in bodies) == len(signals)
    assert sum(body["duplicates"] for body in bodies) == 2 * len(signals)
    logs = "".join(path.read_text() for path in tmp_path.glob("server-*.log"))
    assert "signals.batch_retried" not in logs
