"""A customer's active order rates its signals with the lines the order was sold with."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from tallystick.server.ids import new_id
from tallystick.server.models import LedgerEntry, Order, OrderLine
from tests.test_signals_api import (
    Catalog,
    available_credits,
    chat_message,
    create_catalog,
    create_customer,
    grant_credits,
    send,
    stored_signals,
)


def create_order(
    store: Any, catalog: Catalog, customer_id: str, *, credit_cost: float, status: str = "active", number: int = 1
) -> str:
    """Create an order whose line was sold with a chat_message line of `credit_cost` credits."""
    sold_line = {
        "productAttributeId": catalog.line_id,
        "planAttributeId": "pattr_replaced_since",
        "name": "Chat message",
        "pricing": {
            "pricingType": "UsagePrepaidCredits",
            "eventName": "chat_message",
            "creditsCurrencyId": catalog.currency_id,
            "creditCost": credit_cost,
        },
        "unitPrice": None,
        "recurring": False,
        "creditBenefits": [],
    }
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with store.transaction() as session:
        order = Order(
            id=new_id("order"),
            organization_id=catalog.organization_id,
            number=number,
            name="ChatBot Pro",
            customer_id=customer_id,
            product_id=catalog.product_id,
            status=status,
            currency="USD",
            start_date=start,
            billing_anchor=1,
        )
        order.lines = [
            OrderLine(
                id=new_id("order_line"),
                organization_id=catalog.organization_id,
                order_id=order.id,
                product_id=catalog.product_id,
                name="ChatBot Pro",
                start_date=start,
                attributes=[sold_line],
            )
        ]
        session.add(order)
        session.flush()
        return order.id


def test_active_order_line_rates_signal(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="1")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    order_id = create_order(store, catalog, customer_id, credit_cost=2.5)

    response = send(tenant, chat_message())

    assert response.json()["ingested"] == 1
    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.credits_consumed == Decimal("2.5")
    assert signal.product_attribute_id == catalog.line_id
    assert signal.plan_attribute_id == "pattr_replaced_since"
    assert available_credits(store, catalog, customer_id) == Decimal("7.5")
    with store.read_sessions() as session:
        orders = session.scalars(select(LedgerEntry.order_id).where(LedgerEntry.signal_id == signal.id)).all()
    assert orders == [order_id]


def test_draft_order_leaves_product_line(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="1")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    create_order(store, catalog, customer_id, credit_cost=2.5, status="draft")

    send(tenant, chat_message())

    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.credits_consumed == Decimal(1)
    assert signal.plan_attribute_id is None


def test_other_customers_keep_product_line(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="1")
    subscriber = create_customer(store, tenant.organization_id, "subscriber")
    create_order(store, catalog, subscriber, credit_cost=3)

    send(tenant, chat_message("subscriber"), chat_message("visitor"))

    by_customer = {signal.customer_id: signal for signal in stored_signals(store, tenant.organization_id)}
    assert by_customer[subscriber].credits_pending == Decimal(3)
    others = [signal for customer, signal in by_customer.items() if customer != subscriber]
    assert [signal.credits_pending for signal in others] == [Decimal(1)]
