"""Test clocks: simulated time for the billing of chosen customers, as Stripe offers in test mode.

A customer attached to a test clock lives at the clock's frozen time: the background renewal
task leaves its orders alone, and balance and customer state reads are computed at the clock's
time. Advancing the clock runs every billing event due for its customers up to the new time,
in time order and each as of its own instant. Those events are period starts, invoices and
charges, monthly allocations, rollovers, payment retries and the end of canceled orders. The
advance then records the credit expiries due by then. The work goes through the same code as real time, because
`clock.at` pins the time that `clock.now()` returns while it runs.

Webhook events of that work are written to the outbox in the advance's transaction. The advance
route then waits for each event's first delivery attempt; retries follow in real time.

Signals of a customer on a test clock are rated, and consume credits, at the clock's time: the
signal service reads the clock's time together with the customer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.billing.renewals import advance_order, lock_order
from tallystick.server.customers.service import delete_customer, find_customer
from tallystick.server.errors import bad_request, not_found, timestamp_text
from tallystick.server.ids import new_id
from tallystick.server.ledger import queries as ledger_queries
from tallystick.server.ledger import service as ledger
from tallystick.server.models import Order, TestClock, TestClockCustomer

log = logging.getLogger(__name__)


def create_clock(session: Session, organization_id: str, frozen_time: datetime, name: str | None) -> TestClock:
    _check_aware("frozenTime", frozen_time)
    test_clock = TestClock(
        id=new_id("test_clock"),
        organization_id=organization_id,
        name=name,
        frozen_time=frozen_time,
        status="ready",
    )
    session.add(test_clock)
    session.flush()
    log.info("test_clock.created", extra={"organization_id": organization_id, "test_clock_id": test_clock.id})
    return test_clock


def get_clock(session: Session, organization_id: str, clock_id: str, *, lock: bool = False) -> TestClock:
    """Return the organization's live test clock or raise the API's 404."""
    statement = select(TestClock).where(
        TestClock.organization_id == organization_id, TestClock.id == clock_id, TestClock.deleted_at.is_(None)
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    found = session.scalar(statement)
    if found is None:
        raise not_found("Test clock", "id", clock_id)
    return found


def attach_customer(session: Session, organization_id: str, customer_id: str, clock_id: str | None) -> None:
    """Put the customer on test clock `clock_id`, or take it off its clock when None."""
    membership = session.get(TestClockCustomer, customer_id)
    if clock_id is None:
        if membership is not None:
            session.delete(membership)
            session.flush()
        return
    found = session.scalar(
        select(TestClock.id).where(
            TestClock.organization_id == organization_id, TestClock.id == clock_id, TestClock.deleted_at.is_(None)
        )
    )
    if found is None:
        raise bad_request("testClockId", "is not a test clock of this organization", clock_id)
    if membership is not None and membership.test_clock_id != clock_id:
        raise bad_request("testClockId", "the customer is on another test clock already", clock_id)
    if membership is None:
        session.add(TestClockCustomer(organization_id=organization_id, customer_id=customer_id, test_clock_id=clock_id))
        session.flush()


def customer_clock_id(session: Session, customer_id: str) -> str | None:
    membership = session.get(TestClockCustomer, customer_id)
    return membership.test_clock_id if membership is not None else None


def customer_clock_time(session: Session, customer_id: str) -> datetime | None:
    """Return the frozen time of the customer's test clock, or None for a customer on real time."""
    return session.scalar(_CUSTOMER_CLOCK_TIME, {"customer_id": customer_id})


_CUSTOMER_CLOCK_TIME = (
    select(TestClock.frozen_time)
    .join(TestClockCustomer, TestClockCustomer.test_clock_id == TestClock.id)
    .where(TestClockCustomer.customer_id == bindparam("customer_id"))
)


def customer_now(session: Session, customer_id: str) -> datetime:
    """Return the time the customer lives at: its test clock's, or the real time."""
    return customer_clock_time(session, customer_id) or clock.now()


@contextmanager
def customer_time(session: Session, customer_id: str | None) -> Iterator[datetime]:
    """Run the block at the customer's time: `clock.now()` returns its test clock's time
    inside, when it has one. Yields that time."""
    frozen = customer_clock_time(session, customer_id) if customer_id is not None else None
    if frozen is None:
        yield clock.now()
        return
    with clock.at(frozen):
        yield frozen


def advance_clock(session: Session, test_clock: TestClock, frozen_time: datetime) -> int:
    """Move the clock to `frozen_time` and run what fell due for its customers; return the number
    of billing events processed. The caller holds the clock's row lock."""
    _check_aware("frozenTime", frozen_time)
    if frozen_time <= test_clock.frozen_time:
        raise bad_request(
            "frozenTime", f"must be later than the clock's current time {timestamp_text(test_clock.frozen_time)}", frozen_time
        )
    customer_ids = _customer_ids(session, test_clock.id)
    order_ids = list(
        session.scalars(
            select(Order.id)
            .where(Order.customer_id.in_(customer_ids), Order.billing_due_at <= frozen_time)
            .order_by(Order.billing_due_at, Order.id)
        )
    )
    steps = 0
    for order_id in order_ids:
        order = lock_order(session, order_id)
        if order is not None:
            steps += advance_order(session, order, frozen_time, as_of_each_event=True)

    # Expiries of grants that no billing event touched, such as manual grants.
    with clock.at(frozen_time):
        for customer_id in customer_ids:
            for currency in ledger_queries.customer_accounts(session, test_clock.organization_id, customer_id):
                ledger.sweep_account(
                    session,
                    organization_id=test_clock.organization_id,
                    customer_id=customer_id,
                    currency_id=currency.id,
                )

    test_clock.frozen_time = frozen_time
    test_clock.updated_at = clock.now()
    session.flush()
    log.info(
        "test_clock.advanced",
        extra={"organization_id": test_clock.organization_id, "test_clock_id": test_clock.id, "billing_events": steps},
    )
    return steps


def delete_clock(session: Session, test_clock: TestClock) -> None:
    """Delete the clock with its customers, as Stripe does; their open orders end now."""
    now = clock.now()
    for customer_id in _customer_ids(session, test_clock.id):
        for order in session.scalars(select(Order).where(Order.customer_id == customer_id, Order.status.in_(("draft", "active")))):
            order.status = "ended"
            order.ended_at = test_clock.frozen_time
            order.billing_due_at = None
        customer = find_customer(session, test_clock.organization_id, customer_id)
        if customer is not None:
            delete_customer(session, customer)
    test_clock.deleted_at = now
    session.flush()
    log.info("test_clock.deleted", extra={"organization_id": test_clock.organization_id, "test_clock_id": test_clock.id})


def _customer_ids(session: Session, clock_id: str) -> list[str]:
    return list(
        session.scalars(
            select(TestClockCustomer.customer_id)
            .where(TestClockCustomer.test_clock_id == clock_id)
            .order_by(TestClockCustomer.customer_id)
        )
    )


def _check_aware(field: str, value: datetime) -> None:
    if value.tzinfo is None:
        raise bad_request(field, "must carry a timezone offset, such as Z", value)
    # Billing periods are computed up to the clock's time, so it stays far from datetime's limit.
    if not 1970 <= value.year <= 9000:
        raise bad_request(field, "must be between the years 1970 and 9000", value)
