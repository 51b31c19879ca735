"""The orders and open checkout links of a customer, as the customer state endpoint lists them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tallystick.server.models import Checkout, Customer, Order


def state_orders(session: Session, customer: Customer) -> list[dict[str, Any]]:
    """Return the customer's orders that have not ended, oldest first, in the wire shape.

    `effectiveUntil` is when the customer's access as paid runs out: the order's end date
    when it is canceled or fixed-term, else the end of the billing period in progress.
    """
    orders = session.scalars(
        select(Order)
        .where(
            Order.organization_id == customer.organization_id,
            Order.customer_id == customer.id,
            Order.status != "ended",
        )
        .order_by(Order.start_date, Order.number)
    )
    return [
        {
            "id": order.id,
            "externalId": order.external_id,
            "name": order.name,
            "state": order.status,
            "currency": order.currency,
            "startDate": order.start_date,
            "endDate": order.end_date,
            "effectiveUntil": order.end_date or order.period_end,
            "productId": order.product_id,
            "planId": order.plan_id,
        }
        for order in orders
    ]


def open_checkout_links(session: Session, customer: Customer, now: datetime) -> list[dict[str, Any]]:
    """Return the active, unexpired checkouts made out to the customer, newest first."""
    made_out_to = [Checkout.customer_id == customer.id]
    if customer.external_id is not None:
        made_out_to.append(Checkout.external_customer_id == customer.external_id)
    checkouts = session.scalars(
        select(Checkout)
        .where(
            Checkout.organization_id == customer.organization_id,
            Checkout.status == "active",
            Checkout.expires_at > now,
            or_(*made_out_to),
        )
        .order_by(Checkout.created_at.desc(), Checkout.id.desc())
    )
    return [
        {
            "id": checkout.id,
            "url": checkout.url,
            "status": "active",
            "productIds": [item["id"] for item in checkout.products],
            "singleUse": checkout.single_use,
            "allowedCurrencies": list(checkout.allowed_currencies or []),
            "expiresAt": checkout.expires_at,
        }
        for checkout in checkouts
    ]
