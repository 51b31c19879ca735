"""SIGKILL during checkout completion: after restarts and resubmissions, each checkout pays once.

Buyers pay single-use checkouts on the hosted page of a real `tallystick serve` process while
the server is killed with SIGKILL and restarted. A buyer whose submission got no response
submits the same form again (same form token, same browser cookie), as a browser's retry
would. Afterwards every checkout has exactly one order, one payment and one invoice, the plan's
credits are granted once, and no order exists without its payment.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.checkout_helpers import ADDRESS, PAYING_CARD, form_token
from tests.conftest import free_port
from tests.guide import create_guide_catalog
from tests.test_crash_ingestion import CLI, ServerProcess, crash_database_url  # noqa: F401 - a fixture

BUYERS = 16
PAYING_THREADS = 4
KILLS = 2
PRO_CREDITS = Decimal(2000)
# Seconds a buyer keeps resubmitting one form before the test gives up on the server.
RETRY_DEADLINE_SECONDS = 90


@dataclass
class BuyerTally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: int = 0
    failed_submissions: int = 0
    resubmitted: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def pay_until_done(url: str, plan_id: str, tally: BuyerTally) -> None:
    """Open the page once, then submit that form until the server redirects to the success URL."""
    deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        token = ""
        while not token:
            try:
                token = form_token(browser.get(url).text)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    tally.errors.append(f"{url}: page never opened")
                    return
                time.sleep(0.1)
        form = {"form_token": token, "currency": "USD", "option": plan_id, **ADDRESS, **PAYING_CARD}
        attempts = 0
        while True:
            attempts += 1
            try:
                response = browser.post(url, data=form)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 303:
                tally.add(completed=1, resubmitted=int(attempts > 1))
                return
            if response is not None and response.status_code < 500:
                tally.errors.append(f"{url}: {response.status_code} {response.text[:300]}")
                return
            tally.add(failed_submissions=1)
            if time.monotonic() > deadline:
                tally.errors.append(f"{url}: not completed in time")
                return
            time.sleep(0.1)


def pay_all(pages: list[str], plan_id: str, tally: BuyerTally) -> None:
    for url in pages:
        pay_until_done(url, plan_id, tally)


@dataclass(frozen=True)
class CheckoutTotals:
    completed_checkouts: int
    orders: int
    orders_per_checkout: int
    payments: int
    invoices: int
    orders_without_payment: int
    order_grants: Decimal
    grants_mismatched: int


def checkout_totals(database_url: str) -> CheckoutTotals:
    from tallystick.server.db import Store
    from tallystick.server.models import Checkout, CreditGrant, Invoice, LedgerEntry, Order, Payment

    store = Store.open(database_url)
    try:
        with store.read_sessions() as session:
            per_checkout = session.execute(
                select(Order.checkout_id, func.count()).group_by(Order.checkout_id)
            ).all()
            paid_orders = select(Payment.order_id).where(Payment.order_id.is_not(None))
            per_grant = dict(
                session.execute(select(LedgerEntry.grant_id, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.grant_id)).all()
            )
            grants = session.scalars(select(CreditGrant)).all()
            return CheckoutTotals(
                completed_checkouts=session.scalar(
                    select(func.count()).select_from(Checkout).where(Checkout.status == "completed")
                ),
                orders=session.scalar(select(func.count()).select_from(Order)),
                orders_per_checkout=max((count for _, count in per_checkout), default=0),
                payments=session.scalar(select(func.count()).select_from(Payment)),
                invoices=session.scalar(select(func.count()).select_from(Invoice)),
                orders_without_payment=session.scalar(
                    select(func.count()).select_from(Order).where(Order.id.not_in(paid_orders))
                ),
                order_grants=sum((grant.amount for grant in grants if grant.order_id is not None), Decimal(0)),
                grants_mismatched=sum(Decimal(per_grant.get(grant.id, 0)) != grant.remaining for grant in grants),
            )
    finally:
        store.dispose()


@pytest.mark.slow
def test_sigkill_during_checkout_pays_once(crash_database_url, backend, tmp_path: Path):  # noqa: F811
    created = subprocess.run(
        [CLI, "api-keys", "create", "--org", "Checkout crash", "--database-url", crash_database_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = json.loads(created.stdout)["apiKey"]
    # A fixed secret key: form tokens signed before a kill must still verify after the restart.
    running = ServerProcess(
        free_port(),
        crash_database_url,
        tmp_path / "server.log",
        environment={"TALLYSTICK_SECRET_KEY": secrets.token_urlsafe(32)},
    )
    running.start()
    try:
        from paid import Paid

        catalog = create_guide_catalog(Paid(token=api_key, base_url=running.root + "/api/v2"))
        headers = {"Authorization": f"Bearer {api_key}"}
        pages = []
        with httpx.Client(base_url=running.root + "/api/v2", headers=headers) as http:
            for number in range(BUYERS):
                body = {
                    "products": [{"id": catalog.product_id}],
                    "externalCustomerId": f"buyer-{number}",
                    "successUrl": "https://app.example.com/welcome",
                    "collectAddress": True,
                }
                response = http.post("/checkouts/", json=body)
                assert response.status_code == 201, response.text
                pages.append(response.json()["url"])

        tally = BuyerTally()
        threads = [
            threading.Thread(
                target=pay_all, args=(pages[number::PAYING_THREADS], catalog.plan_ids["pro"], tally), daemon=True
            )
            for number in range(PAYING_THREADS)
        ]
        for thread in threads:
            thread.start()
        kills = 0
        for kill_number in range(1, KILLS + 1):
            while tally.completed < BUYERS * kill_number // (KILLS + 1):
                time.sleep(0.005)
            running.kill()
            kills += 1
            time.sleep(0.3)
            running.start()
        for thread in threads:
            thread.join(timeout=RETRY_DEADLINE_SECONDS * 2)
        balance = httpx.get(
            running.root + "/api/v2/customers/external/buyer-0/credits/balances", headers=headers
        ).json()
    finally:
        running.stop()

    totals = checkout_totals(crash_database_url)
    print(
        f"{backend}: {BUYERS} checkouts, {kills} kills, {tally.failed_submissions} failed submissions, "
        f"{tally.resubmitted} forms submitted again"
    )
    assert tally.errors == []
    assert tally.completed == BUYERS
    assert kills == KILLS
    assert tally.resubmitted >= 1
    assert totals.completed_checkouts == BUYERS
    assert totals.orders == BUYERS
    assert totals.orders_per_checkout == 1
    assert totals.payments == BUYERS
    assert totals.invoices == BUYERS
    assert totals.orders_without_payment == 0
    assert totals.order_grants == PRO_CREDITS * BUYERS
    assert totals.grants_mismatched == 0
    assert Decimal(str(balance["data"][0]["available"])) == PRO_CREDITS


def test_concurrent_numbering_does_not_deadlock(store, backend, tenant):
    """Two transactions that each wrote a row of the organization both take an order number.

    Each insert holds a KEY SHARE lock on the organization row (its foreign key); locking that
    row FOR UPDATE for the number then made the two wait for each other.
    """
    if backend != "postgres":
        pytest.skip("SQLite has one writer at a time")
    from tallystick.server.billing.invoices import next_number
    from tallystick.server.customers.service import get_or_create_by_external_id
    from tallystick.server.models import Order

    ready = threading.Barrier(2, timeout=10)
    numbers: list[int] = []
    errors: list[str] = []

    def take_number(external_id: str) -> None:
        try:
            with store.transaction() as session:
                get_or_create_by_external_id(session, tenant.organization_id, external_id)
                session.flush()
                ready.wait()
                numbers.append(next_number(session, tenant.organization_id, Order))
        except Exception as error:  # noqa: BLE001 - the test reports any failure
            errors.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")

    threads = [threading.Thread(target=take_number, args=(f"numbered-{index}",)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(numbers) == [1, 1]
