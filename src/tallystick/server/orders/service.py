"""Order rules: creating and activating orders, invoicing a period, recording payments, granting
the credits a period includes.

Credits are granted at the moment their benefit's `creditGrantTiming` names: on order
activation, when the period's invoice is posted, or when it is paid. Functions here only flush;
the caller owns the transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallystick.server import events
from tallystick.server.ids import new_id
from tallystick.server.ledger import service as ledger
from tallystick.server.models import (
    Customer,
    Invoice,
    InvoiceLine,
    Order,
    OrderLine,
    Organization,
    Payment,
    PaymentMethod,
)
from tallystick.server.orders.periods import add_months, first_period
from tallystick.server.orders.schemas import invoice_out
from tallystick.server.orders.terms import BenefitTerms, PlanTerms, monthly_allowance

log = logging.getLogger(__name__)

INVOICE_CREATED = "billing-invoice-created"
INVOICE_POSTED = "billing-invoice-posted"
INVOICE_PAID = "billing-invoice-paid"
PAYMENT_SUCCEEDED = "billing-payment-succeeded"
PAYMENT_FAILED = "billing-payment-failed"

# The ledger's originCode of credits that came with a purchased plan.
PURCHASED_ORIGIN = "purchased"


def _next_number(session: Session, organization_id: str, model: type[Order] | type[Invoice]) -> int:
    """Return the organization's next order or invoice number.

    The organization row is locked first (FOR UPDATE on PostgreSQL; SQLite writers hold the
    database write lock), so two transactions never take the same number.
    """
    session.execute(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )
    highest = session.scalar(
        select(func.max(model.number)).where(model.organization_id == organization_id)
    )
    return int(highest or 0) + 1


def create_order(
    session: Session,
    *,
    customer: Customer,
    terms: PlanTerms,
    start: datetime,
    checkout_id: str | None = None,
    payment_method_id: str | None = None,
) -> Order:
    """Create a draft order for `terms`, starting at `start`, with one line for the product."""
    organization_id = customer.organization_id
    order_id = new_id("order")
    line = OrderLine(
        id=new_id("order_line"),
        organization_id=organization_id,
        order_id=order_id,
        product_id=terms.product.id,
        name=terms.name,
        description=terms.product.description,
        line_type="STANDARD",
        start_date=start,
        attributes=[line_terms.snapshot() for line_terms in terms.lines],
        position=0,
    )
    order = Order(
        id=order_id,
        organization_id=organization_id,
        number=_next_number(session, organization_id, Order),
        name=terms.name,
        customer_id=customer.id,
        product_id=terms.product.id,
        plan_id=terms.plan.id if terms.plan is not None else None,
        checkout_id=checkout_id,
        status="draft",
        creation_state="draft",
        currency=terms.currency,
        start_date=start,
        billing_anchor=start.day,
        billing_frequency=terms.billing_frequency,
        billing_period_months=terms.period_months,
        period_amount=terms.period_amount,
        payment_method_id=payment_method_id,
        lines=[line],
    )
    session.add(order)
    session.flush()
    log.info(
        "order.created",
        extra={"organization_id": organization_id, "order_id": order.id, "customer_id": customer.id},
    )
    return order


def activate_order(session: Session, order: Order, now: datetime) -> None:
    """Make a draft order active and grant its first period's on_order_activation credits."""
    order.status = "active"
    order.creation_state = "active"
    order.activated_at = now
    order.version += 1
    session.flush()

    period_start, period_end = first_period(order.start_date, order.billing_period_months)
    grant_period_benefits(session, order, period_start, period_end, "on_order_activation")
    log.info("order.activated", extra={"organization_id": order.organization_id, "order_id": order.id})


def issue_first_invoice(session: Session, order: Order, now: datetime) -> Invoice:
    """Create the invoice of the order's first period: every charged line, recurring or one-time."""
    period_start, period_end = first_period(order.start_date, order.billing_period_months)
    number = _next_number(session, order.organization_id, Invoice)
    invoice = Invoice(
        id=new_id("invoice"),
        organization_id=order.organization_id,
        number=number,
        display_number=f"INV-{number:06d}",
        customer_id=order.customer_id,
        order_id=order.id,
        status="draft",
        payment_status="pending",
        source="order_based",
        currency=order.currency,
        start_date=period_start,
        end_date=period_end,
        issue_date=now,
        # Checkout invoices are due on receipt: the buyer pays on the spot.
        due_date=now,
        lines=_invoice_lines(order, period_start, period_end),
    )
    invoice.subtotal = sum(line.amount for line in invoice.lines)
    invoice.tax_amount = 0
    invoice.total = invoice.subtotal
    session.add(invoice)
    session.flush()

    events.record_event(session, order.organization_id, INVOICE_CREATED, _invoice_payload(invoice))
    log.info(
        "invoice.created",
        extra={"organization_id": order.organization_id, "invoice_id": invoice.id, "order_id": order.id},
    )
    return invoice


def _invoice_lines(order: Order, period_start: datetime, period_end: datetime) -> list[InvoiceLine]:
    lines = []
    for order_line in order.lines:
        for attribute in order_line.attributes:
            unit_price = attribute.get("unitPrice")
            if unit_price is None:
                continue
            lines.append(
                InvoiceLine(
                    id=new_id("invoice_line"),
                    organization_id=order.organization_id,
                    order_id=order.id,
                    order_line_id=order_line.id,
                    product_attribute_id=attribute["productAttributeId"],
                    description=f"{order_line.name}: {attribute['name']}",
                    quantity=1,
                    unit_price=int(unit_price),
                    amount=int(unit_price),
                    currency=order.currency,
                    start_date=period_start,
                    end_date=period_end,
                    position=len(lines),
                )
            )
    return lines


def post_invoice(session: Session, invoice: Invoice, order: Order, now: datetime) -> None:
    """Finalize the invoice and grant its period's on_invoice_posted credits."""
    invoice.status = "posted"
    invoice.posted_date = now
    invoice.updated_at = now
    session.flush()

    events.record_event(session, invoice.organization_id, INVOICE_POSTED, _invoice_payload(invoice))
    assert invoice.end_date is not None  # order-based invoices always cover a whole period
    grant_period_benefits(session, order, invoice.start_date, invoice.end_date, "on_invoice_posted")


def record_payment(
    session: Session,
    *,
    invoice: Invoice,
    order: Order,
    provider: str,
    provider_payment_id: str,
    payment_method: PaymentMethod | None,
    paid_at: datetime,
    checkout_id: str | None = None,
    idempotency_key: str | None = None,
) -> Payment:
    """Record full payment of `invoice`, mark it paid and grant its period's on_payment credits."""
    payment = Payment(
        id=new_id("payment"),
        organization_id=invoice.organization_id,
        customer_id=invoice.customer_id,
        invoice_id=invoice.id,
        order_id=order.id,
        checkout_id=checkout_id,
        payment_method_id=payment_method.id if payment_method is not None else None,
        provider=provider,
        provider_payment_id=provider_payment_id,
        idempotency_key=idempotency_key,
        amount=invoice.total - invoice.amount_paid,
        currency=invoice.currency,
        status="succeeded",
        paid_at=paid_at,
        created_at=paid_at,
    )
    session.add(payment)
    invoice.amount_paid += payment.amount
    invoice.payment_status = "paid"
    invoice.paid_at = paid_at
    invoice.updated_at = paid_at
    session.flush()

    events.record_event(
        session,
        invoice.organization_id,
        PAYMENT_SUCCEEDED,
        {"payment": payment_payload(payment, invoice, payment_method)},
    )
    events.record_event(session, invoice.organization_id, INVOICE_PAID, _invoice_payload(invoice))
    log.info(
        "payment.succeeded",
        extra={
            "organization_id": invoice.organization_id,
            "payment_id": payment.id,
            "invoice_id": invoice.id,
            "provider": provider,
        },
    )

    assert invoice.end_date is not None  # order-based invoices always cover a whole period
    grant_period_benefits(session, order, invoice.start_date, invoice.end_date, "on_payment")
    return payment


def payment_payload(
    payment: Payment, invoice: Invoice | None, payment_method: PaymentMethod | None
) -> dict[str, Any]:
    """Return the `payment` object of payment webhook events."""
    return {
        "id": payment.id,
        "invoiceId": invoice.id if invoice is not None else None,
        "invoiceNumber": invoice.display_number if invoice is not None else None,
        "customerId": payment.customer_id,
        "status": payment.status,
        "externalPaymentId": payment.provider_payment_id,
        "paymentDate": payment.paid_at.isoformat(),
        "amount": payment.amount,
        "currency": payment.currency,
        "provider": payment.provider,
        "paymentMethod": (
            {"brand": payment_method.brand, "last4": payment_method.last4}
            if payment_method is not None
            else None
        ),
    }


def _invoice_payload(invoice: Invoice) -> dict[str, Any]:
    return {"invoice": invoice_out(invoice).model_dump(mode="json", by_alias=True)}


def grant_period_benefits(
    session: Session, order: Order, period_start: datetime, period_end: datetime, timing: str
) -> None:
    """Grant the credits of one billing period whose benefits are due at `timing`.

    An upfront benefit grants its whole amount at the period start, usable until the period
    ends. A monthly benefit grants one month's share, usable for that month; the later months of
    a longer period are granted by renewals.

    NOTE: exactly-once per (order, period) rests on the caller: checkout completion runs once
    per order under the checkout's row lock. Renewals need a stored key per period.
    """
    for order_line in order.lines:
        for attribute in order_line.attributes:
            for snapshot in attribute.get("creditBenefits") or []:
                benefit = BenefitTerms.from_snapshot(snapshot)
                if benefit.credit_grant_timing != timing:
                    continue
                _grant_benefit(session, order, attribute["name"], benefit, period_start, period_end)


def _grant_benefit(
    session: Session,
    order: Order,
    line_name: str,
    benefit: BenefitTerms,
    period_start: datetime,
    period_end: datetime,
) -> None:
    if benefit.allocation_cadence == "upfront":
        amount, expires_at = benefit.amount, period_end
    else:
        amount = monthly_allowance(benefit, order.billing_period_months)
        expires_at = min(add_months(period_start, 1), period_end)
    if amount <= 0:
        return

    grant = ledger.grant(
        session,
        organization_id=order.organization_id,
        customer_id=order.customer_id,
        currency_id=benefit.credits_currency_id,
        amount=amount,
        starts_at=period_start,
        expires_at=expires_at,
        source="order_period",
        origin_code=PURCHASED_ORIGIN,
        order_id=order.id,
        period_start=period_start,
        period_end=expires_at,
        description=f"{order.name}: {line_name}",
    )
    log.info(
        "order.credits_granted",
        extra={
            "organization_id": order.organization_id,
            "order_id": order.id,
            "credit_grant_id": grant.id,
            "credit_benefit_id": benefit.benefit_id,
        },
    )
