"""The catalog forms: pricing lines and plans as form fields, and back.

Forms offer the pricing types a credits-based product needs: a recurring fee, usage paid with
prepaid credits, usage billed per unit and a one-time fee. Other pricing types can be set up
through the API; their lines are listed but not editable here.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from babel.numbers import get_currency_precision

from tallystick.server.catalog.schemas import (
    BILLING_FREQUENCIES,
    CreditBenefitInput,
    PlanAttributeInput,
    PricingInput,
    ProductAttributeUpsert,
)
from tallystick.server.dashboard.forms import (
    FieldError,
    decimal,
    price_minor_units,
    required,
    text,
)
from tallystick.server.models import Plan, Product, ProductAttribute

# Pricing types the forms offer, with their labels.
LINE_TYPES = {
    "RecurringPerUnit": "Recurring fee",
    "UsagePrepaidCredits": "Usage paid with prepaid credits",
    "UsagePerUnit": "Usage billed per unit",
    "OneTimePerUnit": "One-time fee",
}
FORM_FREQUENCIES = [name for name in BILLING_FREQUENCIES if name != "Custom"]
# Pricing types with a price in money, which a plan can override.
PRICED_TYPES = ("RecurringPerUnit", "UsagePerUnit", "OneTimePerUnit")
CADENCES = {"monthly": "every month", "upfront": "up front, once per billing period"}

# API field paths of a pricing line, and the form field that shows their errors.
LINE_ERROR_FIELDS = {
    "productAttributes[0].name": "line_name",
    "productAttributes[0].pricing.eventName": "event_name",
    "productAttributes[0].pricing.creditsCurrencyId": "credits_currency_id",
    "productAttributes[0].pricing.creditCost": "credit_cost",
    "productAttributes[0].pricing.pricePoints": "price",
    "productAttributes[0].pricing": "pricing_type",
    "name": "line_name",
}


def line_from_form(form: dict[str, str], line_id: str | None) -> ProductAttributeUpsert:
    """Build the pricing line upsert that the form describes; raise FieldError or ValidationError."""
    pricing_type = required(form, "pricing_type", "the kind of pricing line")
    if pricing_type not in LINE_TYPES:
        raise FieldError("pricing_type", "Choose one of the listed kinds of pricing line.")
    name = required(form, "line_name", "a name for the line")

    pricing: dict[str, Any] = {"pricing_type": pricing_type}
    if pricing_type in PRICED_TYPES:
        currency = (text(form, "currency") or "USD").upper()
        price = price_minor_units(form, "price", currency)
        if price is None:
            raise FieldError("price", "Enter the price, such as 29.00.")
        pricing["price_points"] = [{"currency": currency, "unit_price": price}]
    if pricing_type == "RecurringPerUnit":
        frequency = text(form, "billing_frequency") or "Monthly"
        if frequency not in FORM_FREQUENCIES:
            raise FieldError("billing_frequency", "Choose how often the fee is billed.")
        pricing["billing_frequency"] = frequency
    if pricing_type in ("UsagePrepaidCredits", "UsagePerUnit"):
        pricing["event_name"] = required(form, "event_name", "the signal event name, such as chat_message")
    if pricing_type == "UsagePrepaidCredits":
        pricing["credits_currency_id"] = required(form, "credits_currency_id", "the credit currency")
        cost = decimal(form, "credit_cost", label="the credit cost")
        if cost is None:
            raise FieldError("credit_cost", "Enter how many credits one signal costs, such as 1.")
        pricing["credit_cost"] = cost

    return ProductAttributeUpsert(product_attribute_id=line_id, name=name, pricing=PricingInput(**pricing))


def line_values(line: ProductAttribute) -> dict[str, str]:
    """Return the form values that show an existing pricing line."""
    pricing = line.pricing or {}
    values = {
        "line_name": line.name,
        "pricing_type": line.pricing_type or "",
        "billing_frequency": str(pricing.get("billingFrequency") or "Monthly"),
        "event_name": line.event_name or "",
        "credits_currency_id": line.credits_currency_id or "",
        "credit_cost": _plain(line.credit_cost),
        "currency": "USD",
        "price": "",
    }
    points = pricing.get("pricePoints") or []
    if points:
        values["currency"] = str(points[0].get("currency", "USD")).upper()
        values["price"] = major_units(points[0].get("unitPrice"), values["currency"])
    return values


def major_units(minor: Any, currency: str) -> str:
    """Format minor units as a plain major-unit amount for an input, such as 2900 -> "29.00"."""
    if minor is None:
        return ""
    places = get_currency_precision(currency)
    return f"{Decimal(int(minor)).scaleb(-places):.{places}f}"


def _plain(value: Decimal | None) -> str:
    if value is None:
        return ""
    return format(value.normalize(), "f")


# Plans


def priced_lines(product: Product) -> list[ProductAttribute]:
    """Return the product's lines that a plan can price: those with a price in money."""
    return [line for line in product.attributes if line.pricing_type in PRICED_TYPES]


def plan_attributes_from_form(form: dict[str, str], product: Product) -> list[PlanAttributeInput]:
    """Build a plan's attributes: one per priced product line whose price field is filled."""
    currency = (text(form, "currency") or "USD").upper()
    attributes = []
    for line in priced_lines(product):
        price = price_minor_units(form, f"price_{line.id}", currency)
        if price is None:
            continue
        pricing = dict(line.pricing or {})
        pricing["pricePoints"] = [{"currency": currency, "unitPrice": price}]
        attributes.append(
            PlanAttributeInput(
                product_attribute_id=line.id,
                pricing=PricingInput.model_validate(pricing),
                credit_benefits=_benefits_from_form(form, line.id),
            )
        )
    if not attributes:
        raise FieldError("price", "Enter the price of at least one pricing line.")
    return attributes


def _benefits_from_form(form: dict[str, str], line_id: str) -> list[CreditBenefitInput]:
    amount = decimal(form, f"credits_amount_{line_id}", label="the credits")
    if amount is None:
        return []
    currency_id = text(form, f"credits_currency_{line_id}")
    if currency_id is None:
        raise FieldError(f"credits_currency_{line_id}", "Choose the credit currency of these credits.")
    cadence = text(form, f"credits_cadence_{line_id}") or "monthly"
    if cadence not in CADENCES:
        raise FieldError(f"credits_cadence_{line_id}", "Choose when the credits are granted.")
    return [CreditBenefitInput(credits_currency_id=currency_id, amount=amount, allocation_cadence=cadence)]


def plan_values(plan: Plan) -> dict[str, str]:
    """Return the form values that show an existing plan."""
    values = {
        "name": plan.name or "",
        "external_id": plan.external_id or "",
        "currency": (plan.supported_currencies or ["USD"])[0],
        "status": plan.status,
    }
    for attribute in plan.attributes:
        line_id = attribute.product_attribute_id
        points = (attribute.pricing or {}).get("pricePoints") or []
        if points:
            values["currency"] = str(points[0].get("currency", values["currency"])).upper()
            values[f"price_{line_id}"] = major_units(points[0].get("unitPrice"), values["currency"])
        for benefit in attribute.credit_benefits[:1]:
            values[f"credits_amount_{line_id}"] = _plain(benefit.amount)
            values[f"credits_currency_{line_id}"] = benefit.credits_currency_id
            values[f"credits_cadence_{line_id}"] = benefit.allocation_cadence
    return values


def plan_error_fields(product: Product) -> dict[str, str]:
    """Map API field paths of a plan to its form fields, for showing service errors."""
    fields = {"name": "name", "externalId": "external_id", "supportedCurrencies": "currency"}
    for index, line in enumerate(priced_lines(product)):
        fields[f"attributes[{index}].creditBenefits"] = f"credits_amount_{line.id}"
        fields[f"attributes[{index}].pricing"] = f"price_{line.id}"
    return fields
