"""Plan changes and cancellation of active orders.

Policy:
- An upgrade (a plan whose price per period is higher) takes effect at once. The price
  difference is prorated by the days left in the current period (the day of the change counts
  as left) and invoiced now. The allowance difference of the slot in progress is granted now,
  and later slots grant the new plan's allowance.
- A downgrade (same or lower price) takes effect when the current period ends: the customer
  keeps the current plan's allowance until then, and nothing is refunded.
- A plan of another billing frequency or currency cannot replace the current one; the
  customer cancels and buys the new plan.
- Cancellation ends the order when the current period ends; credits already granted stay
  usable until they expire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tallystick.server.billing import allocations, invoices
from tallystick.server.billing.periods import prorate_minor_units, whole_days
from tallystick.server.ids import new_id
from tallystick.server.models import Invoice, Order, OrderLine, PaymentMethod
from tallystick.server.orders.terms import PlanTerms

log = logging.getLogger(__name__)


class ChangeError(Exception):
    """The order cannot change to the requested plan; the message gives the reason, for the buyer."""


@dataclass(frozen=True)
class ChangeQuote:
    """The cost of changing an order to another plan now: `amount_due` in minor units."""

    kind: str  # upgrade or downgrade
    amount_due: int
    days_left: int
    period_days: int
    effective_at: datetime


@dataclass(frozen=True)
class ChangePayment:
    """A payment already collected for an upgrade (through a checkout)."""

    provider: str
    provider_payment_id: str
    method: PaymentMethod | None
    checkout_id: str | None
    idempotency_key: str | None


def quote_change(order: Order, terms: PlanTerms, now: datetime) -> ChangeQuote:
    """Return what changing `order` to `terms` at `now` costs; raise ChangeError if it cannot."""
    if order.status != "active" or order.period_number < 1 or order.period_start is None or order.period_end is None:
        raise ChangeError("This subscription has not started yet, so its plan cannot change.")
    if terms.plan is not None and terms.plan.id == order.plan_id:
        raise ChangeError("You already have this plan.")
    if terms.currency != order.currency:
        raise ChangeError(f"Your subscription is billed in {order.currency}; choose a plan priced in {order.currency}.")
    if terms.period_months != order.billing_period_months:
        raise ChangeError(
            "This plan bills at another frequency than your subscription. Cancel it first, then buy this plan."
        )

    period_days = whole_days(order.period_start, order.period_end)
    days_left = whole_days(now, order.period_end)
    difference = terms.period_amount - order.period_amount
    if difference > 0:
        amount = prorate_minor_units(difference, days_left, period_days)
        return ChangeQuote("upgrade", amount, days_left, period_days, now)
    return ChangeQuote("downgrade", 0, days_left, period_days, order.period_end)


def change_plan(
    session: Session, order: Order, terms: PlanTerms, now: datetime, *, payment: ChangePayment | None
) -> ChangeQuote:
    """Upgrade the order now or schedule its downgrade; the caller holds the order's row lock.

    An upgrade's prorated invoice is marked paid with `payment` when the buyer paid at
    checkout. Otherwise it is charged to the saved payment method like a renewal.
    """
    quote = quote_change(order, terms, now)
    if quote.kind == "downgrade":
        order.scheduled_change = _change_snapshot(terms, now)
        order.version += 1
        order.updated_at = now
        session.flush()
        log.info("order.downgrade_scheduled", extra={"organization_id": order.organization_id, "order_id": order.id})
        return quote

    old_line, new_line = _replace_line(session, order, terms, now)
    old_name = order.name
    _adopt_terms(order, terms, now)
    invoice = invoices.create_upgrade_invoice(
        session,
        order,
        line_id=new_line.id,
        description=f"Upgrade from {old_name} to {order.name}, {quote.days_left} of {quote.period_days} days",
        amount=quote.amount_due,
        issued=now,
    )
    invoices.post_invoice(session, invoice, now)
    _pay_upgrade(session, order, invoice, payment, now)
    allocations.grant_upgrade_difference(session, order, old_line, new_line, now)
    log.info(
        "order.upgraded",
        extra={"organization_id": order.organization_id, "order_id": order.id, "invoice_id": invoice.id},
    )
    return quote


def _pay_upgrade(session: Session, order: Order, invoice: Invoice, payment: ChangePayment | None, now: datetime) -> None:
    if invoice.payment_status == "paid":
        return
    if payment is not None:
        invoices.record_payment(
            session,
            invoice=invoice,
            order=order,
            provider=payment.provider,
            provider_payment_id=payment.provider_payment_id,
            payment_method=payment.method,
            paid_at=now,
            checkout_id=payment.checkout_id,
            idempotency_key=payment.idempotency_key,
        )
        return
    invoices.schedule_collection(invoice, order, now)
    if invoice.next_payment_attempt_at is not None:
        invoices.charge_invoice(session, order, invoice, now)


def apply_scheduled_change(session: Session, order: Order, at: datetime) -> None:
    """Switch the order to its scheduled plan at `at`, the end of the period it was asked in."""
    change = order.scheduled_change
    if change is None:
        return
    _replace_line_with(session, order, change["name"], change["attributes"], at, product_id=change["productId"])
    order.plan_id = change.get("planId")
    order.name = change["name"]
    order.period_amount = int(change["periodAmount"])
    order.scheduled_change = None
    order.version += 1
    order.updated_at = at
    session.flush()
    log.info("order.downgraded", extra={"organization_id": order.organization_id, "order_id": order.id})


def cancel_at_period_end(session: Session, order: Order, now: datetime) -> None:
    """End the order when its current period ends (at once when no period has started)."""
    order.end_date = order.period_end if order.period_end is not None and order.period_end > now else now
    order.scheduled_change = None
    order.version += 1
    order.updated_at = now
    session.flush()
    log.info("order.cancellation_scheduled", extra={"organization_id": order.organization_id, "order_id": order.id})


def _change_snapshot(terms: PlanTerms, now: datetime) -> dict[str, Any]:
    return {
        "planId": terms.plan.id if terms.plan is not None else None,
        "productId": terms.product.id,
        "name": terms.name,
        "periodAmount": terms.period_amount,
        "attributes": [line.snapshot() for line in terms.lines],
        "requestedAt": now.isoformat(),
    }


def _adopt_terms(order: Order, terms: PlanTerms, now: datetime) -> None:
    order.plan_id = terms.plan.id if terms.plan is not None else None
    order.name = terms.name
    order.period_amount = terms.period_amount
    order.scheduled_change = None
    order.version += 1
    order.updated_at = now


def _replace_line(session: Session, order: Order, terms: PlanTerms, now: datetime) -> tuple[OrderLine, OrderLine]:
    snapshots = [line.snapshot() for line in terms.lines]
    return _replace_line_with(session, order, terms.name, snapshots, now, product_id=terms.product.id)


def _replace_line_with(
    session: Session, order: Order, name: str, attributes: list[dict[str, Any]], at: datetime, *, product_id: str
) -> tuple[OrderLine, OrderLine]:
    """End the order's line for `product_id` at `at` and add one with `attributes` from `at`."""
    current = [
        line
        for line in order.lines
        if line.product_id == product_id and line.end_date is None and line.line_type in allocations.BILLED_LINE_TYPES
    ]
    if not current:
        raise ChangeError("This subscription has no line for this product.")
    old_line = current[0]
    old_line.end_date = at
    old_line.updated_at = at
    new_line = OrderLine(
        id=new_id("order_line"),
        organization_id=order.organization_id,
        order_id=order.id,
        product_id=product_id,
        name=name,
        description=old_line.description,
        line_type=old_line.line_type,
        start_date=at,
        attributes=attributes,
        position=max(line.position for line in order.lines) + 1,
        created_at=at,
        updated_at=at,
    )
    order.lines.append(new_line)
    session.flush()
    return old_line, new_line
