"""Renewals: bring an active order's billing up to date, however late it is.

`advance_order` processes every due billing event of one order in time order. Events are
rollovers of expired allocations, the end of the order, and the start of each new billing
period with its invoice, posting and charge. Monthly allocations inside a longer period and
payment retries are events too. Every step is idempotent because
unique keys claim periods and allocations. Every caller also takes the order's row lock, so
two processes never run the same step at once.

Three callers run it. The background task of every server process calls `renew_due_orders`.
Balance and customer state reads call `renew_customer`, so a read never shows a stale period.
Order activation runs it too, and backdated activation replays elapsed periods as of their own
times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session
from tallystick.server import clock
from tallystick.server.billing import allocations, collection, invoices
from tallystick.server.billing.allocations import schedule_of
from tallystick.server.billing.periods import Period
from tallystick.server.db import Store
from tallystick.server.ids import new_id
from tallystick.server.models import (
    BillingPeriod,
    Customer,
    Invoice,
    Order,
    TestClock,
    TestClockCustomer,
)
from tallystick.server.models.types import UtcDateTime
from tallystick.server.observability import RENEWAL_LAG

log = logging.getLogger(__name__)

# Billing events one call processes for one order before stopping, so a corrupt order cannot
# loop forever. A monthly order ten years behind has about 120 periods, each a few events.
MAX_STEPS_PER_ORDER = 5000


def lock_order(session: Session, order_id: str) -> Order | None:
    """Load the order and lock its row until the transaction ends.

    PostgreSQL takes a row lock (SELECT ... FOR UPDATE), so billing work on one order runs one
    transaction at a time; SQLite writers hold the database write lock already.
    """
    statement = select(Order).where(Order.id == order_id).with_for_update().execution_options(populate_existing=True)
    return session.scalars(statement).one_or_none()


def advance_order(
    session: Session,
    order: Order,
    now: datetime,
    *,
    as_of_each_event: bool = False,
    drafts_for_elapsed: bool = False,
    before_event: Callable[[datetime], None] | None = None,
) -> int:
    """Process the order's billing events due by `now`; return how many instants were processed.

    The caller holds the order's row lock. With `as_of_each_event` (backdated activation, test
    clocks), each event runs with the clock pinned to its own instant and is recorded at that
    instant. `before_event` is then called with each instant first, so that signals of elapsed
    periods are replayed in time order between the events. Charges are then made inside the
    transaction, because the next retry of a declined one counts from it; otherwise they are
    made after it commits (see collection). With `drafts_for_elapsed`, the invoices of periods
    that ended by `now` stay drafts.
    """
    steps = 0
    while order.status == "active" and steps < MAX_STEPS_PER_ORDER:
        due = next_due(session, order)
        if due is None or due > now:
            break
        if before_event is not None:
            before_event(due)
        if as_of_each_event:
            with clock.at(due):
                _process(
                    session, order, due, recorded_at=due, now=now, drafts_for_elapsed=drafts_for_elapsed, charge_inline=True
                )
        else:
            _process(
                session, order, due, recorded_at=now, now=now, drafts_for_elapsed=drafts_for_elapsed, charge_inline=False
            )
        order.billing_cursor = max(order.billing_cursor or due, due)
        steps += 1
    if steps >= MAX_STEPS_PER_ORDER:
        log.error("renewal.too_many_steps", extra={"organization_id": order.organization_id, "order_id": order.id})
    order.billing_due_at = next_due(session, order)
    session.flush()
    return steps


def next_due(session: Session, order: Order) -> datetime | None:
    """Return the earliest instant at which the order has billing work, or None."""
    if order.status != "active":
        return None
    candidates: list[datetime] = []
    if order.period_number == 0:
        candidates.append(order.start_date)
    elif order.period_end is not None:
        candidates.append(order.period_end)
    cursor = order.billing_cursor or order.start_date
    slot_start = allocations.next_slot_start(order, cursor)
    if slot_start is not None:
        candidates.append(slot_start)
    if order.end_date is not None:
        candidates.append(order.end_date)
    rollover = allocations.next_rollover_at(session, order)
    if rollover is not None:
        candidates.append(rollover)
    retry = session.scalar(
        select(func.min(Invoice.next_payment_attempt_at)).where(
            Invoice.order_id == order.id, Invoice.next_payment_attempt_at.is_not(None)
        )
    )
    if retry is not None:
        candidates.append(retry)
    return min(candidates, default=None)


def _process(
    session: Session,
    order: Order,
    due: datetime,
    *,
    recorded_at: datetime,
    now: datetime,
    drafts_for_elapsed: bool,
    charge_inline: bool,
) -> None:
    """Do everything due at `due`; writes are stamped `recorded_at`."""
    allocations.roll_over_due(session, order, due)

    if order.end_date is not None and order.end_date <= due:
        _end_order(session, order, recorded_at)
        return

    if order.period_number == 0 or (order.period_end is not None and order.period_end <= due):
        if order.scheduled_change is not None and order.period_number > 0:
            from tallystick.server.billing.changes import apply_scheduled_change

            apply_scheduled_change(session, order, order.period_end or due)
        period = schedule_of(order).period(order.period_number + 1)
        if period is None:
            _end_order(session, order, recorded_at)
            return
        post = order.auto_post_invoices and (not drafts_for_elapsed or period.end > now)
        start_period(session, order, period, recorded_at, post=post, observe_lag=recorded_at == now)

    allocations.allocate_due(session, order, order.period_number, due)
    _retry_payments(session, order, due, recorded_at, inline=charge_inline)


def start_period(
    session: Session, order: Order, period: Period, now: datetime, *, post: bool, observe_lag: bool = True
) -> Invoice:
    """Start `period`: claim it, invoice it, and post the invoice and plan its charge if `post`."""
    invoice = invoices.create_period_invoice(session, order, period, issued=max(now, period.start))
    session.add(
        BillingPeriod(
            id=new_id("billing_period"),
            organization_id=order.organization_id,
            order_id=order.id,
            number=period.number,
            start_date=period.start,
            end_date=period.end,
            invoice_id=invoice.id,
            created_at=now,
        )
    )
    order.period_number = period.number
    order.period_start = period.start
    order.period_end = period.end
    order.updated_at = now
    session.flush()

    if post:
        invoices.post_invoice(session, invoice, now)
        invoices.schedule_collection(invoice, order, now)
    if observe_lag and period.number > 1:
        RENEWAL_LAG.observe(max(0.0, (now - period.start).total_seconds()))
    log.info(
        "order.period_started",
        extra={
            "organization_id": order.organization_id,
            "order_id": order.id,
            "period_number": period.number,
            "invoice_id": invoice.id,
        },
    )
    return invoice


def _retry_payments(session: Session, order: Order, due: datetime, now: datetime, *, inline: bool) -> None:
    unpaid = list(
        session.scalars(
            select(Invoice)
            .where(Invoice.order_id == order.id, Invoice.next_payment_attempt_at <= due)
            .order_by(Invoice.next_payment_attempt_at, Invoice.number)
        )
    )
    for invoice in unpaid:
        if inline:
            invoices.charge_invoice(session, order, invoice, now)
        else:
            collection.defer_charge(session, order, invoice, now)


def _end_order(session: Session, order: Order, now: datetime) -> None:
    order.status = "ended"
    order.ended_at = order.end_date or now
    order.billing_due_at = None
    order.updated_at = now
    session.flush()
    log.info("order.ended", extra={"organization_id": order.organization_id, "order_id": order.id})


def renew_due_orders(
    transaction: Callable[[], AbstractContextManager[Session]], now: datetime, *, limit: int = 100
) -> int:
    """Advance up to `limit` orders whose billing is due by `now`, one transaction per order.

    `transaction` is `Store.transaction`. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets several
    processes work through the due orders side by side without waiting on one another. On
    SQLite the database write lock serializes them. A process that reads a due order just after
    another advanced it finds it no longer due, because the lock makes it read the committed
    row. Returns the number of orders advanced.
    """
    done = 0
    while done < limit:
        with transaction() as session:
            # Customers on a test clock live at the clock's time, which only an advance moves.
            on_test_clock = select(TestClockCustomer.customer_id).where(
                TestClockCustomer.customer_id == Order.customer_id
            )
            statement = (
                select(Order)
                .where(Order.billing_due_at <= now, Order.status == "active", ~on_test_clock.exists())
                .order_by(Order.billing_due_at, Order.id)
                .limit(1)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
            order = session.scalars(statement).first()
            if order is None:
                return done
            advance_order(session, order, now)
        done += 1
    return done


def renew_customer(session: Session, organization_id: str, customer_id: str, now: datetime) -> int:
    """Advance the customer's orders whose billing is due by `now`; return how many were due.

    One indexed query finds them; when none is due, nothing is locked or written.
    """
    due_ids = due_order_ids(session, organization_id, customer_id, now)
    for order_id in due_ids:
        order = lock_order(session, order_id)
        if order is not None:
            advance_order(session, order, now)
    return len(due_ids)


def due_order_ids(session: Session, organization_id: str, customer_id: str, now: datetime) -> list[str]:
    parameters = {"organization_id": organization_id, "customer_id": customer_id, "now": now}
    return list(session.scalars(_DUE_ORDER_IDS, parameters))


def select_customer_to_read(match: Any, customer: Any = Customer) -> Select[Any]:
    """Select a live customer matching `match`, with its test clock time and whether a renewal
    is due at the bound parameter `now` (at the clock's time for a customer on a test clock).

    `customer` is the model, or the columns of it to select.
    """
    # The due-order test of `due_order_ids`, at the customer's test clock time when it has one.
    now = func.coalesce(TestClock.frozen_time, bindparam("now", type_=UtcDateTime()))
    renewal_due = (
        select(Order.id)
        .where(
            Order.organization_id == Customer.organization_id,
            Order.customer_id == Customer.id,
            Order.billing_due_at <= now,
        )
        .exists()
    )
    return (
        select(customer, TestClock.frozen_time.label("clock_time"), renewal_due.label("renewal_due"))
        .select_from(Customer)
        .outerjoin(TestClockCustomer, TestClockCustomer.customer_id == Customer.id)
        .outerjoin(TestClock, TestClock.id == TestClockCustomer.test_clock_id)
        .where(Customer.organization_id == bindparam("organization_id"), Customer.deleted_at.is_(None), match)
    )


# Built once, with bound parameters, since every balance read runs them.
_CUSTOMER_TO_READ_BY_ID = select_customer_to_read(Customer.id == bindparam("customer_id"))
_CUSTOMER_TO_READ_BY_EXTERNAL_ID = select_customer_to_read(Customer.external_id == bindparam("external_id"))
_DUE_ORDER_IDS = (
    select(Order.id)
    .where(
        Order.organization_id == bindparam("organization_id"),
        Order.customer_id == bindparam("customer_id"),
        Order.billing_due_at <= bindparam("now"),
    )
    .order_by(Order.billing_due_at, Order.id)
)


@dataclass(frozen=True)
class CustomerToRead:
    """A customer about to be read, with its test clock's time and whether a renewal is due."""

    customer: Customer
    clock_time: datetime | None
    renewal_due: bool


def find_customer_to_read(
    session: Session, organization_id: str, *, customer_id: str | None = None, external_id: str | None = None
) -> CustomerToRead | None:
    """Find a live customer by id or external id, with what `refresh_for_read` needs, in one query."""
    parameters = {"organization_id": organization_id, "now": clock.now()}
    if external_id is not None:
        row = session.execute(_CUSTOMER_TO_READ_BY_EXTERNAL_ID, {**parameters, "external_id": external_id}).one_or_none()
    else:
        row = session.execute(_CUSTOMER_TO_READ_BY_ID, {**parameters, "customer_id": customer_id}).one_or_none()
    if row is None:
        return None
    customer, clock_time, renewal_due = row
    return CustomerToRead(customer, clock_time, bool(renewal_due))


def refresh_for_read(
    store: Store, session: Session, organization_id: str, customer_id: str, *, found: CustomerToRead | None = None
) -> datetime:
    """Bring the customer's billing up to date before a read; return the instant to read at.

    Only when the indexed due-order lookup finds work does this open a write transaction of its
    own. `session` (the read) is then rolled back, so that its next query starts a new snapshot
    that includes the renewal, because SQLite keeps a reader on the snapshot of its first
    query. A customer on a test clock is read, and renewed, at the clock's time. `found`, from
    `find_customer_to_read`, saves the two lookups.
    """
    from tallystick.server.billing.test_clocks import customer_clock_time

    if found is not None:
        clock_time = found.clock_time
        now = clock_time or clock.now()
        if not found.renewal_due:
            return now
    else:
        clock_time = customer_clock_time(session, customer_id)
        now = clock_time or clock.now()
        if not due_order_ids(session, organization_id, customer_id, now):
            return now
    with store.transaction() as write, clock.at(now) if clock_time is not None else nullcontext():
        renew_customer(write, organization_id, customer_id, now)
    session.rollback()
    return now
