"""Order rules: creating orders from a checkout or a sales-led request, updating, deleting and
activating them.

A sales-led order (`POST /orders/`) sells each line's product at its default plan (or its own
pricing when it has no default plan), with the line's `attributes` replacing the pricing of
the product's pricing lines of the same name. Billing periods, invoices and credits are the
billing package's; see `tallystick.server.billing`. Functions here only flush; the caller owns
the transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.billing import activation, changes
from tallystick.server.billing.allocations import schedule_of
from tallystick.server.billing.invoices import next_number
from tallystick.server.billing.periods import Schedule
from tallystick.server.customers.service import find_customer
from tallystick.server.errors import bad_request, conflict_as_bad_request
from tallystick.server.ids import new_id
from tallystick.server.models import (
    CreditCurrency,
    Customer,
    Invoice,
    Order,
    OrderLine,
    Plan,
    Product,
)
from tallystick.server.orders.schemas import (
    FREQUENCY_MONTHS,
    OrderCreate,
    OrderCreditBenefitIn,
    OrderLineIn,
    OrderLinePricingIn,
    OrderUpdate,
)
from tallystick.server.orders.terms import (
    BenefitTerms,
    CustomLine,
    PlanTerms,
    TermsError,
    price_terms,
)

log = logging.getLogger(__name__)

# Catalog billing frequency of each wire order billing frequency.
_CATALOG_FREQUENCY = {
    "monthly": "Monthly",
    "quarterly": "Quarterly",
    "semiAnnually": "Semi-Annually",
    "annual": "Annual",
    "custom": "Custom",
}
# Fields of an order update that may change only while the order is a draft.
_DRAFT_ONLY_FIELDS = ("start_date", "billing_anchor", "subscription_terms")


def create_order(
    session: Session,
    *,
    customer: Customer,
    terms: PlanTerms,
    start: datetime,
    checkout_id: str | None = None,
    payment_method_id: str | None = None,
) -> Order:
    """Create a draft order for `terms`, starting at `start`, with one line for the product."""
    order = _new_order(session, customer, terms.name, terms.currency, start, start.day)
    order.product_id = terms.product.id
    order.plan_id = terms.plan.id if terms.plan is not None else None
    order.checkout_id = checkout_id
    order.payment_method_id = payment_method_id
    _apply_terms(order, terms)
    order.lines = [_line(order, terms, start, name=terms.name, description=terms.product.description, position=0)]
    session.add(order)
    session.flush()
    log.info(
        "order.created",
        extra={"organization_id": order.organization_id, "order_id": order.id, "customer_id": customer.id},
    )
    return order


def activate_order(session: Session, order: Order, now: datetime) -> Invoice | None:
    """Make a draft order active and run its billing up to now; return its first invoice."""
    return activation.activate(session, order, now)


def create_sales_order(session: Session, organization_id: str, body: OrderCreate, now: datetime) -> Order:
    """Create a sales-led order from the wire request; activate it when creationState is active."""
    customer = find_customer(session, organization_id, body.customer_id)
    if customer is None:
        raise bad_request("customerId", "is not a customer of this organization", body.customer_id)
    _check_billing_customer(session, organization_id, body.billing_customer_id)
    _check_external_id(session, organization_id, body.external_id, None)
    start = _aware("startDate", body.start_date) or now
    anchor = body.billing_anchor or start.day
    currency = (body.currency or customer.default_currency or "USD").upper()
    frequency = _frequency_override(body)

    lines_in = body.lines or []
    priced = [_line_terms(session, organization_id, line, index, currency, frequency) for index, line in enumerate(lines_in)]
    months = _period_months(priced, frequency)
    name = body.name or (priced[0][1].name if priced else "Order")

    order = _new_order(session, customer, name, currency, start, anchor)
    order.billing_customer_id = body.billing_customer_id
    order.billing_contact_ids = body.billing_contact_ids
    order.external_id = body.external_id
    order.payment_terms = body.payment_terms
    order.metadata_ = body.metadata
    order.purchase_order_reference = body.purchase_order_reference
    order.subscription_terms = body.subscription_terms
    order.billing_frequency_override = (
        body.billing_frequency_override.model_dump(by_alias=True, exclude_none=True)
        if body.billing_frequency_override is not None
        else None
    )
    for flag in ("auto_post_invoices", "auto_send_billing_emails", "auto_send_payment_emails"):
        if getattr(body, flag) is not None:
            setattr(order, flag, getattr(body, flag))
    order.billing_period_months = months
    if priced:
        order.billing_frequency = priced[0][1].billing_frequency
    elif frequency is not None:
        order.billing_frequency = frequency[0]
    else:
        order.billing_frequency = "monthly"
    order.period_amount = sum(terms.period_amount for _, terms in priced)
    if priced:
        order.product_id = priced[0][1].product.id
        order.plan_id = priced[0][1].plan.id if priced[0][1].plan is not None else None
    order.lines = [
        _line(
            order,
            terms,
            _aware(f"lines[{index}].startDate", line_in.start_date) or start,
            name=line_in.name or terms.name,
            description=line_in.description if line_in.description is not None else terms.product.description,
            position=index,
            end=_aware(f"lines[{index}].endDate", line_in.end_date),
            line_type=line_in.line_type or "STANDARD",
        )
        for index, (line_in, terms) in enumerate(priced)
    ]
    _set_end_date(order, _aware("endDate", body.end_date))
    session.add(order)
    session.flush()
    log.info("order.created", extra={"organization_id": organization_id, "order_id": order.id, "customer_id": customer.id})

    if body.creation_state == "active":
        activate_order(session, order, now)
    return order


def update_order(session: Session, order: Order, body: OrderUpdate, now: datetime) -> Order:
    """Apply the fields the client sent; dates, anchor and terms change only on draft orders."""
    sent = body.provided()
    if order.status != "draft":
        locked = [name for name in _DRAFT_ONLY_FIELDS if name in sent]
        if locked:
            wire = {"start_date": "startDate", "billing_anchor": "billingAnchor", "subscription_terms": "subscriptionTerms"}
            raise bad_request(wire[locked[0]], f"can change only while the order is a draft; it is {order.status}", order.id)
        if body.creation_state == "draft":
            raise bad_request("creationState", "an active order cannot go back to draft", "draft")

    if "name" in sent and body.name:
        order.name = body.name
    if "external_id" in sent:
        _check_external_id(session, order.organization_id, body.external_id, order.id)
        order.external_id = body.external_id
    if "billing_customer_id" in sent:
        _check_billing_customer(session, order.organization_id, body.billing_customer_id)
        order.billing_customer_id = body.billing_customer_id
    for name in ("metadata", "billing_contact_ids", "payment_terms", "purchase_order_reference"):
        if name in sent:
            setattr(order, "metadata_" if name == "metadata" else name, getattr(body, name))
    for flag in ("auto_post_invoices", "auto_send_billing_emails", "auto_send_payment_emails"):
        if getattr(body, flag) is not None:
            setattr(order, flag, getattr(body, flag))

    if order.status == "draft":
        if body.start_date is not None:
            order.start_date = _aware("startDate", body.start_date)
            if body.billing_anchor is None:
                order.billing_anchor = order.start_date.day
        if body.billing_anchor is not None:
            order.billing_anchor = body.billing_anchor
        if "subscription_terms" in sent:
            order.subscription_terms = body.subscription_terms
    if "end_date" in sent or "subscription_terms" in sent:
        end = _aware("endDate", body.end_date) if "end_date" in sent else order.end_date
        if order.status == "active" and end is not None and end <= now:
            raise bad_request("endDate", "must be in the future for an active order", end)
        if order.status == "ended":
            raise bad_request("endDate", "cannot change once the order has ended", order.id)
        _set_end_date(order, end)
        if order.status == "active":
            from tallystick.server.billing.renewals import next_due

            order.billing_due_at = next_due(session, order)

    order.version += 1
    order.updated_at = now
    session.flush()

    if body.creation_state == "active" and order.status == "draft":
        activate_order(session, order, now)
    return order


def delete_order(session: Session, order: Order) -> None:
    """Delete a draft order with its lines; an active or ended order cannot be deleted."""
    if order.status != "draft":
        raise bad_request("id", f"only draft orders can be deleted; this one is {order.status}", order.id)
    for line in list(order.lines):
        session.delete(line)
    session.delete(order)
    session.flush()
    log.info("order.deleted", extra={"organization_id": order.organization_id, "order_id": order.id})


def cancel_order(session: Session, order: Order, now: datetime) -> None:
    """End an active order when its current period ends."""
    if order.status != "active":
        raise bad_request("id", f"only an active order can be canceled; this one is {order.status}", order.id)
    changes.cancel_at_period_end(session, order, now)
    from tallystick.server.billing.renewals import next_due

    order.billing_due_at = next_due(session, order)
    session.flush()


def _new_order(session: Session, customer: Customer, name: str, currency: str, start: datetime, anchor: int) -> Order:
    return Order(
        id=new_id("order"),
        organization_id=customer.organization_id,
        number=next_number(session, customer.organization_id, Order),
        name=name[:500],
        customer_id=customer.id,
        status="draft",
        creation_state="draft",
        currency=currency,
        start_date=start,
        billing_anchor=anchor,
        period_number=0,
        auto_post_invoices=True,
        version=1,
    )


def _apply_terms(order: Order, terms: PlanTerms) -> None:
    order.billing_frequency = terms.billing_frequency
    order.billing_period_months = terms.period_months
    order.period_amount = terms.period_amount


def _line(
    order: Order,
    terms: PlanTerms,
    start: datetime,
    *,
    name: str,
    description: str | None,
    position: int,
    end: datetime | None = None,
    line_type: str = "STANDARD",
) -> OrderLine:
    return OrderLine(
        id=new_id("order_line"),
        organization_id=order.organization_id,
        order_id=order.id,
        product_id=terms.product.id,
        name=name[:500],
        description=description,
        line_type=line_type,
        start_date=start,
        end_date=end,
        attributes=[line_terms.snapshot() for line_terms in terms.lines],
        position=position,
    )


def _set_end_date(order: Order, end: datetime | None) -> None:
    """Set the order's end date: `end`, or the end of its last term when subscriptionTerms
    counts billing periods and no end date is given."""
    if end is None and order.subscription_terms:
        schedule = Schedule(order.start_date, order.billing_anchor, order.billing_period_months)
        try:
            end = schedule.boundary(order.subscription_terms)
        except (ValueError, OverflowError):
            raise bad_request("subscriptionTerms", "ends too far in the future", order.subscription_terms) from None
        if end.year > _LATEST_YEAR:
            raise bad_request("subscriptionTerms", "ends too far in the future", order.subscription_terms)
    if end is not None and end <= order.start_date:
        raise bad_request("endDate", "must be after startDate", end)
    order.end_date = end
    # Keeps the stored period end consistent when the end cuts the current period short.
    if order.period_number > 0:
        period = schedule_of(order).period(order.period_number)
        if period is not None:
            order.period_end = period.end


# Order dates are kept within these years, so that billing periods computed from them stay
# within what Python datetimes can represent.
_EARLIEST_YEAR, _LATEST_YEAR = 1970, 9000


def _aware(field: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise bad_request(field, "must carry a timezone offset, such as Z", value)
    if not _EARLIEST_YEAR <= value.year <= _LATEST_YEAR:
        raise bad_request(field, f"must be between the years {_EARLIEST_YEAR} and {_LATEST_YEAR}", value)
    return value


def _check_billing_customer(session: Session, organization_id: str, customer_id: str | None) -> None:
    if customer_id is not None and find_customer(session, organization_id, customer_id) is None:
        raise bad_request("billingCustomerId", "is not a customer of this organization", customer_id)


def _check_external_id(session: Session, organization_id: str, external_id: str | None, order_id: str | None) -> None:
    if external_id is None:
        return
    existing = session.scalar(
        select(Order.id).where(Order.organization_id == organization_id, Order.external_id == external_id)
    )
    if existing is not None and existing != order_id:
        raise conflict_as_bad_request("externalId", external_id, "an order with this externalId")


def _frequency_override(body: OrderCreate) -> tuple[str, int] | None:
    override = body.billing_frequency_override
    if override is None:
        return None
    if override.frequency == "custom":
        if override.custom_months is None:
            raise bad_request("billingFrequencyOverride.customMonths", "is required when frequency is custom", None)
        return "custom", override.custom_months
    return override.frequency, FREQUENCY_MONTHS[override.frequency]


def _period_months(priced: list[tuple[OrderLineIn, PlanTerms]], frequency: tuple[str, int] | None) -> int:
    if frequency is not None:
        return frequency[1]
    months = {terms.period_months for _, terms in priced if any(line.recurring for line in terms.lines)}
    if len(months) > 1:
        raise bad_request(
            "lines", "the lines bill at different frequencies; send billingFrequencyOverride to bill them together", None
        )
    return months.pop() if months else 1


def _line_terms(
    session: Session,
    organization_id: str,
    line: OrderLineIn,
    index: int,
    currency: str,
    frequency: tuple[str, int] | None,
) -> tuple[OrderLineIn, PlanTerms]:
    field = f"lines[{index}]"
    product = session.scalar(
        select(Product).where(Product.organization_id == organization_id, Product.id == line.product_id)
    )
    if product is None:
        raise bad_request(
            f"{field}.productId", "is not a product of this organization", line.product_id, code="unknown_product"
        )
    plan = session.scalar(
        select(Plan)
        .where(
            Plan.organization_id == organization_id,
            Plan.product_id == product.id,
            Plan.is_default.is_(True),
            Plan.status == "active",
        )
        .order_by(Plan.created_at, Plan.id)
    )

    names = {attribute.name for attribute in product.attributes if attribute.active}
    custom: dict[str, CustomLine] = {}
    for position, attribute in enumerate(line.attributes or []):
        attribute_field = f"{field}.attributes[{position}]"
        if attribute.name not in names:
            raise bad_request(
                f"{attribute_field}.name", f"is not an active pricing line of product {product.id}", attribute.name
            )
        custom[attribute.name] = CustomLine(
            pricing=_catalog_pricing(session, organization_id, attribute.pricing, currency, f"{attribute_field}.pricing"),
            benefits=_benefits(session, organization_id, attribute.pricing, f"{attribute_field}.pricing"),
            quantity=attribute.quantity or 1,
        )
    try:
        terms = price_terms(product, plan, currency, custom=custom, frequency_override=frequency)
    except TermsError as error:
        raise bad_request(f"{field}.productId", f"cannot be sold in {currency}: {error}", product.id) from None
    return line, terms


def _catalog_pricing(
    session: Session, organization_id: str, pricing: OrderLinePricingIn, currency: str, field: str
) -> dict[str, Any]:
    """Translate an order line's pricing into the catalog pricing object it stands for."""
    points = [{"currency": (pricing.price_points.currency or currency).upper(), "unitPrice": pricing.price_points.unit_price}]
    model = pricing.pricing_model
    flat = model in ("perUnit", "flat")

    if pricing.charge_type in ("recurring", "seatBased") and flat:
        frequency = pricing.billing_frequency or "monthly"
        result: dict[str, Any] = {
            "pricingType": "RecurringPerUnit" if pricing.charge_type == "recurring" else "SeatBasedPerUnit",
            "billingFrequency": _CATALOG_FREQUENCY[frequency],
            "pricePoints": points,
        }
        if frequency == "custom":
            if pricing.billing_frequency_custom_months is None:
                raise bad_request(f"{field}.billingFrequencyCustomMonths", "is required with billingFrequency custom", None)
            result["billingFrequencyCustomMonths"] = pricing.billing_frequency_custom_months
        return result
    if pricing.charge_type == "oneTime" and flat:
        return {"pricingType": "OneTimePerUnit", "feeType": "custom", "pricePoints": points}
    if pricing.charge_type == "usage" and model in ("prepaidCredits", "bracketedPrepaidCredits"):
        if not pricing.event_name:
            raise bad_request(f"{field}.eventName", "is required for prepaid credits pricing", None)
        _check_currency(session, organization_id, pricing.credits_currency_id, f"{field}.creditsCurrencyId")
        if model == "prepaidCredits":
            if pricing.credit_cost is None:
                raise bad_request(f"{field}.creditCost", "is required for prepaidCredits pricing", None)
            return {
                "pricingType": "UsagePrepaidCredits",
                "eventName": pricing.event_name,
                "creditsCurrencyId": pricing.credits_currency_id,
                "creditCost": float(pricing.credit_cost) if pricing.credit_cost % 1 else int(pricing.credit_cost),
            }
        if not pricing.credit_unit_brackets:
            raise bad_request(f"{field}.creditUnitBrackets", "is required for bracketedPrepaidCredits pricing", None)
        return {
            "pricingType": "UsageBracketedPrepaidCredits",
            "eventName": pricing.event_name,
            "creditsCurrencyId": pricing.credits_currency_id,
            "creditUnitBrackets": pricing.credit_unit_brackets,
            "pricingInput": pricing.pricing_input or {"kind": "signalQuantity"},
        }
    if pricing.charge_type == "usage" and flat:
        return {"pricingType": "UsagePerUnit", "eventName": pricing.event_name, "pricePoints": points}
    raise bad_request(
        f"{field}.pricingModel", f"is not supported with chargeType {pricing.charge_type} on orders yet", model
    )


def _benefits(
    session: Session, organization_id: str, pricing: OrderLinePricingIn, field: str
) -> tuple[BenefitTerms, ...] | None:
    if pricing.credit_benefits is None:
        return None
    return tuple(
        _benefit(session, organization_id, benefit, pricing, f"{field}.creditBenefits[{index}]")
        for index, benefit in enumerate(pricing.credit_benefits)
    )


def _benefit(
    session: Session, organization_id: str, benefit: OrderCreditBenefitIn, pricing: OrderLinePricingIn, field: str
) -> BenefitTerms:
    currency_id = benefit.credits_currency_id or pricing.credits_currency_id
    if currency_id is None:
        raise bad_request(f"{field}.creditsCurrencyId", "is required", None)
    _check_currency(session, organization_id, currency_id, f"{field}.creditsCurrencyId")
    return BenefitTerms(
        benefit_id=benefit.id,
        credits_currency_id=currency_id,
        amount=Decimal(benefit.amount),
        allocation_cadence=benefit.allocation_cadence or "monthly",
        credit_grant_timing=benefit.credit_grant_timing or "on_order_activation",
        rollover_amount=benefit.rollover_amount,
        rollover_duration=benefit.rollover_duration,
        rollover_duration_unit=benefit.rollover_duration_unit,
    )


def _check_currency(session: Session, organization_id: str, currency_id: str | None, field: str) -> None:
    if currency_id is None:
        raise bad_request(field, "is required", None)
    found = session.scalar(
        select(CreditCurrency.id).where(CreditCurrency.organization_id == organization_id, CreditCurrency.id == currency_id)
    )
    if found is None:
        raise bad_request(field, "is not a credit currency of this organization", currency_id, code="unknown_currency")
