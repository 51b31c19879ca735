"""Checkout completion rules: provider reports, allocation cadence, grant timing and one-time fees."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from tallystick.server import clock
from tallystick.server.checkout import service
from tallystick.server.checkout.completion import Buyer, Completed, complete_checkout
from tallystick.server.checkout.offers import load_offers
from tallystick.server.checkout.providers import PaymentSucceeded, SavedMethod
from tallystick.server.models import CreditGrant, Order, Payment
from tallystick.server.orders.terms import price_terms
from tests.checkout_helpers import create_checkout, hosted_page, page_text
from tests.guide import create_guide_catalog

STARTED = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)


@pytest.fixture
def frozen_clock():  # type: ignore[no-untyped-def]
    clock.freeze(STARTED)
    yield
    clock.freeze(None)


def report_payment(store, checkout_id: str, offer_key: str, provider_payment_id: str, buyer: Buyer | None = None):  # type: ignore[no-untyped-def]
    """Complete the checkout the way a provider callback would, in its own transaction."""
    with store.transaction() as session:
        checkout = service.lock_checkout(session, checkout_id)
        offers = load_offers(session, checkout.organization_id, checkout.products, require_active=False)
        offer = next(item for item in offers if item.key == offer_key)
        return complete_checkout(
            session,
            checkout=checkout,
            offer=offer,
            terms=price_terms(offer.product, offer.plan, "USD"),
            buyer=buyer or Buyer(),
            payment=PaymentSucceeded(
                provider="test",
                provider_payment_id=provider_payment_id,
                method=SavedMethod(provider_method_id="testpm_callback", brand="visa", last4="4242"),
            ),
            idempotency_key=None,
            now=clock.now(),
        )


def test_repeated_provider_report_completes_once(tenant, store):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-20")

    first = report_payment(store, checkout["id"], catalog.plan_ids["pro"], "testpay_callback")
    second = report_payment(store, checkout["id"], catalog.plan_ids["pro"], "testpay_callback")

    assert isinstance(first, Completed) and not first.repeated
    assert isinstance(second, Completed) and second.repeated
    assert second.order.id == first.order.id
    with store.read_sessions() as session:
        orders = session.scalar(select(func.count()).select_from(Order).where(Order.organization_id == tenant.organization_id))
        payments = session.scalar(
            select(func.count()).select_from(Payment).where(Payment.organization_id == tenant.organization_id)
        )
    assert orders == 1
    assert payments == 1
    [balance] = tenant.paid().customers.get_customer_credit_balances_by_external_id("user-20").data
    assert balance.available == 2000


def test_buyer_email_outside_api_check_is_kept(tenant, store):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}])
    # The API rejects this address on POST /customers, but a payment provider may collect it.
    buyer = Buyer(name="Ada", email="ada@shop.local")

    completed = report_payment(store, checkout["id"], catalog.plan_ids["pro"], "testpay_local", buyer)

    assert isinstance(completed, Completed)
    customer = tenant.http.get(f"/customers/{completed.order.customer_id}").json()
    assert customer["name"] == "Ada"
    assert customer["email"] == "ada@shop.local"
    # A client may send the customer back with its stored address. Another such address is
    # still rejected.
    path = f"/customers/{customer['id']}"
    sent_back = tenant.http.put(path, json={"name": "Ada L.", "email": "ada@shop.local"})
    assert sent_back.status_code == 200, sent_back.text
    changed = tenant.http.put(path, json={"email": "bo@shop.local"})
    assert changed.status_code == 400
    assert changed.json()["fields"][0]["field"] == "email"
    assert changed.json()["fields"][0]["value"] == "bo@shop.local"
    assert tenant.http.get(path).json()["email"] == "ada@shop.local"


def build_quarterly_catalog(tenant) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A product billed quarterly at $300 with a $50 setup fee; its plan grants two kinds of credits."""
    http = tenant.http
    messages = http.post("/credits/currencies", json={"name": "Messages", "key": "messages"}).json()
    reports = http.post("/credits/currencies", json={"name": "Reports", "key": "reports"}).json()
    product = http.post("/products/", json={"name": "Analyst", "active": True}).json()
    detail = http.put(
        f"/products/{product['id']}",
        json={
            "productAttributes": [
                {
                    "name": "Quarterly fee",
                    "pricing": {
                        "pricingType": "RecurringPerUnit",
                        "billingFrequency": "Quarterly",
                        "pricePoints": [{"currency": "USD", "unitPrice": 30000}],
                    },
                },
                {
                    "name": "Setup",
                    "pricing": {
                        "pricingType": "OneTimePerUnit",
                        "feeType": "setup",
                        "pricePoints": [{"currency": "USD", "unitPrice": 5000}],
                    },
                },
            ]
        },
    ).json()
    fee_line = detail["productAttributes"][0]["productAttributeId"]
    plan = http.post(
        "/plans/",
        json={
            "productId": product["id"],
            "name": "Team",
            "attributes": [
                {
                    "productAttributeId": fee_line,
                    "pricing": {
                        "pricingType": "RecurringPerUnit",
                        "billingFrequency": "Quarterly",
                        "pricePoints": [{"currency": "USD", "unitPrice": 30000}],
                    },
                    "creditBenefits": [
                        {
                            "creditsCurrencyId": messages["id"],
                            "amount": 3000,
                            "allocationCadence": "monthly",
                            "creditGrantTiming": "on_payment",
                        },
                        {
                            "creditsCurrencyId": reports["id"],
                            "amount": 90,
                            "allocationCadence": "upfront",
                            "creditGrantTiming": "on_order_activation",
                        },
                    ],
                }
            ],
        },
    ).json()
    return {"product": product["id"], "plan": plan["id"], "messages": messages["id"], "reports": reports["id"]}


def test_cadence_and_timing_of_first_period_grants(tenant, store, frozen_clock):
    ids = build_quarterly_catalog(tenant)
    checkout = create_checkout(tenant, products=[{"id": ids["product"]}], externalCustomerId="user-21")

    response = hosted_page(checkout).pay(ids["plan"])

    assert response.status_code == 303
    with store.read_sessions() as session:
        grants = {
            grant.credits_currency_id: grant
            for grant in session.scalars(
                select(CreditGrant).where(CreditGrant.organization_id == tenant.organization_id)
            )
        }
    # Monthly cadence spreads the quarter's 3,000 over three months: the first month's share
    # expires at the end of that month (January 31 + 1 month = February 28).
    assert grants[ids["messages"]].amount == Decimal(1000)
    assert grants[ids["messages"]].starts_at == STARTED
    assert grants[ids["messages"]].expires_at == datetime(2026, 2, 28, 9, 30, tzinfo=UTC)
    # Upfront cadence grants the whole quarter's amount at once, until the quarter ends.
    assert grants[ids["reports"]].amount == Decimal(90)
    assert grants[ids["reports"]].expires_at == datetime(2026, 4, 30, 9, 30, tzinfo=UTC)


def test_one_time_fee_is_on_first_invoice_only(tenant, frozen_clock):
    ids = build_quarterly_catalog(tenant)
    checkout = create_checkout(tenant, products=[{"id": ids["product"]}], externalCustomerId="user-22")

    page, _ = hosted_page(checkout).open()
    hosted_page(checkout).pay(ids["plan"])

    assert "Team $300.00 per quarter plus $50.00 once 1,000 Messages every month" in page_text(page.text)
    assert "90 Reports up front each quarter" in page_text(page.text)
    order_id = tenant.paid().checkouts.get_checkout(checkout["id"]).order_id
    order = tenant.http.get(f"/orders/{order_id}").json()
    assert order["orderAmount"] == 30000
    assert order["billingFrequency"] == "quarterly"
    [invoice] = tenant.http.get("/invoices/", params={"orderId": order_id}).json()["data"]
    assert invoice["invoiceTotal"] == 35000
    assert invoice["endDate"] == "2026-04-30T09:30:00Z"
    lines = tenant.http.get(f"/invoices/{invoice['id']}/lines").json()["data"]
    assert [(line["description"], line["totalPriceAfterTax"]) for line in lines] == [
        ("Analyst Team: Quarterly fee", 30000),
        ("Analyst Team: Setup", 5000),
    ]
