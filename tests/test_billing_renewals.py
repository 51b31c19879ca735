"""Renewals under a fixed clock: month-end clamping, exactly-once grants, expiry, rollover,
declined renewal charges with their retries, and charges made after the renewal commits."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from tallystick.server.billing import collection
from tallystick.server.billing.renewals import advance_order, lock_order, renew_due_orders
from tallystick.server.checkout.providers import PaymentRequest
from tallystick.server.checkout.providers.testmode import TestModeProvider
from tallystick.server.models import CreditGrant, Invoice, Payment
from tests.billing_helpers import (
    RENEWAL_DECLINE_CARD,
    available,
    buy,
    create_chat_catalog,
    event_types,
    expiry_entries,
    frozen,
    load_order,
    order_allocations,
    order_grants,
    order_invoices,
    order_periods,
    send_chat_messages,
)

JAN_31 = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
FEB_28 = datetime(2026, 2, 28, 9, 30, tzinfo=UTC)
MAR_31 = datetime(2026, 3, 31, 9, 30, tzinfo=UTC)
APR_30 = datetime(2026, 4, 30, 9, 30, tzinfo=UTC)

STARTER = [("Starter", 2900, 500)]


def test_jan_31_order_renews_clamped(tenant, store):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "renew-1")

    for moment in (FEB_28, FEB_28 + timedelta(hours=1), MAR_31, MAR_31 + timedelta(days=1)):
        with frozen(moment):
            assert available(tenant, "renew-1") == Decimal(500)

    grants = order_grants(store, order_id)
    assert [(grant.starts_at, grant.expires_at, grant.amount) for grant in grants] == [
        (JAN_31, FEB_28, Decimal(500)),
        (FEB_28, MAR_31, Decimal(500)),
        (MAR_31, APR_30, Decimal(500)),
    ]
    periods = order_periods(store, order_id)
    assert [(period.number, period.start_date, period.end_date) for period in periods] == [
        (1, JAN_31, FEB_28),
        (2, FEB_28, MAR_31),
        (3, MAR_31, APR_30),
    ]
    invoices = order_invoices(store, order_id)
    assert [(invoice.period_number, invoice.total, invoice.status, invoice.payment_status) for invoice in invoices] == [
        (1, 2900, "posted", "paid"),
        (2, 2900, "posted", "paid"),
        (3, 2900, "posted", "paid"),
    ]
    order = load_order(store, order_id)
    assert (order.period_number, order.period_end, order.billing_due_at) == (3, APR_30, APR_30)


def test_renewal_records_invoice_and_payment_events(tenant, store):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        buy(tenant, catalog, "Starter", "renew-events")
    before = len(event_types(store, tenant.organization_id))

    with frozen(FEB_28):
        available(tenant, "renew-events")

    # Events written under one frozen instant have no order between them.
    assert sorted(event_types(store, tenant.organization_id)[before:]) == [
        "billing-invoice-created",
        "billing-invoice-paid",
        "billing-invoice-posted",
        "billing-payment-succeeded",
    ]


def test_customer_state_renews_and_lists_order(tenant, store):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "renew-state")

    with frozen(FEB_28 + timedelta(minutes=5)):
        state = tenant.http.get("/customers/external/renew-state/state").json()

    assert [balance["balance"] for balance in state["credits"]["balances"]] == [500]
    [order] = state["orders"]
    assert order["id"] == order_id
    assert order["state"] == "active"
    assert order["effectiveUntil"] == "2026-03-31T09:30:00Z"
    assert len(order_periods(store, order_id)) == 2


def test_unused_credits_expire_at_period_end(tenant, store):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "expire-1")
    with frozen(JAN_31 + timedelta(days=3)):
        send_chat_messages(tenant, "expire-1", 120, "expire-1-jan")
        assert available(tenant, "expire-1") == Decimal(380)

    with frozen(FEB_28):
        assert available(tenant, "expire-1") == Decimal(500)

    first = order_grants(store, order_id)[0]
    [expiry] = expiry_entries(store, first.id)
    assert expiry.amount == Decimal(-380)
    assert expiry.effective_at == FEB_28


def test_rollover_keeps_configured_amount_until_its_end(tenant, store):
    rollover = {"rolloverAmount": 200, "rolloverDuration": 1, "rolloverDurationUnit": "months"}
    catalog = create_chat_catalog(tenant, STARTER, rollover=rollover)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "roll-1")
    with frozen(JAN_31 + timedelta(days=1)):
        send_chat_messages(tenant, "roll-1", 100, "roll-1-jan")

    # 400 unused: 200 carried until Mar 31, the rest expired, plus February's 500.
    with frozen(FEB_28):
        assert available(tenant, "roll-1") == Decimal(700)
    # Nothing used in February: the carried 200 expire, February's unused 500 carry 200.
    with frozen(MAR_31):
        assert available(tenant, "roll-1") == Decimal(700)
    # 650 used in March: the carried 200 are drawn first, then 450 of March's 500.
    with frozen(MAR_31 + timedelta(days=2)):
        send_chat_messages(tenant, "roll-1", 650, "roll-1-mar")
        assert available(tenant, "roll-1") == Decimal(50)
    with frozen(APR_30):
        assert available(tenant, "roll-1") == Decimal(550)

    rolled = [grant for grant in order_grants(store, order_id) if grant.origin_code == "rollover"]
    assert [(grant.amount, grant.starts_at, grant.expires_at) for grant in rolled] == [
        (Decimal(200), FEB_28, MAR_31),
        (Decimal(200), MAR_31, APR_30),
        (Decimal(50), APR_30, datetime(2026, 5, 31, 9, 30, tzinfo=UTC)),
    ]
    carried = [allocation for allocation in order_allocations(store, order_id) if allocation.rolled_over_at is not None]
    assert len(carried) == 3


def test_declined_renewal_retried_then_overdue(tenant, store):
    catalog = create_chat_catalog(tenant, [("Pro", 7900, 2000)], timing="on_payment")
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Pro", "decline-1", card=RENEWAL_DECLINE_CARD)
        assert available(tenant, "decline-1") == Decimal(2000)

    with frozen(FEB_28):
        assert available(tenant, "decline-1") == Decimal(0)
        send_chat_messages(tenant, "decline-1", 30, "decline-1-feb")
    renewal = order_invoices(store, order_id)[1]
    assert (renewal.status, renewal.payment_status, renewal.payment_attempts) == ("posted", "pending", 1)
    assert renewal.next_payment_attempt_at == FEB_28 + timedelta(hours=24)
    assert "billing-payment-failed" in event_types(store, tenant.organization_id)

    # Retries after 24, 72 and 120 more hours are declined too; then the invoice is overdue.
    moment = FEB_28
    for hours in (24, 72, 120):
        moment += timedelta(hours=hours)
        with frozen(moment):
            assert available(tenant, "decline-1") == Decimal(0)
    renewal = order_invoices(store, order_id)[1]
    assert (renewal.payment_status, renewal.payment_attempts, renewal.next_payment_attempt_at) == ("overdue", 4, None)

    # Paid outside tallystick: February's credits are granted and settle the pending 30.
    with frozen(moment + timedelta(hours=1)):
        response = tenant.http.post(f"/invoices/{renewal.id}/mark-paid")
        assert response.status_code == 200, response.text
        assert response.json()["paymentStatus"] == "paid"
        assert available(tenant, "decline-1") == Decimal(1970)


def test_two_processes_renew_each_period_once(tenant, store, tmp_path: Path):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_ids = [buy(tenant, catalog, "Starter", f"race-{index}") for index in range(4)]

    script = tmp_path / "renew.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from datetime import datetime
            from tallystick.server import clock
            from tallystick.server.db import Store
            from tallystick.server.billing.renewals import renew_due_orders

            url, moment, start_at = sys.argv[1], datetime.fromisoformat(sys.argv[2]), float(sys.argv[3])
            clock.freeze(moment)
            store = Store.open(url)
            while time.time() < start_at:
                time.sleep(0.001)
            total = 0
            while True:
                advanced = renew_due_orders(store.transaction, moment, limit=50)
                total += advanced
                if advanced == 0:
                    break
            print(total)
            """
        )
    )
    start_at = time.time() + 3
    moment = (APR_30 + timedelta(minutes=1)).isoformat()
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), store.url, moment, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors
    assert sum(int(out.strip()) for out, _ in outputs) >= len(order_ids)

    for order_id in order_ids:
        assert [period.number for period in order_periods(store, order_id)] == [1, 2, 3, 4]
        assert [invoice.period_number for invoice in order_invoices(store, order_id)] == [1, 2, 3, 4]
        grants = order_grants(store, order_id)
        assert [grant.starts_at for grant in grants] == [JAN_31, FEB_28, MAR_31, APR_30]
    with store.read_sessions() as session:
        paid = session.scalars(
            select(Invoice.payment_status).where(Invoice.order_id.in_(order_ids), Invoice.period_number == 4)
        ).all()
        granted = session.scalars(
            select(CreditGrant.amount).where(CreditGrant.order_id.in_(order_ids), CreditGrant.starts_at == APR_30)
        ).all()
    assert paid == ["paid"] * 4
    assert granted == [Decimal(500)] * 4


def test_background_task_renews_without_api_calls(tenant, store, database_url):
    from tallystick.server.app import create_app
    from tallystick.server.models import Checkout
    from tallystick.server.settings import Settings
    from tests.checkout_helpers import create_checkout
    from tests.conftest import serve_app

    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "worker-1")
        stale = create_checkout(
            tenant, products=[{"id": catalog.product_id}], expiresAt=(JAN_31 + timedelta(hours=1)).isoformat()
        )

    settings = Settings(
        database_url=database_url,
        billing_worker_enabled=True,
        billing_poll_interval_seconds=0.1,
        webhook_delivery_enabled=False,
    )
    with frozen(FEB_28 + timedelta(minutes=1)), serve_app(create_app(settings, store=store), database_url):
        deadline = time.monotonic() + 20
        checkout_status = "active"
        while time.monotonic() < deadline:
            with store.read_sessions() as session:
                checkout = session.get(Checkout, stale["id"])
                assert checkout is not None
                checkout_status = checkout.status
            if checkout_status == "expired" and len(order_periods(store, order_id)) == 2:
                break
            time.sleep(0.1)

    assert [period.number for period in order_periods(store, order_id)] == [1, 2]
    assert order_invoices(store, order_id)[-1].payment_status == "paid"
    assert [grant.starts_at for grant in order_grants(store, order_id)] == [JAN_31, FEB_28]
    assert checkout_status == "expired"
    assert "billing-checkout-expired" in event_types(store, tenant.organization_id)


@pytest.fixture
def charges(monkeypatch):  # type: ignore[no-untyped-def]
    """Record each renewal charge the test payment provider makes, then make it as usual.

    `charges.during` is called inside each charge, while the provider is still working on it.
    """
    requests: list[PaymentRequest] = []
    original = TestModeProvider.charge_saved_method

    def charge(self, request, method):  # type: ignore[no-untyped-def]
        requests.append(request)
        if record.during is not None:
            record.during(request)
        return original(self, request, method)

    record = SimpleNamespace(requests=requests, during=None)
    monkeypatch.setattr(TestModeProvider, "charge_saved_method", charge)
    return record


def test_renewal_charge_made_outside_locks(tenant, store, charges):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "unlocked-1")

    # Another writer takes the order's row lock (and on SQLite the write lock) during the
    # charge. It waits on a thread of its own, so a charge made under the lock would only
    # delay it, not deadlock the test.
    writer_waits: list[bool] = []

    def write_meanwhile(_request) -> None:  # type: ignore[no-untyped-def]
        def lock() -> None:
            with store.transaction() as session:
                assert lock_order(session, order_id) is not None

        writer = threading.Thread(target=lock)
        writer.start()
        writer.join(timeout=3)
        writer_waits.append(writer.is_alive())
        writer.join()

    charges.during = write_meanwhile
    with frozen(FEB_28):
        assert available(tenant, "unlocked-1") == Decimal(500)

    assert writer_waits == [False]
    renewal = order_invoices(store, order_id)[1]
    assert (renewal.payment_status, renewal.payment_attempts, renewal.payment_idempotency_key) == ("paid", 1, None)
    order = load_order(store, order_id)
    assert order.billing_due_at == MAR_31


def test_lapsed_claim_is_charged_again_with_its_key(tenant, store, charges, monkeypatch):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "lapsed-1")

    # The process stops after the renewal commits and before it calls the provider.
    with monkeypatch.context() as patch, frozen(FEB_28):
        patch.setattr(collection, "collect_charge", lambda store, *, charge, lease_until: None)
        assert renew_due_orders(store.transaction, FEB_28) == 1
    renewal = order_invoices(store, order_id)[1]
    claim_ends = FEB_28 + timedelta(seconds=600)
    method_id = load_order(store, order_id).payment_method_id
    key = f"invoice:{renewal.id}:attempt:1:{method_id}"
    assert (renewal.payment_status, renewal.payment_attempts) == ("pending", 0)
    assert (renewal.payment_idempotency_key, renewal.next_payment_attempt_at) == (key, claim_ends)
    assert load_order(store, order_id).billing_due_at == claim_ends
    assert charges.requests == []

    with frozen(claim_ends - timedelta(seconds=1)):
        assert renew_due_orders(store.transaction, claim_ends - timedelta(seconds=1)) == 0
    with frozen(claim_ends):
        assert renew_due_orders(store.transaction, claim_ends) == 1

    assert [request.idempotency_key for request in charges.requests] == [key]
    renewal = order_invoices(store, order_id)[1]
    assert (renewal.payment_status, renewal.payment_attempts, renewal.payment_idempotency_key) == ("paid", 1, None)
    with store.read_sessions() as session:
        payments = session.scalars(select(Payment).where(Payment.invoice_id == renewal.id)).all()
    # The test provider derives the payment id from the idempotency key.
    assert [payment.provider_payment_id for payment in payments] == [
        f"testpay_{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    ]
    assert load_order(store, order_id).billing_due_at == MAR_31


def test_renewal_rolled_back_makes_no_charge(tenant, store, charges):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "rolled-back-1")

    with frozen(FEB_28), pytest.raises(RuntimeError), store.transaction() as session:
        order = lock_order(session, order_id)
        assert order is not None
        assert advance_order(session, order, FEB_28) == 1
        raise RuntimeError("the renewal's transaction fails after claiming the charge")

    assert charges.requests == []
    assert [invoice.period_number for invoice in order_invoices(store, order_id)] == [1]


def test_customer_state_shows_credits_paid_at_renewal(tenant, store):
    catalog = create_chat_catalog(tenant, [("Pro", 7900, 2000)], timing="on_payment")
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Pro", "state-paid-1")

    with frozen(FEB_28 + timedelta(minutes=5)):
        state = tenant.http.get("/customers/external/state-paid-1/state").json()

    assert [balance["balance"] for balance in state["credits"]["balances"]] == [2000]
    assert order_invoices(store, order_id)[1].payment_status == "paid"


def test_claim_taken_over_is_not_charged(tenant, store, charges, monkeypatch):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "taken-over-1")

    # Process A claims the charge and is slow to reach its call: the claim lapses and process B
    # claims the same attempt. Neither has called the provider yet.
    queued: list[tuple[Any, Any]] = []
    later = FEB_28 + timedelta(seconds=601)
    with monkeypatch.context() as patch:
        patch.setattr(collection, "collect_charge", lambda store, *, charge, lease_until: queued.append((charge, lease_until)))
        for moment in (FEB_28, later):
            with frozen(moment):
                # Orders of other tests' organizations may be due too.
                assert renew_due_orders(store.transaction, moment) >= 1
    [first, second] = [item for item in queued if item[0].order_id == order_id]

    with frozen(later + timedelta(seconds=1)):
        for charge, lease_until in (first, second):
            collection.collect_charge(store, charge=charge, lease_until=lease_until)

    assert [request.metadata["order_id"] for request in charges.requests].count(order_id) == 1
    renewal = order_invoices(store, order_id)[1]
    assert (renewal.payment_status, renewal.payment_attempts) == ("paid", 1)


def test_mark_paid_waits_for_claimed_charge(tenant, store, monkeypatch):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "mark-paid-claim-1")

    with monkeypatch.context() as patch, frozen(FEB_28):
        patch.setattr(collection, "collect_charge", lambda store, *, charge, lease_until: None)
        assert renew_due_orders(store.transaction, FEB_28) >= 1
        renewal = order_invoices(store, order_id)[1]
        rejected = tenant.http.post(f"/invoices/{renewal.id}/mark-paid")

    assert rejected.status_code == 409, rejected.text
    assert rejected.json()["code"] == "payment_in_progress"
    assert order_invoices(store, order_id)[1].payment_status == "pending"


def test_provider_error_keeps_the_key_for_a_retry(tenant, store, monkeypatch, caplog):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "provider-error-1")

    def broken(self, request, method):  # type: ignore[no-untyped-def]
        raise RuntimeError("provider library bug")

    with monkeypatch.context() as patch, frozen(FEB_28):
        patch.setattr(TestModeProvider, "charge_saved_method", broken)
        assert renew_due_orders(store.transaction, FEB_28) >= 1

    renewal = order_invoices(store, order_id)[1]
    assert (renewal.payment_status, renewal.payment_attempts) == ("pending", 1)
    assert renewal.payment_idempotency_key is not None
    assert renewal.next_payment_attempt_at == FEB_28 + timedelta(hours=24)
    assert "provider_unanswered" in (renewal.last_payment_error or "")
    assert any(record.getMessage() == "payment.provider_failed" for record in caplog.records)


def test_changed_payment_method_releases_the_claim(tenant, store, charges, monkeypatch):
    catalog = create_chat_catalog(tenant, STARTER)
    with frozen(JAN_31):
        order_id = buy(tenant, catalog, "Starter", "method-change-1")

    queued: list[tuple[Any, Any]] = []
    with monkeypatch.context() as patch, frozen(FEB_28):
        patch.setattr(collection, "collect_charge", lambda store, *, charge, lease_until: queued.append((charge, lease_until)))
        assert renew_due_orders(store.transaction, FEB_28) >= 1
    with store.transaction() as session:
        order = lock_order(session, order_id)
        assert order is not None
        order.payment_method_id = None

    with frozen(FEB_28 + timedelta(seconds=5)):
        [(charge, lease_until)] = [item for item in queued if item[0].order_id == order_id]
        collection.collect_charge(store, charge=charge, lease_until=lease_until)

    assert order_id not in [request.metadata["order_id"] for request in charges.requests]
    renewal = order_invoices(store, order_id)[1]
    assert (renewal.payment_idempotency_key, renewal.next_payment_attempt_at) == (None, FEB_28)
