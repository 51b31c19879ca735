"""Made-up objects that test events carry, in the shape and state of the real events' objects.

A test event (`POST /webhooks/{name}/test`) lets a receiver check its parsing as well as its
signature check. So its `data` contains an object like the one the real event sends, in the
same state. For example, billing-invoice-paid carries a paid invoice, and
billing-payment-failed a failed payment. Invoices, payments and checkouts are serialized by the same
functions as the real events. Every id starts with `test_`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tallystick.server import events
from tallystick.server.billing.invoices import invoice_payload, payment_payload
from tallystick.server.checkout.schemas import checkout_out
from tallystick.server.errors import timestamp_text
from tallystick.server.models import Checkout, Invoice, Payment

# A Pro plan of $79.00 a month.
_AMOUNT = 7900
_CURRENCY = "USD"
_CUSTOMER_ID = "test_customer"
_EXTERNAL_CUSTOMER_ID = "test-customer"
_CURRENCY_ID = "test_credits_currency"


def sample_payload(event_name: str, now: datetime) -> dict[str, Any]:
    """Return the object a test event of `event_name` carries."""
    if event_name == events.INVOICE_CREATED:
        return invoice_payload(_invoice(now, status="draft", paid=False))
    if event_name == events.INVOICE_POSTED:
        return invoice_payload(_invoice(now, status="posted", paid=False))
    if event_name == events.INVOICE_PAID:
        return invoice_payload(_invoice(now, status="posted", paid=True))
    if event_name == events.PAYMENT_SUCCEEDED:
        return payment_payload(_payment(now), _invoice(now, status="posted", paid=True), None)
    if event_name == events.PAYMENT_FAILED:
        return _failed_payment(now)
    if event_name in (events.CHECKOUT_CREATED, events.CHECKOUT_COMPLETED, events.CHECKOUT_EXPIRED):
        return _checkout_payload(event_name, now)
    if event_name == events.OVERAGE_INCURRED:
        return {
            "customerId": _CUSTOMER_ID,
            "creditsCurrencyId": _CURRENCY_ID,
            "overage": "5",
            "signalCount": 1,
            "signalIds": ["test_signal"],
            "eventNames": ["chat_message"],
        }
    credits = {"customerId": _CUSTOMER_ID, "externalCustomerId": _EXTERNAL_CUSTOMER_ID, "creditsCurrencyId": _CURRENCY_ID}
    if event_name == events.CREDITS_LOW:
        return {**credits, "threshold": "100", "available": "99"}
    # Depleted, and credit cap reached, which is never sent for real.
    return {**credits, "available": "0", "cause": "consumption"}


def _invoice(now: datetime, *, status: str, paid: bool) -> Invoice:
    return Invoice(
        id="test_invoice",
        number=1,
        display_number="INV-000001",
        customer_id=_CUSTOMER_ID,
        order_id="test_order",
        status=status,
        payment_status="paid" if paid else "pending",
        source="order_based",
        currency=_CURRENCY,
        start_date=now,
        end_date=now + timedelta(days=30),
        issue_date=now,
        posted_date=now if status == "posted" else None,
        due_date=now,
        subtotal=_AMOUNT,
        tax_amount=0,
        total=_AMOUNT,
        amount_paid=_AMOUNT if paid else 0,
        paid_at=now if paid else None,
        billing_reason="period",
        period_number=1,
        payment_attempts=1 if paid else 0,
        created_at=now,
        updated_at=now,
    )


def _payment(now: datetime) -> Payment:
    return Payment(
        id="test_payment",
        customer_id=_CUSTOMER_ID,
        provider="test",
        provider_payment_id="test_provider_payment",
        amount=_AMOUNT,
        currency=_CURRENCY,
        status="succeeded",
        paid_at=now,
    )


def _failed_payment(now: datetime) -> dict[str, Any]:
    # The keys of invoices._record_failure's payload: a declined first attempt.
    return {
        "id": None,
        "invoiceId": "test_invoice",
        "invoiceNumber": "INV-000001",
        "orderId": "test_order",
        "customerId": _CUSTOMER_ID,
        "status": "failed",
        "amount": _AMOUNT,
        "currency": _CURRENCY,
        "provider": "test",
        "failureCode": "card_declined",
        "failureMessage": "Your card was declined. Try another card.",
        "attempt": 1,
        "nextAttemptAt": timestamp_text(now + timedelta(hours=24)),
        "paymentMethod": {"brand": "visa", "last4": "0341"},
    }


def _checkout_payload(event_name: str, now: datetime) -> dict[str, Any]:
    checkout = Checkout(
        id="test_checkout",
        url="https://billing.example.com/checkout/test_checkout",
        products=[{"id": "test_product"}],
        customer_id=_CUSTOMER_ID,
        external_customer_id=_EXTERNAL_CUSTOMER_ID,
        success_url="https://app.example.com/welcome",
        expires_at=now + timedelta(hours=24),
        collect_address=False,
        collect_phone=False,
        single_use=True,
        currency=_CURRENCY,
        allowed_currencies=[_CURRENCY],
        created_at=now,
        updated_at=now,
    )
    status = "active"
    if event_name == events.CHECKOUT_COMPLETED:
        status = "completed"
        checkout.completed_at = now
        checkout.order_id = "test_order"
    elif event_name == events.CHECKOUT_EXPIRED:
        status = "expired"
        checkout.expires_at = now
    return checkout_out(checkout, status).model_dump(mode="json", by_alias=True)
