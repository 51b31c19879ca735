"""Which prepaid-credits pricing line rates a signal.

A signal is rated by the line of its product whose event name equals the signal's, among the
UsagePrepaidCredits and UsageBracketedPrepaidCredits lines. When the customer has an active
order for that product, the order's plan line for the event wins over the product's. When a
product has several such lines for one event name, the first by position is used.

A signal without attribution is rated by the organization's line for its event name when
exactly one line matches among the products that are not archived. That line's product then
becomes the signal's product. Otherwise the signal stays unrated and consumes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.models import Plan, PlanAttribute, Product, ProductAttribute
from tallystick.server.signals.rating import PREPAID_CREDIT_TYPES, PricingLine


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
    # The active order whose plan line rated the signal, if any.
    order_id: str | None


def match_lines(session: Session, organization_id: str, lookups: Sequence[LineLookup]) -> list[LineMatch]:
    """Return the pricing line of each lookup, in order, with a few queries for the whole batch."""
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
    orders = find_active_orders(session, organization_id, pairs) if pairs else {}
    plan_lines = _plan_lines(session, organization_id, {plan_id for _, plan_id in orders.values()}, event_names)

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
        order_id, plan_id = order
        plan_line = plan_lines.get((plan_id, lookup.event_name))
        matches.append(LineMatch(plan_line or product_line, product_id, order_id))
    return matches


def find_active_orders(
    session: Session, organization_id: str, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """Return (order id, plan id) of the active order of each (customer id, product id) pair.

    This is the seam between rating and orders: the plan lines of a customer's active order
    rate its signals before the product's lines do.
    """
    # TODO: look up active orders here once the orders package stores them.
    return {}


_LINE_COLUMNS = (
    ProductAttribute.id,
    ProductAttribute.product_id,
    ProductAttribute.event_name,
    ProductAttribute.pricing_type,
    ProductAttribute.credits_currency_id,
    ProductAttribute.credit_cost,
    ProductAttribute.pricing,
)


def _prepaid_filter(
    model: type[ProductAttribute] | type[PlanAttribute], organization_id: str, event_names: set[str]
) -> list[Any]:
    return [
        model.organization_id == organization_id,
        model.event_name.in_(event_names),
        model.pricing_type.in_(PREPAID_CREDIT_TYPES),
    ]


def _product_lines(
    session: Session, organization_id: str, event_names: set[str], product_ids: set[str]
) -> dict[tuple[str, str], PricingLine]:
    """Return the first active prepaid line by position per (product id, event name)."""
    if not product_ids:
        return {}
    rows = session.execute(
        select(*_LINE_COLUMNS)
        .where(
            *_prepaid_filter(ProductAttribute, organization_id, event_names),
            ProductAttribute.product_id.in_(product_ids),
            ProductAttribute.active.is_(True),
        )
        .order_by(ProductAttribute.position, ProductAttribute.id)
    )
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
            *_prepaid_filter(ProductAttribute, organization_id, event_names),
            ProductAttribute.active.is_(True),
            Product.archived_at.is_(None),
        )
        .order_by(ProductAttribute.position, ProductAttribute.id)
    )
    lines: dict[str, list[PricingLine]] = {}
    for row in rows:
        line = _product_line(row)
        lines.setdefault(line.event_name, []).append(line)
    return lines


def _plan_lines(
    session: Session, organization_id: str, plan_ids: set[str], event_names: set[str]
) -> dict[tuple[str, str], PricingLine]:
    """Return the first prepaid line by position per (plan id, event name)."""
    if not plan_ids:
        return {}
    rows = session.execute(
        select(
            PlanAttribute.id,
            PlanAttribute.plan_id,
            PlanAttribute.product_attribute_id,
            Plan.product_id,
            PlanAttribute.event_name,
            PlanAttribute.pricing_type,
            PlanAttribute.credits_currency_id,
            PlanAttribute.credit_cost,
            PlanAttribute.pricing,
        )
        .join(Plan, Plan.id == PlanAttribute.plan_id)
        .where(
            *_prepaid_filter(PlanAttribute, organization_id, event_names),
            PlanAttribute.plan_id.in_(plan_ids),
        )
        .order_by(PlanAttribute.position, PlanAttribute.id)
    )
    lines: dict[tuple[str, str], PricingLine] = {}
    for row in rows:
        line = PricingLine(
            product_id=row.product_id,
            product_attribute_id=row.product_attribute_id,
            plan_attribute_id=row.id,
            event_name=row.event_name or "",
            pricing_type=row.pricing_type or "",
            currency_id=row.credits_currency_id,
            credit_cost=row.credit_cost,
            pricing=row.pricing or {},
        )
        lines.setdefault((row.plan_id, line.event_name), line)
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
