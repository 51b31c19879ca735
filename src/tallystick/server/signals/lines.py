"""Selection of the prepaid-credits pricing line that rates each signal.

A signal is rated by the line of its product whose event name equals the signal's, among the
UsagePrepaidCredits and UsageBracketedPrepaidCredits lines. When the customer has an active
order for that product, the line the order was sold with (the plan's line, as copied onto the
order line when the order was created) wins over the product's current line. When several
lines match one event name, the first by position is used.

A signal without attribution is rated by the organization's line for its event name when
exactly one line matches among the products that are not archived. That line's product then
becomes the signal's product. Otherwise the signal stays unrated and consumes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.bulk_sql import for_each_dialect, in_list
from tallystick.server.models import Order, OrderLine, Product, ProductAttribute
from tallystick.server.signals.rating import (
    PREPAID_CREDIT_TYPES,
    PricingLine,
    to_decimal,
)


@dataclass(frozen=True)
class LineLookup:
    """The keys of one signal's line lookup; `customer_id` is None for a customer not created yet."""

    event_name: str
    customer_id: str | None
    product_id: str | None


@dataclass(frozen=True)
class LineMatch:
    line: PricingLine | None
    # The signal's product: its attribution, or the product of the one line that matched.
    product_id: str | None
    # The customer's active order for the product, if any. Its line for the event, when it
    # has one, is the `line` above.
    order_id: str | None


def match_lines(
    session: Session,
    organization_id: str,
    lookups: Sequence[LineLookup],
    *,
    customer_times: Mapping[str, datetime] | None = None,
) -> list[LineMatch]:
    """Return the pricing line of each lookup, in order, with a few queries for the whole batch.

    Order lines are judged in force at clock.now(), or at the customer's time in
    `customer_times` (customers on a test clock).
    """
    event_names = {lookup.event_name for lookup in lookups}
    if not event_names:
        return []

    products = {lookup.product_id for lookup in lookups if lookup.product_id}
    product_lines = _product_lines(session, organization_id, event_names, products)

    # Unattributed signals take the product of the only line for their event name.
    product_ids = [lookup.product_id for lookup in lookups]
    unattributed_events = {lookup.event_name for lookup in lookups if lookup.product_id is None}
    if unattributed_events:
        by_event = _lines_by_event_name(session, organization_id, unattributed_events)
        for index, lookup in enumerate(lookups):
            candidates = by_event.get(lookup.event_name, [])
            if lookup.product_id is None and len(candidates) == 1:
                line = candidates[0]
                product_ids[index] = line.product_id
                product_lines.setdefault((line.product_id, lookup.event_name), line)

    pairs = {
        (lookup.customer_id, product_id)
        for lookup, product_id in zip(lookups, product_ids, strict=True)
        if lookup.customer_id and product_id
    }
    orders = find_active_orders(session, organization_id, pairs, customer_times) if pairs else {}

    matches = []
    for lookup, product_id in zip(lookups, product_ids, strict=True):
        if product_id is None:
            matches.append(LineMatch(None, None, None))
            continue
        product_line = product_lines.get((product_id, lookup.event_name))
        order = orders.get((lookup.customer_id or "", product_id))
        if order is None:
            matches.append(LineMatch(product_line, product_id, None))
            continue
        order_line = order.lines.get(lookup.event_name)
        matches.append(LineMatch(order_line or product_line, product_id, order.order_id))
    return matches


@dataclass(frozen=True)
class ActiveOrder:
    order_id: str
    # The prepaid-credits lines the order was sold with, by event name.
    lines: dict[str, PricingLine]


def find_active_orders(
    session: Session,
    organization_id: str,
    pairs: set[tuple[str, str]],
    customer_times: Mapping[str, datetime] | None = None,
) -> dict[tuple[str, str], ActiveOrder]:
    """Return the active order of each (customer id, product id) pair that has one.

    When a customer has several active orders for one product, the one that started last wins.
    """
    customer_times = customer_times or {}
    now = clock.now()
    earliest = min([now, *customer_times.values()])
    customer_ids = {customer_id for customer_id, _ in pairs}
    product_ids = {product_id for _, product_id in pairs}
    parameters = {
        "organization_id": organization_id,
        "customer_ids": sorted(customer_ids),
        "product_ids": sorted(product_ids),
        "earliest": earliest,
    }
    rows = session.execute(_ACTIVE_ORDER_LINES[session.get_bind().dialect.name], parameters)

    orders: dict[tuple[str, str], ActiveOrder] = {}
    for order_id, customer_id, product_id, attributes, end_date in rows:
        key = (customer_id, product_id)
        if key not in pairs:
            continue
        if end_date is not None and end_date <= customer_times.get(customer_id, now):
            continue
        order = orders.setdefault(key, ActiveOrder(order_id, {}))
        if order.order_id != order_id:
            continue
        for attribute in attributes or []:
            line = _sold_line(product_id, attribute)
            if line is not None:
                order.lines.setdefault(line.event_name, line)
    return orders


def _sold_line(product_id: str, attribute: Any) -> PricingLine | None:
    """Build the pricing line from one attribute of an order line, if it spends credits.

    The copy keeps the wire pricing object, whose creditCost is a JSON number.
    """
    pricing = attribute.get("pricing") if isinstance(attribute, dict) else None
    if not isinstance(pricing, dict) or pricing.get("pricingType") not in PREPAID_CREDIT_TYPES:
        return None
    event_name = pricing.get("eventName")
    if not isinstance(event_name, str):
        return None
    credit_cost = pricing.get("creditCost")
    return PricingLine(
        product_id=product_id,
        product_attribute_id=attribute.get("productAttributeId"),
        plan_attribute_id=attribute.get("planAttributeId"),
        event_name=event_name,
        pricing_type=pricing["pricingType"],
        currency_id=pricing.get("creditsCurrencyId"),
        credit_cost=to_decimal(credit_cost) if credit_cost is not None else None,
        pricing=pricing,
    )


_LINE_COLUMNS = (
    ProductAttribute.id,
    ProductAttribute.product_id,
    ProductAttribute.event_name,
    ProductAttribute.pricing_type,
    ProductAttribute.credits_currency_id,
    ProductAttribute.credit_cost,
    ProductAttribute.pricing,
)


def _prepaid_filter(organization_id: str, event_names: set[str]) -> list[Any]:
    return [
        ProductAttribute.organization_id == organization_id,
        ProductAttribute.event_name.in_(event_names),
        ProductAttribute.pricing_type.in_(PREPAID_CREDIT_TYPES),
        ProductAttribute.active.is_(True),
    ]


# Built once, with bound parameters: building a select and its cache key on every batch took
# about as long as running it.
_PRODUCT_LINES = for_each_dialect(
    lambda dialect: select(*_LINE_COLUMNS)
    .where(
        ProductAttribute.organization_id == bindparam("organization_id"),
        in_list(ProductAttribute.event_name, "event_names", dialect),
        ProductAttribute.pricing_type.in_(PREPAID_CREDIT_TYPES),
        ProductAttribute.active.is_(True),
        in_list(ProductAttribute.product_id, "product_ids", dialect),
    )
    .order_by(ProductAttribute.position, ProductAttribute.id)
)
_ACTIVE_ORDER_LINES = for_each_dialect(
    lambda dialect: select(Order.id, Order.customer_id, OrderLine.product_id, OrderLine.attributes, OrderLine.end_date)
    .join(OrderLine, OrderLine.order_id == Order.id)
    .where(
        Order.organization_id == bindparam("organization_id"),
        Order.status == "active",
        in_list(Order.customer_id, "customer_ids", dialect),
        in_list(OrderLine.product_id, "product_ids", dialect),
        # A plan change ends the order's old line, so only lines still in force count.
        # find_active_orders checks each line against its customer's own time.
        or_(OrderLine.end_date.is_(None), OrderLine.end_date > bindparam("earliest")),
    )
    .order_by(Order.start_date.desc(), Order.id, OrderLine.position)
)


def _product_lines(
    session: Session, organization_id: str, event_names: set[str], product_ids: set[str]
) -> dict[tuple[str, str], PricingLine]:
    """Return the first active prepaid line by position per (product id, event name)."""
    if not product_ids:
        return {}
    parameters = {
        "organization_id": organization_id,
        "event_names": sorted(event_names),
        "product_ids": sorted(product_ids),
    }
    rows = session.execute(_PRODUCT_LINES[session.get_bind().dialect.name], parameters)
    lines: dict[tuple[str, str], PricingLine] = {}
    for row in rows:
        line = _product_line(row)
        lines.setdefault((line.product_id, line.event_name), line)
    return lines


def _lines_by_event_name(session: Session, organization_id: str, event_names: set[str]) -> dict[str, list[PricingLine]]:
    """Return the active prepaid lines of products that are not archived, per event name."""
    rows = session.execute(
        select(*_LINE_COLUMNS)
        .join(Product, Product.id == ProductAttribute.product_id)
        .where(
            *_prepaid_filter(organization_id, event_names),
            Product.archived_at.is_(None),
        )
        .order_by(ProductAttribute.position, ProductAttribute.id)
    )
    lines: dict[str, list[PricingLine]] = {}
    for row in rows:
        line = _product_line(row)
        lines.setdefault(line.event_name, []).append(line)
    return lines


def _product_line(row: Any) -> PricingLine:
    return PricingLine(
        product_id=row.product_id,
        product_attribute_id=row.id,
        plan_attribute_id=None,
        event_name=row.event_name or "",
        pricing_type=row.pricing_type or "",
        currency_id=row.credits_currency_id,
        credit_cost=row.credit_cost,
        pricing=row.pricing or {},
    )
