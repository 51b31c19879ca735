"""Injected store failures after the idempotency claim: nothing half-written, retries count once.

The `server` fixture runs in this process, so patching the ledger module reaches the server.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tallystick.server.ledger import service as ledger
from tallystick.server.models import LedgerEntry, PendingConsumption
from tallystick.server.signals import service as signals_service
from tests.test_signals_api import (
    available_credits,
    chat_message,
    create_catalog,
    create_customer,
    grant_credits,
    send,
    stored_signals,
)


class InjectedFault(RuntimeError):
    pass


def fail_once_after(target: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make `target.name` run and then raise on its first call; return the call counter."""
    original = getattr(target, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        result = original(*args, **kwargs)
        if calls[0] == 1:
            raise InjectedFault(f"{name} failed after writing")
        return result

    monkeypatch.setattr(target, name, wrapper)
    return calls


def fail_every_batch(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every ledger batch write its rows and then raise, so signals fall back to one by one."""
    original = ledger.consume_batch
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        original(*args, **kwargs)
        raise InjectedFault("consume_batch failed after writing")

    monkeypatch.setattr(ledger, "consume_batch", wrapper)
    return calls


def spend_entries(store: Any, organization_id: str) -> int:
    with store.read_sessions() as session:
        return session.scalar(
            select(func.count()).select_from(LedgerEntry).where(
                LedgerEntry.organization_id == organization_id, LedgerEntry.entry_type == "spend"
            )
        )


def pending_rows(store: Any, organization_id: str) -> int:
    with store.read_sessions() as session:
        return session.scalar(
            select(func.count()).select_from(PendingConsumption).where(
                PendingConsumption.organization_id == organization_id
            )
        )


def test_ledger_fault_frees_key_and_retry_counts_once(tenant, store, monkeypatch):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    fail_every_batch(monkeypatch)
    calls = fail_once_after(ledger, "consume", monkeypatch)

    failed = send(tenant, chat_message(idempotencyKey="k1"))

    # The ledger wrote its entries, then failed: the signal's savepoint undid all of it.
    assert calls[0] == 1
    assert failed.status_code == 500
    body = failed.json()
    assert body["code"] == "internal_error"
    assert body["errors"][0]["code"] == "internal_error"
    assert body["errors"][0]["idempotencyKey"] == "k1"
    assert stored_signals(store, tenant.organization_id) == []
    assert spend_entries(store, tenant.organization_id) == 0
    assert available_credits(store, catalog, customer_id) == Decimal(10)

    retried = send(tenant, chat_message(idempotencyKey="k1"))
    repeated = send(tenant, chat_message(idempotencyKey="k1"))

    assert retried.json() == {"ingested": 1, "duplicates": 0, "failed": 0, "errors": [], "warnings": []}
    assert repeated.json() == {"ingested": 0, "duplicates": 1, "failed": 0, "errors": [], "warnings": []}
    assert len(stored_signals(store, tenant.organization_id)) == 1
    assert spend_entries(store, tenant.organization_id) == 1
    assert available_credits(store, catalog, customer_id) == Decimal(9)


def test_ledger_fault_fails_only_its_signal(tenant, store, monkeypatch):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    fail_every_batch(monkeypatch)
    fail_once_after(ledger, "consume", monkeypatch)
    batch = [chat_message(idempotencyKey=key) for key in ("a", "b", "c")]

    first = send(tenant, *batch)
    retried = send(tenant, *batch)

    assert first.status_code == 200
    assert first.json()["ingested"] == 2
    assert first.json()["failed"] == 1
    [error] = first.json()["errors"]
    assert error["code"] == "internal_error"
    assert retried.json() == {"ingested": 1, "duplicates": 2, "failed": 0, "errors": [], "warnings": []}
    assert {signal.idempotency_key for signal in stored_signals(store, tenant.organization_id)} == {"a", "b", "c"}
    assert spend_entries(store, tenant.organization_id) == 3
    assert available_credits(store, catalog, customer_id) == Decimal(7)


def test_batch_fault_retries_general_way(tenant, store, monkeypatch):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "2")
    batch_calls = fail_once_after(ledger, "consume_batch", monkeypatch)
    batch = [chat_message(idempotencyKey=key) for key in ("a", "b", "c")]

    first = send(tenant, *batch)
    retried = send(tenant, *batch)

    # The first ledger batch wrote its rows, then failed: its savepoint undid them, and the
    # signals were stored and consumed again the general way, once.
    assert batch_calls[0] == 2
    assert first.json() == {"ingested": 3, "duplicates": 0, "failed": 0, "errors": [], "warnings": []}
    assert retried.json() == {"ingested": 0, "duplicates": 3, "failed": 0, "errors": [], "warnings": []}
    assert spend_entries(store, tenant.organization_id) == 2
    assert pending_rows(store, tenant.organization_id) == 1
    assert available_credits(store, catalog, customer_id) == Decimal(0)


def test_fault_before_commit_rolls_back_batch(tenant, store, monkeypatch):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "1")
    # Fails after every signal, ledger entry and pending consumption of the batch was flushed.
    fail_once_after(signals_service, "_log_batch", monkeypatch)
    batch = [chat_message(idempotencyKey="x"), chat_message("new-user", idempotencyKey="y")]

    failed = send(tenant, *batch)

    assert failed.status_code == 500
    assert stored_signals(store, tenant.organization_id) == []
    assert spend_entries(store, tenant.organization_id) == 0
    assert pending_rows(store, tenant.organization_id) == 0
    assert available_credits(store, catalog, customer_id) == Decimal(1)

    # An unhandled error makes the server close the connection after its 500, so the retry
    # goes out on a new connection.
    retried = httpx.post(
        tenant.server.api_url + "/signals/bulk",
        json={"signals": batch},
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )

    assert retried.json() == {"ingested": 2, "duplicates": 0, "failed": 0, "errors": [], "warnings": []}
    assert spend_entries(store, tenant.organization_id) == 1
    assert pending_rows(store, tenant.organization_id) == 1


def test_paid_sdk_retries_fault_and_counts_once(tenant, store, monkeypatch):
    from paid.types import CustomerByExternalId, ProductByExternalId, Signal

    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "5")
    fail_every_batch(monkeypatch)
    calls = fail_once_after(ledger, "consume", monkeypatch)
    signal = Signal(
        event_name="chat_message",
        customer=CustomerByExternalId(external_customer_id="user-1"),
        attribution=ProductByExternalId(external_product_id="chatbot"),
        idempotency_key="sdk-1",
    )

    # The first attempt gets a 500, which paid-python retries by itself.
    response = tenant.paid().signals.create_signals(signals=[signal])

    assert calls[0] == 2
    assert response.ingested == 1
    assert response.duplicates == 0
    assert spend_entries(store, tenant.organization_id) == 1
    assert available_credits(store, catalog, customer_id) == Decimal(4)


def test_internal_error_body_is_json(tenant, store, monkeypatch):
    create_catalog(store, tenant.organization_id)
    fail_every_batch(monkeypatch)
    fail_once_after(ledger, "consume", monkeypatch)

    response = httpx.post(
        tenant.server.api_url + "/signals/bulk",
        json={"signals": [chat_message()]},
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )

    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["failed"] == 1


class FakeDeadlock(Exception):
    sqlstate = "40P01"


def deadlock_first(calls: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first `calls` batch attempts fail as if PostgreSQL broke a deadlock."""
    from sqlalchemy.exc import OperationalError

    original = signals_service.ingest_signals
    attempts = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        attempts[0] += 1
        result = original(*args, **kwargs)
        if attempts[0] <= calls:
            raise OperationalError("INSERT INTO signals ...", {}, FakeDeadlock("deadlock detected"))
        return result

    monkeypatch.setattr(signals_service, "ingest_signals", wrapper)
    return attempts


def test_deadlocked_batch_is_retried_once_counted(tenant, store, monkeypatch):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "5")
    attempts = deadlock_first(1, monkeypatch)

    response = send(tenant, chat_message(idempotencyKey="d1"))

    assert attempts[0] == 2
    assert response.json() == {"ingested": 1, "duplicates": 0, "failed": 0, "errors": [], "warnings": []}
    assert spend_entries(store, tenant.organization_id) == 1
    assert available_credits(store, catalog, customer_id) == Decimal(4)


def test_repeated_deadlocks_answer_503(tenant, store, monkeypatch):
    create_catalog(store, tenant.organization_id)
    deadlock_first(10, monkeypatch)

    response = send(tenant, chat_message(idempotencyKey="d2"))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "database_busy"
    assert stored_signals(store, tenant.organization_id) == []
