"""The `stripe` provider against a loopback stand-in for the Stripe API: Checkout Session
redirect, completion on the signed webhook, renewals on the saved card with declines, retries
and unanswered requests, and the payment settings endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from tallystick.server.models import Order, Payment, PaymentMethod
from tallystick.server.settings import get_settings
from tests.billing_helpers import available, create_chat_catalog, frozen, order_grants, order_invoices
from tests.checkout_helpers import ADDRESS, create_checkout, hosted_page
from tests.stripe_stub import StripeStub, fixture, running_stub, signed_event

JAN_31 = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
FEB_28 = datetime(2026, 2, 28, 9, 30, tzinfo=UTC)
SECRET_KEY = "sk_test_51TallystickStubKey0000"
WEBHOOK_SECRET = "whsec_tallystick_stub_signing_secret"


@pytest.fixture
def stripe_api() -> Iterator[StripeStub]:
    """Point the stripe library at the loopback stand-in for the duration of one test."""
    with running_stub() as stub:
        os.environ["TALLYSTICK_STRIPE_API_BASE"] = stub.url
        get_settings.cache_clear()
        try:
            yield stub
        finally:
            del os.environ["TALLYSTICK_STRIPE_API_BASE"]
            get_settings.cache_clear()


def use_stripe(tenant) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = tenant.http.put(
        "/payment-settings",
        json={"provider": "stripe", "stripeSecretKey": SECRET_KEY, "stripeWebhookSecret": WEBHOOK_SECRET},
    )
    assert response.status_code == 200, response.text
    return response.json()


def pay_on_stripe(tenant, stripe_api: StripeStub, catalog, plan: str, customer: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Submit the hosted page (which redirects to Stripe) and deliver Stripe's signed event."""
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId=customer)
    page = hosted_page(checkout)
    _, token = page.open()
    response = page.submit(token, {"option": catalog.plans[plan], **ADDRESS})
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")

    created = stripe_api.calls("POST", "/v1/checkout/sessions")[-1]
    event = fixture("event_checkout_session_completed")
    event["data"]["object"]["metadata"] = {
        key[len("metadata[") : -1]: value for key, value in created.params.items() if key.startswith("metadata[")
    }
    body, signature = signed_event(event, WEBHOOK_SECRET)
    delivered = tenant.http.post(
        f"{tenant.server.root}/webhooks/stripe/{tenant.organization_id}",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )
    assert delivered.status_code == 200, delivered.text
    return {"checkout": checkout, "created": created, "event": event, "delivered": delivered.json()}


def test_checkout_redirects_to_stripe_and_completes_on_webhook(tenant, store, stripe_api):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    use_stripe(tenant)

    with frozen(JAN_31):
        paid = pay_on_stripe(tenant, stripe_api, catalog, "Starter", "stripe-1")
        assert available(tenant, "stripe-1") == Decimal(500)

    created = paid["created"]
    assert created.authorization == f"Bearer {SECRET_KEY}"
    assert created.idempotency_key
    assert created.params["mode"] == "payment"
    assert created.params["line_items[0][price_data][unit_amount]"] == "2900"
    assert created.params["line_items[0][price_data][currency]"] == "usd"
    assert created.params["payment_intent_data[setup_future_usage]"] == "off_session"
    assert created.params["metadata[tallystick_checkout_id]"] == paid["checkout"]["id"]
    assert paid["delivered"] == {"received": True, "handled": True}

    checkout = tenant.http.get(f"/checkouts/{paid['checkout']['id']}").json()
    assert checkout["status"] == "completed"
    with store.read_sessions() as session:
        [method] = session.scalars(select(PaymentMethod).where(PaymentMethod.organization_id == tenant.organization_id))
        [payment] = session.scalars(select(Payment).where(Payment.organization_id == tenant.organization_id))
    assert (method.provider, method.provider_method_id, method.provider_customer_id) == (
        "stripe",
        "pm_1QnXyY2eZvKYlo2CqRsTuVwX",
        "cus_RqT7uVwXyZ0123",
    )
    assert (method.brand, method.last4) == ("visa", "4242")
    assert (payment.provider_payment_id, payment.amount) == ("pi_3QnXyZ2eZvKYlo2C0hIjKlMn", 2900)


def test_repeated_event_completes_once(tenant, store, stripe_api):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    use_stripe(tenant)
    with frozen(JAN_31):
        paid = pay_on_stripe(tenant, stripe_api, catalog, "Starter", "stripe-2")
        body, signature = signed_event(paid["event"], WEBHOOK_SECRET)
        again = tenant.http.post(
            f"{tenant.server.root}/webhooks/stripe/{tenant.organization_id}",
            content=body,
            headers={"Stripe-Signature": signature},
        )

    assert again.status_code == 200
    with store.read_sessions() as session:
        orders = session.scalars(select(Order).where(Order.organization_id == tenant.organization_id)).all()
        payments = session.scalars(select(Payment).where(Payment.organization_id == tenant.organization_id)).all()
    assert len(orders) == 1
    assert len(payments) == 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, signature: (body, signature.replace("v1=", "v1=00")),
        lambda body, signature: (body.replace(b'"paid"', b'"PAID"'), signature),
        lambda body, signature: (body, "t=1,v1=" + signature.split("v1=")[1]),
        lambda body, signature: (body, ""),
    ],
    ids=["wrong digest", "altered body", "old timestamp", "missing header"],
)
def test_webhook_rejects_unverified_event(tenant, store, stripe_api, tamper):  # type: ignore[no-untyped-def]
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    use_stripe(tenant)
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="stripe-3")
    event = fixture("event_checkout_session_completed")
    event["data"]["object"]["metadata"] = {
        "tallystick_checkout_id": checkout["id"],
        "tallystick_offer": catalog.plans["Starter"],
        "tallystick_currency": "USD",
        "tallystick_attempt": "forged",
    }
    body, signature = tamper(*signed_event(event, WEBHOOK_SECRET))

    response = tenant.http.post(
        f"{tenant.server.root}/webhooks/stripe/{tenant.organization_id}",
        content=body,
        headers={"Stripe-Signature": signature},
    )

    assert response.status_code == 400
    assert tenant.http.get(f"/checkouts/{checkout['id']}").json()["status"] == "active"


def test_declined_renewal_is_retried_then_paid(tenant, store, stripe_api):
    catalog = create_chat_catalog(tenant, [("Pro", 7900, 2000)], timing="on_payment")
    use_stripe(tenant)
    with frozen(JAN_31):
        order_id = tenant.http.get(
            f"/checkouts/{pay_on_stripe(tenant, stripe_api, catalog, 'Pro', 'stripe-4')['checkout']['id']}"
        ).json()["orderId"]
    stripe_api.intent_outcomes = ["decline"]

    with frozen(FEB_28):
        assert available(tenant, "stripe-4") == Decimal(0)
    renewal = order_invoices(store, order_id)[-1]
    assert (renewal.payment_status, renewal.payment_attempts) == ("pending", 1)
    assert renewal.last_payment_error == "card_declined: Your card has insufficient funds."

    with frozen(FEB_28 + timedelta(hours=24)):
        assert available(tenant, "stripe-4") == Decimal(2000)
    renewal = order_invoices(store, order_id)[-1]
    assert (renewal.payment_status, renewal.payment_attempts, renewal.next_payment_attempt_at) == ("paid", 2, None)

    [first, second] = stripe_api.calls("POST", "/v1/payment_intents")
    assert first.idempotency_key != second.idempotency_key
    for call in (first, second):
        assert call.params["amount"] == "7900"
        assert call.params["off_session"] == "true"
        assert call.params["confirm"] == "true"
        assert call.params["customer"] == "cus_RqT7uVwXyZ0123"
        assert call.params["payment_method"] == "pm_1QnXyY2eZvKYlo2CqRsTuVwX"
    grant = order_grants(store, order_id)[-1]
    assert (grant.amount, grant.starts_at) == (Decimal(2000), FEB_28)


def test_unanswered_charge_is_retried_with_same_key(tenant, store, stripe_api):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    use_stripe(tenant)
    with frozen(JAN_31):
        checkout_id = pay_on_stripe(tenant, stripe_api, catalog, "Starter", "stripe-5")["checkout"]["id"]
        order_id = tenant.http.get(f"/checkouts/{checkout_id}").json()["orderId"]
    # The library's own two retries get a 500 too, so the charge stays unanswered.
    stripe_api.intent_outcomes = ["error", "error", "error"]

    with frozen(FEB_28):
        available(tenant, "stripe-5")
    renewal = order_invoices(store, order_id)[-1]
    assert (renewal.payment_status, renewal.payment_attempts) == ("pending", 1)
    assert renewal.payment_idempotency_key is not None

    with frozen(FEB_28 + timedelta(hours=24)):
        available(tenant, "stripe-5")
    renewal = order_invoices(store, order_id)[-1]
    assert renewal.payment_status == "paid"
    keys = {call.idempotency_key for call in stripe_api.calls("POST", "/v1/payment_intents")}
    assert len(keys) == 1


def test_payment_settings_never_return_secrets(tenant):
    empty = tenant.http.get("/payment-settings").json()
    assert empty["provider"] == "test"

    saved = use_stripe(tenant)

    assert saved["provider"] == "stripe"
    assert saved["stripeSecretKeyLast4"] == SECRET_KEY[-4:]
    assert saved["stripeWebhookSecretConfigured"] is True
    assert saved["stripeWebhookUrl"].endswith(f"/webhooks/stripe/{tenant.organization_id}")
    assert SECRET_KEY not in str(tenant.http.get("/payment-settings").json())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "paypal"}, "provider"),
        ({"provider": "stripe"}, "stripeSecretKey"),
        ({"provider": "stripe", "stripeSecretKey": "pk_test_123"}, "stripeSecretKey"),
        ({"provider": "stripe", "stripeSecretKey": SECRET_KEY}, "stripeWebhookSecret"),
        ({"provider": "stripe", "stripeSecretKey": SECRET_KEY, "stripeWebhookSecret": "secret"}, "stripeWebhookSecret"),
    ],
)
def test_payment_settings_reject_invalid_input(tenant, body: dict[str, Any], field: str):
    response = tenant.http.put("/payment-settings", json=body)

    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    assert tenant.http.get("/payment-settings").json()["provider"] == "test"
