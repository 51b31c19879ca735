"""Helpers for billing tests: a chat catalog with configurable benefits, purchases, and readers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from tallystick.server import clock
from tallystick.server.models import (
    BillingPeriod,
    CreditAllocation,
    CreditGrant,
    Invoice,
    LedgerEntry,
    Order,
    OutboxEvent,
)
from tests.checkout_helpers import ADDRESS, create_checkout, hosted_page

# Test card whose later charges (renewals) are declined.
RENEWAL_DECLINE_CARD = {"card_number": "4000 0000 0000 0341", "card_expiry": "12 / 34", "card_cvc": "123"}


@contextlib.contextmanager
def frozen(moment: datetime) -> Iterator[None]:
    """Pin the process clock (the test server's too) to `moment` inside the block."""
    clock.freeze(moment)
    try:
        yield
    finally:
        clock.freeze(None)


@dataclass
class ChatCatalog:
    currency_id: str
    product_id: str
    fee_line_id: str
    plans: dict[str, str]  # plan name -> plan id


def create_chat_catalog(
    tenant,  # type: ignore[no-untyped-def]
    plans: list[tuple[str, int, int]],
    *,
    frequency: str = "Monthly",
    cadence: str = "monthly",
    timing: str = "on_order_activation",
    rollover: dict[str, Any] | None = None,
) -> ChatCatalog:
    """Create Chat Credits, a ChatBot product whose chat messages cost one credit each, and
    one plan per (name, price in cents, credits per period)."""
    http = tenant.http
    currency = http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"}).json()
    product = http.post("/products/", json={"name": "ChatBot", "active": True}).json()

    def fee(cents: int) -> dict[str, Any]:
        return {
            "pricingType": "RecurringPerUnit",
            "billingFrequency": frequency,
            "pricePoints": [{"currency": "USD", "unitPrice": cents}],
        }

    detail = http.put(
        f"/products/{product['id']}",
        json={
            "productAttributes": [
                {"name": "Subscription", "pricing": fee(plans[0][1])},
                {
                    "name": "Chat message",
                    "pricing": {
                        "pricingType": "UsagePrepaidCredits",
                        "eventName": "chat_message",
                        "creditsCurrencyId": currency["id"],
                        "creditCost": 1,
                    },
                },
            ]
        },
    ).json()
    fee_line = detail["productAttributes"][0]["productAttributeId"]

    plan_ids = {}
    for order, (name, cents, credits) in enumerate(plans):
        benefit = {
            "creditsCurrencyId": currency["id"],
            "amount": credits,
            "allocationCadence": cadence,
            "creditGrantTiming": timing,
            **(rollover or {}),
        }
        response = http.post(
            "/plans/",
            json={
                "productId": product["id"],
                "name": name,
                "upgradePathOrder": order,
                "attributes": [{"productAttributeId": fee_line, "pricing": fee(cents), "creditBenefits": [benefit]}],
            },
        )
        assert response.status_code == 201, response.text
        plan_ids[name] = response.json()["id"]
    return ChatCatalog(currency["id"], product["id"], fee_line, plan_ids)


def buy(tenant, catalog: ChatCatalog, plan: str, customer: str, card: dict[str, str] | None = None) -> str:  # type: ignore[no-untyped-def]
    """Buy `plan` on the hosted checkout as external customer `customer`; return the order id."""
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId=customer)
    page = hosted_page(checkout)
    _, token = page.open()
    fields = {"option": catalog.plans[plan], **ADDRESS, **(card or {})}
    if card is None:
        from tests.checkout_helpers import PAYING_CARD

        fields.update(PAYING_CARD)
    response = page.submit(token, fields)
    assert response.status_code == 303, response.text
    order_id = tenant.http.get(f"/checkouts/{checkout['id']}").json()["orderId"]
    assert order_id
    return order_id


def available(tenant, customer: str) -> Decimal:  # type: ignore[no-untyped-def]
    """Read the customer's Chat Credits balance through the API (which renews due orders)."""
    response = tenant.http.get(f"/customers/external/{customer}/credits/balances")
    assert response.status_code == 200, response.text
    balances = response.json()["data"]
    if not balances:
        return Decimal(0)
    [balance] = balances
    return Decimal(balance["availableDecimal"])


def send_chat_messages(tenant, customer: str, count: int, prefix: str) -> None:  # type: ignore[no-untyped-def]
    signals = [
        {"eventName": "chat_message", "customer": {"externalCustomerId": customer}, "idempotencyKey": f"{prefix}-{index}"}
        for index in range(count)
    ]
    response = tenant.http.post("/signals/bulk", json={"signals": signals})
    assert response.status_code in (200, 201, 207), response.text


def order_grants(store, order_id: str) -> list[CreditGrant]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(
            session.scalars(select(CreditGrant).where(CreditGrant.order_id == order_id).order_by(CreditGrant.sequence))
        )


def order_invoices(store, order_id: str) -> list[Invoice]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(session.scalars(select(Invoice).where(Invoice.order_id == order_id).order_by(Invoice.number)))


def order_periods(store, order_id: str) -> list[BillingPeriod]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(
            session.scalars(select(BillingPeriod).where(BillingPeriod.order_id == order_id).order_by(BillingPeriod.number))
        )


def order_allocations(store, order_id: str) -> list[CreditAllocation]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(
            session.scalars(
                select(CreditAllocation)
                .where(CreditAllocation.order_id == order_id)
                .order_by(CreditAllocation.period_number, CreditAllocation.slot, CreditAllocation.created_at)
            )
        )


def load_order(store, order_id: str) -> Order:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order


def expiry_entries(store, grant_id: str) -> list[LedgerEntry]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(
            session.scalars(
                select(LedgerEntry).where(LedgerEntry.grant_id == grant_id, LedgerEntry.entry_type == "expiry")
            )
        )


def event_types(store, organization_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(
            session.scalars(
                select(OutboxEvent.event_type)
                .where(OutboxEvent.organization_id == organization_id)
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )
