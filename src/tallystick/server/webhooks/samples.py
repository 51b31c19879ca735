"""Made-up objects that test events carry, in the shape of the real events' objects.

A test event (`POST /webhooks/{name}/test`) lets a receiver check its parsing as well as its
signature check, so its `data` holds an object like the one the real event sends. Invoices,
payments and checkouts are serialized by the same functions as the real events; every id
starts with `test_`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tallystick.server.billing.invoices import invoice_payload, payment_payload
from tallystick.server.checkout.schemas import checkout_out
from tallystick.server.models import Checkout, Invoice, Payment

# A Pro plan of $79.00 a month.
_AMOUNT = 7900
_CURRENCY = "USD"
_CUSTOMER_ID = "test_customer"
_EXTERNAL_CUSTOMER_ID = "test-customer"
_CURRENCY_ID = "test_credits_currency"


def sample_payload(payload_key: str, now: datetime) -> dict[str, Any]:
    """Return the object a test event of the events sent under `payload_key` carries."""
    if payload_key == "invoice":
        return invoice_payload(_invoice(now))
    if payload_key == "payment":
        payment = Payment(
            id="test_payment",
            customer_id=_CUSTOMER_ID,
            provider="test",
            provider_payment_id="test_provider_payment",
            amount=_AMOUNT,
            currency=_CURRENCY,
            status="succeeded",
            paid_at=now,
        )
        return payment_payload(payment, _invoice(now), None)
    if payload_key == "checkout":
        return checkout_out(_checkout(now), "active").model_dump(mode="json", by_alias=True)
    if payload_key == "overage":
        return {
            "customerId": _CUSTOMER_ID,
            "creditsCurrencyId": _CURRENCY_ID,
            "overage": "5",
            "signalCount": 1,
            "signalIds": ["test_signal"],
            "eventNames": ["chat_message"],
        }
    # The credit events: depleted, low and cap reached.
    return {
        "customerId": _CUSTOMER_ID,
        "externalCustomerId": _EXTERNAL_CUSTOMER_ID,
        "creditsCurrencyId": _CURRENCY_ID,
        "available": "0",
    }


def _invoice(now: datetime) -> Invoice:
    return Invoice(
        id="test_invoice",
        number=1,
        display_number="INV-000001",
        customer_id=_CUSTOMER_ID,
        order_id="test_order",
        status="posted",
        payment_status="paid",
        source="order_based",
        currency=_CURRENCY,
        start_date=now,
        end_date=now + timedelta(days=30),
        issue_date=now,
        posted_date=now,
        due_date=now,
        subtotal=_AMOUNT,
        tax_amount=0,
        total=_AMOUNT,
        amount_paid=_AMOUNT,
        paid_at=now,
        billing_reason="period",
        period_number=1,
        payment_attempts=1,
        created_at=now,
        updated_at=now,
    )


def _checkout(now: datetime) -> Checkout:
    return Checkout(
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
