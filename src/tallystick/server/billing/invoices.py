"""Invoices of billing periods and plan changes: creation, posting, charging and payment.

A period's invoice charges every recurring line of the order in force at the period start (the
first period also charges one-time lines), prorated by days for a period shorter than a full
one. A posted invoice of an order with a saved payment method is charged at once, as soon as
the transaction that posted it commits (see collection). A declined charge is retried after
each delay of `renewal_payment_retry_hours`, and then the invoice is marked overdue. Credits of
on_payment benefits wait until the invoice is paid.

Functions here only flush; the caller owns the transaction and holds the order's row lock.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallystick.server import events
from tallystick.server.billing import allocations
from tallystick.server.billing.periods import Period, prorate_minor_units
from tallystick.server.checkout.providers import (
    PaymentDeclined,
    PaymentOutcome,
    PaymentProvider,
    PaymentRequest,
    PaymentSucceeded,
    PaymentUnanswered,
    provider_for,
)
from tallystick.server.errors import timestamp_text
from tallystick.server.ids import new_id
from tallystick.server.models import (
    Invoice,
    InvoiceLine,
    Order,
    Organization,
    Payment,
    PaymentMethod,
)
from tallystick.server.orders.schemas import invoice_out
from tallystick.server.settings import get_settings

log = logging.getLogger(__name__)

_NET_DAYS = re.compile(r"(\d{1,3})")


def next_number(session: Session, organization_id: str, model: type[Order | Invoice]) -> int:
    """Return the organization's next order or invoice number.

    The organization row is locked first (FOR NO KEY UPDATE on PostgreSQL; SQLite writers hold
    the database write lock), so two transactions never take the same number. FOR UPDATE would
    deadlock: every insert of a row referencing the organization takes a KEY SHARE lock on it,
    which FOR UPDATE waits for and FOR NO KEY UPDATE does not.
    """
    session.execute(
        select(Organization.id).where(Organization.id == organization_id).with_for_update(key_share=True)
    )
    highest = session.scalar(select(func.max(model.number)).where(model.organization_id == organization_id))
    return int(highest or 0) + 1


def due_date(order: Order, issued: datetime) -> datetime:
    """Return when an invoice issued at `issued` is due: net N days when the order's payment
    terms name a number of days (such as "net_30"), else on receipt."""
    match = _NET_DAYS.search(order.payment_terms or "")
    return issued + timedelta(days=int(match.group(1))) if match else issued


def create_period_invoice(session: Session, order: Order, period: Period, issued: datetime) -> Invoice:
    """Create the draft invoice of one billing period and record billing-invoice-created."""
    invoice = _new_invoice(session, order, issued, start=period.start, end=period.end, reason="period")
    invoice.period_number = period.number
    for line in order.lines:
        if line.line_type not in allocations.BILLED_LINE_TYPES or not allocations.line_covers(line, period.start):
            continue
        for attribute in line.attributes or []:
            unit_price = attribute.get("unitPrice")
            if unit_price is None:
                continue
            recurring = attribute.get("recurring", True)
            if not recurring and period.number != 1:
                continue
            quantity = int(attribute.get("quantity") or 1)
            amount = int(unit_price) * quantity
            if recurring:
                amount = prorate_minor_units(amount, period.days, period.nominal_days)
            invoice.lines.append(
                _line(order, invoice, line.id, attribute, f"{line.name}: {attribute['name']}", quantity, int(unit_price), amount)
            )
    return _finish_new(session, order, invoice)


def create_upgrade_invoice(
    session: Session, order: Order, *, line_id: str, description: str, amount: int, issued: datetime
) -> Invoice:
    """Create the draft invoice of a mid-period upgrade: one line with the prorated difference."""
    assert order.period_end is not None
    invoice = _new_invoice(session, order, issued, start=issued, end=order.period_end, reason="upgrade")
    invoice.period_number = order.period_number
    invoice.lines.append(_line(order, invoice, line_id, None, description, 1, amount, amount))
    return _finish_new(session, order, invoice)


def _new_invoice(
    session: Session, order: Order, issued: datetime, *, start: datetime, end: datetime, reason: str
) -> Invoice:
    number = next_number(session, order.organization_id, Invoice)
    return Invoice(
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
        start_date=start,
        end_date=end,
        issue_date=issued,
        due_date=due_date(order, issued),
        billing_reason=reason,
        purchase_order_reference=order.purchase_order_reference,
        created_at=issued,
        updated_at=issued,
        lines=[],
    )


def _line(
    order: Order,
    invoice: Invoice,
    order_line_id: str,
    attribute: dict[str, Any] | None,
    description: str,
    quantity: int,
    unit_price: int,
    amount: int,
) -> InvoiceLine:
    return InvoiceLine(
        id=new_id("invoice_line"),
        organization_id=order.organization_id,
        order_id=order.id,
        order_line_id=order_line_id,
        product_attribute_id=attribute.get("productAttributeId") if attribute else None,
        description=description,
        quantity=quantity,
        unit_price=unit_price,
        amount=amount,
        currency=order.currency,
        start_date=invoice.start_date,
        end_date=invoice.end_date or invoice.start_date,
        position=len(invoice.lines),
        created_at=invoice.issue_date,
        updated_at=invoice.issue_date,
    )


def _finish_new(session: Session, order: Order, invoice: Invoice) -> Invoice:
    invoice.subtotal = sum(line.amount for line in invoice.lines)
    invoice.tax_amount = 0
    invoice.total = invoice.subtotal
    session.add(invoice)
    session.flush()
    events.record_event(session, order.organization_id, events.INVOICE_CREATED, invoice_payload(invoice))
    log.info(
        "invoice.created",
        extra={"organization_id": order.organization_id, "invoice_id": invoice.id, "order_id": order.id},
    )
    return invoice


def post_invoice(session: Session, invoice: Invoice, now: datetime) -> None:
    """Finalize a draft invoice; one with nothing to pay is paid at the same time."""
    if invoice.status != "draft":
        return
    invoice.status = "posted"
    invoice.posted_date = now
    invoice.updated_at = now
    if invoice.total == 0:
        invoice.payment_status = "paid"
        invoice.paid_at = now
    session.flush()
    events.record_event(session, invoice.organization_id, events.INVOICE_POSTED, invoice_payload(invoice))
    if invoice.total == 0:
        events.record_event(session, invoice.organization_id, events.INVOICE_PAID, invoice_payload(invoice))


def schedule_collection(invoice: Invoice, order: Order, now: datetime) -> None:
    """Mark a posted, unpaid invoice for charging now when the order has a saved payment method."""
    if invoice.status == "posted" and invoice.payment_status != "paid" and order.payment_method_id is not None:
        invoice.next_payment_attempt_at = now


@dataclass(frozen=True)
class Charge:
    """One attempt to charge an invoice to the order's saved payment method.

    `at` is the instant the attempt belongs to: its payment or failure is recorded then, and
    the next retry counts from it. `method` and `provider` are loaded already, so the charge
    can be made after the transaction that claimed it has ended.
    """

    organization_id: str
    order_id: str
    invoice_id: str
    attempt: int
    request: PaymentRequest
    method: PaymentMethod
    provider: PaymentProvider
    at: datetime

    def is_claimed_by(self, invoice: Invoice) -> bool:
        """Return whether `invoice` still waits for this attempt's outcome."""
        return (
            invoice.status == "posted"
            and invoice.payment_status != "paid"
            and invoice.payment_attempts == self.attempt - 1
            and invoice.payment_idempotency_key == self.request.idempotency_key
        )


def claim_charge(session: Session, order: Order, invoice: Invoice, now: datetime) -> Charge | None:
    """Prepare the next charge of a posted, unpaid invoice, or return None when there is none.

    The attempt's idempotency key is stored on the invoice until its outcome is recorded. An
    attempt whose outcome was never recorded (the provider did not respond, or the process
    stopped) is retried with the same key, so a charge that went through is not made twice.
    """
    invoice.next_payment_attempt_at = None
    method = session.get(PaymentMethod, order.payment_method_id) if order.payment_method_id else None
    if invoice.payment_status == "paid" or invoice.status != "posted" or method is None:
        return None
    attempt = invoice.payment_attempts + 1
    # The method is part of the key: a provider rejects one key reused with other parameters.
    key = invoice.payment_idempotency_key or f"invoice:{invoice.id}:attempt:{attempt}:{method.id}"
    invoice.payment_idempotency_key = key
    request = PaymentRequest(
        organization_id=invoice.organization_id,
        checkout_id=None,
        amount=invoice.total - invoice.amount_paid,
        currency=invoice.currency,
        description=f"{order.name}: {invoice.display_number}",
        idempotency_key=key,
        metadata={"invoice_id": invoice.id, "order_id": order.id},
    )
    return Charge(
        organization_id=invoice.organization_id,
        order_id=order.id,
        invoice_id=invoice.id,
        attempt=attempt,
        request=request,
        method=method,
        provider=provider_for(session, order.organization_id, method.provider),
        at=now,
    )


def charge_invoice(session: Session, order: Order, invoice: Invoice, now: datetime) -> bool:
    """Charge the unpaid rest of a posted invoice inside the caller's transaction; return
    whether it is paid now.

    NOTE: the provider is called while the transaction holds its locks: the order's row, and
    the organization's when it also numbered an invoice (on SQLite, the database write lock).
    Renewals in real time use `collection.defer_charge` instead; replays of elapsed time and
    mid-period upgrades charge here.
    """
    charge = claim_charge(session, order, invoice, now)
    if charge is None:
        return invoice.payment_status == "paid"
    outcome = charge.provider.charge_saved_method(charge.request, charge.method)
    return record_charge_outcome(session, order, invoice, charge, outcome)


def record_charge_outcome(
    session: Session, order: Order, invoice: Invoice, charge: Charge, outcome: PaymentOutcome
) -> bool:
    """Store the provider's outcome of `charge`; return whether the invoice is paid now.

    A decline schedules the next attempt after the next retry delay, or marks the invoice
    overdue when none is left. A charge whose result is unknown (the provider was unreachable)
    keeps its idempotency key for the next attempt.
    """
    invoice.payment_attempts = charge.attempt
    invoice.next_payment_attempt_at = None

    if isinstance(outcome, PaymentSucceeded):
        invoice.payment_idempotency_key = None
        invoice.last_payment_error = None
        record_payment(
            session,
            invoice=invoice,
            order=order,
            provider=outcome.provider,
            provider_payment_id=outcome.provider_payment_id,
            payment_method=charge.method,
            paid_at=charge.at,
        )
        return True

    if isinstance(outcome, PaymentUnanswered):
        code, message = "provider_unanswered", outcome.message
    else:
        assert isinstance(outcome, PaymentDeclined)
        invoice.payment_idempotency_key = None
        code, message = outcome.code, outcome.message
    _record_failure(session, order, invoice, charge.method, code, message, charge.at)
    return False


def _record_failure(
    session: Session, order: Order, invoice: Invoice, method: PaymentMethod, code: str, message: str, now: datetime
) -> None:
    delays = get_settings().renewal_payment_retry_hours
    retries_used = invoice.payment_attempts - 1
    invoice.last_payment_error = f"{code}: {message}"[:500]
    if retries_used < len(delays):
        invoice.next_payment_attempt_at = now + timedelta(hours=delays[retries_used])
    else:
        invoice.payment_status = "overdue"
    invoice.updated_at = now
    session.flush()

    payload = {
        "id": None,
        "invoiceId": invoice.id,
        "invoiceNumber": invoice.display_number,
        "orderId": order.id,
        "customerId": invoice.customer_id,
        "status": "failed",
        "amount": invoice.total - invoice.amount_paid,
        "currency": invoice.currency,
        "provider": method.provider,
        "failureCode": code,
        "failureMessage": message,
        "attempt": invoice.payment_attempts,
        "nextAttemptAt": timestamp_text(invoice.next_payment_attempt_at) if invoice.next_payment_attempt_at else None,
        "paymentMethod": {"brand": method.brand, "last4": method.last4},
    }
    events.record_event(session, invoice.organization_id, events.PAYMENT_FAILED, payload)
    log.warning(
        "payment.failed",
        extra={
            "organization_id": invoice.organization_id,
            "invoice_id": invoice.id,
            "order_id": order.id,
            "attempt": invoice.payment_attempts,
            "failure_code": code,
            "retry_at": invoice.next_payment_attempt_at.isoformat() if invoice.next_payment_attempt_at else None,
        },
    )


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
    invoice.next_payment_attempt_at = None
    invoice.updated_at = paid_at
    session.flush()

    events.record_event(
        session,
        invoice.organization_id,
        events.PAYMENT_SUCCEEDED,
        payment_payload(payment, invoice, payment_method),
    )
    events.record_event(session, invoice.organization_id, events.INVOICE_PAID, invoice_payload(invoice))
    log.info(
        "payment.succeeded",
        extra={
            "organization_id": invoice.organization_id,
            "payment_id": payment.id,
            "invoice_id": invoice.id,
            "provider": provider,
        },
    )

    if invoice.billing_reason == "period" and invoice.period_number is not None and order.status == "active":
        allocations.allocate_due(session, order, invoice.period_number, paid_at)
    return payment


def payment_payload(payment: Payment, invoice: Invoice | None, payment_method: PaymentMethod | None) -> dict[str, Any]:
    """Return the `payment` object of payment webhook events."""
    return {
        "id": payment.id,
        "invoiceId": invoice.id if invoice is not None else None,
        "invoiceNumber": invoice.display_number if invoice is not None else None,
        "customerId": payment.customer_id,
        "status": payment.status,
        "externalPaymentId": payment.provider_payment_id,
        "paymentDate": timestamp_text(payment.paid_at),
        "amount": payment.amount,
        "currency": payment.currency,
        "provider": payment.provider,
        "paymentMethod": (
            {"brand": payment_method.brand, "last4": payment_method.last4} if payment_method is not None else None
        ),
    }


def invoice_payload(invoice: Invoice) -> dict[str, Any]:
    """Return the invoice as invoice webhook events send it, under the envelope's data.invoice."""
    return invoice_out(invoice).model_dump(mode="json", by_alias=True)
