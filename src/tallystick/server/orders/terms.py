"""Sale terms of a product or one of its plans: charged pricing lines, price and credit benefits.

A plan overrides some of its product's pricing lines; the lines it leaves alone are sold at the
product's pricing. Only active lines count. Prices come from a line's price point in the chosen
currency, in minor units, for a quantity of one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from tallystick.server.models import CreditBenefit, Plan, Product
from tallystick.server.models.types import CREDIT_PLACES

# Months in one billing period, by the catalog's `billingFrequency`; Custom reads
# `billingFrequencyCustomMonths`.
FREQUENCY_MONTHS = {"Monthly": 1, "Quarterly": 3, "Semi-Annually": 6, "Annual": 12}
# The order's wire `billingFrequency` for each catalog `billingFrequency`.
ORDER_FREQUENCY = {
    "Monthly": "monthly",
    "Quarterly": "quarterly",
    "Semi-Annually": "semiAnnually",
    "Annual": "annual",
    "Custom": "custom",
}
# Pricing types charged once per billing period, at its start, for a quantity of one.
RECURRING_CHARGED_TYPES = ("RecurringPerUnit", "SeatBasedPerUnit")
# Pricing types charged once, on the first invoice.
ONE_TIME_CHARGED_TYPES = ("OneTimePerUnit",)
# Pricing types with nothing to pay up front: usage is rated per signal (prepaid credits) or
# billed after the period.
USAGE_TYPES = (
    "UsagePerUnit",
    "UsageGraduated",
    "UsageVolume",
    "UsagePrepaidCredits",
    "UsageBracketedPrepaidCredits",
    "UsageCostPlus",
)


class TermsError(Exception):
    """The product or plan cannot be sold as configured; the message gives the reason."""


class MissingPriceError(TermsError):
    """A charged pricing line has no price point in the requested currency."""


@dataclass(frozen=True)
class BenefitTerms:
    """Credits a pricing line grants: `amount` per billing period of the order.

    Unused credits expire when their allocation ends, except up to `rollover_amount`, which
    stays usable for `rollover_duration` more days or months (`rollover_duration_unit`).
    """

    benefit_id: str
    credits_currency_id: str
    amount: Decimal
    allocation_cadence: str  # upfront or monthly
    credit_grant_timing: str  # on_order_activation, on_payment or on_invoice_posted
    rollover_amount: Decimal | None = None
    rollover_duration: int | None = None
    rollover_duration_unit: str | None = None  # days or months

    def snapshot(self) -> dict[str, Any]:
        """Return the JSON an order line keeps, with amounts as exact decimal strings."""
        return {
            "id": self.benefit_id,
            "creditsCurrencyId": self.credits_currency_id,
            "amount": str(self.amount),
            "allocationCadence": self.allocation_cadence,
            "creditGrantTiming": self.credit_grant_timing,
            "rolloverAmount": str(self.rollover_amount) if self.rollover_amount is not None else None,
            "rolloverDuration": self.rollover_duration,
            "rolloverDurationUnit": self.rollover_duration_unit,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> BenefitTerms:
        rollover_amount = data.get("rolloverAmount")
        return cls(
            benefit_id=data["id"],
            credits_currency_id=data["creditsCurrencyId"],
            amount=Decimal(str(data["amount"])),
            allocation_cadence=data.get("allocationCadence") or "monthly",
            credit_grant_timing=data.get("creditGrantTiming") or "on_order_activation",
            rollover_amount=Decimal(str(rollover_amount)) if rollover_amount is not None else None,
            rollover_duration=data.get("rolloverDuration"),
            rollover_duration_unit=data.get("rolloverDurationUnit"),
        )


@dataclass(frozen=True)
class LineTerms:
    """One pricing line as sold: its pricing object, its charge and its credit benefits."""

    product_attribute_id: str
    plan_attribute_id: str | None
    name: str
    pricing: dict[str, Any]
    pricing_type: str
    # Minor units charged per unit each period (recurring) or once (one-time); None for usage lines.
    charge: int | None
    recurring: bool
    benefits: tuple[BenefitTerms, ...]
    # Units sold, such as seats; the line charges `charge` x `quantity`.
    quantity: int = 1

    @property
    def amount(self) -> int:
        """Minor units this line charges: unit price times quantity (0 for usage lines)."""
        return (self.charge or 0) * self.quantity

    def snapshot(self) -> dict[str, Any]:
        """Return the JSON an order line keeps for this pricing line."""
        return {
            "productAttributeId": self.product_attribute_id,
            "planAttributeId": self.plan_attribute_id,
            "name": self.name,
            "pricing": self.pricing,
            "unitPrice": self.charge,
            "quantity": self.quantity,
            "recurring": self.recurring,
            "creditBenefits": [benefit.snapshot() for benefit in self.benefits],
        }


@dataclass(frozen=True)
class CustomLine:
    """A sales-led order's own pricing for one pricing line, replacing the catalog's."""

    pricing: dict[str, Any]
    benefits: tuple[BenefitTerms, ...] | None  # None keeps the catalog line's benefits
    quantity: int = 1


@dataclass(frozen=True)
class PlanTerms:
    """A product, or one of its plans, priced in one currency."""

    product: Product
    plan: Plan | None
    currency: str
    lines: tuple[LineTerms, ...]
    billing_frequency: str  # the order's wire billing frequency, such as monthly
    period_months: int

    @property
    def name(self) -> str:
        if self.plan is None:
            return self.product.name
        return f"{self.product.name} {self.plan.name or self.plan.external_id or self.plan.id}"

    @property
    def period_amount(self) -> int:
        """Minor units charged at the start of every billing period."""
        return sum(line.amount for line in self.lines if line.recurring)

    @property
    def first_invoice_amount(self) -> int:
        """Minor units of the first invoice: one period plus every one-time charge."""
        return sum(line.amount for line in self.lines)

    @property
    def benefits(self) -> list[BenefitTerms]:
        return [benefit for line in self.lines for benefit in line.benefits]


def monthly_allowance(benefit: BenefitTerms, period_months: int) -> Decimal:
    """Return the credits a monthly-cadence benefit grants each month.

    A benefit's amount covers one billing period; monthly allocation spreads it evenly over the
    period's months (120,000 credits a year are 10,000 a month). A share that does not divide
    exactly is rounded down to the credit columns' nine decimal places.
    """
    share = benefit.amount / Decimal(period_months)
    return share.quantize(Decimal(1).scaleb(-CREDIT_PLACES), rounding=ROUND_DOWN)


def price_terms(
    product: Product,
    plan: Plan | None,
    currency: str,
    *,
    custom: dict[str, CustomLine] | None = None,
    frequency_override: tuple[str, int] | None = None,
) -> PlanTerms:
    """Return what `plan` (or the product's own pricing when None) sells in `currency`.

    `custom` replaces the pricing of lines by name, as a sales-led order's line attributes do.
    `frequency_override` (wire frequency, months) bills every recurring line at that
    frequency, its price scaled from its own frequency and rounded half up to a minor unit.

    Raises TermsError when a charged line has no price in `currency`, uses a pricing type the
    checkout cannot charge yet, or when the recurring lines bill at different frequencies.
    """
    currency = currency.upper()
    custom = custom or {}
    overrides = {attribute.product_attribute_id: attribute for attribute in plan.attributes} if plan else {}

    lines = []
    for product_line in product.attributes:
        if not product_line.active:
            continue
        override = overrides.get(product_line.id)
        source = override if override is not None else product_line
        own = custom.get(product_line.name)
        lines.append(
            _line_terms(
                product_attribute_id=product_line.id,
                plan_attribute_id=override.id if override is not None and own is None else None,
                name=product_line.name,
                pricing=own.pricing if own is not None else (source.pricing or {}),
                benefits=(
                    own.benefits
                    if own is not None and own.benefits is not None
                    else tuple(_benefit_terms(benefit) for benefit in source.credit_benefits)
                ),
                currency=currency,
                quantity=own.quantity if own is not None else 1,
            )
        )

    if frequency_override is not None:
        frequency, months = frequency_override
        lines = [_rescaled(line, months) for line in lines]
    else:
        frequencies = {_billing_months(line) for line in lines if line.recurring}
        if len(frequencies) > 1:
            raise TermsError("its recurring pricing lines bill at different frequencies")
        if frequencies:
            [(frequency, months)] = frequencies
        else:
            # Nothing recurs, so nothing renews: credits are still allocated for a first month.
            frequency, months = "monthly", 1

    return PlanTerms(
        product=product,
        plan=plan,
        currency=currency,
        lines=tuple(lines),
        billing_frequency=frequency,
        period_months=months,
    )


def _rescaled(line: LineTerms, months: int) -> LineTerms:
    """Return `line` priced for a period of `months`, scaled from its own billing frequency."""
    if not line.recurring or line.charge is None:
        return line
    _, own_months = _billing_months(line)
    if own_months == months:
        return line
    scaled = (Decimal(line.charge) * months / own_months).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return replace(line, charge=int(scaled))


def _benefit_terms(benefit: CreditBenefit) -> BenefitTerms:
    return BenefitTerms(
        benefit_id=benefit.id,
        credits_currency_id=benefit.credits_currency_id,
        amount=benefit.amount,
        allocation_cadence=benefit.allocation_cadence,
        credit_grant_timing=benefit.credit_grant_timing,
        rollover_amount=benefit.rollover_amount,
        rollover_duration=benefit.rollover_duration,
        rollover_duration_unit=benefit.rollover_duration_unit,
    )


def _line_terms(
    *,
    product_attribute_id: str,
    plan_attribute_id: str | None,
    name: str,
    pricing: dict[str, Any],
    benefits: tuple[BenefitTerms, ...],
    currency: str,
    quantity: int = 1,
) -> LineTerms:
    pricing_type = str(pricing.get("pricingType", ""))
    recurring = pricing_type in RECURRING_CHARGED_TYPES
    if recurring or pricing_type in ONE_TIME_CHARGED_TYPES:
        charge: int | None = _unit_price(pricing, currency, name)
    elif pricing_type in USAGE_TYPES:
        charge = None
    else:
        raise TermsError(f"pricing line '{name}' uses {pricing_type}, which checkout cannot charge yet")

    return LineTerms(
        product_attribute_id=product_attribute_id,
        plan_attribute_id=plan_attribute_id,
        name=name,
        pricing=pricing,
        pricing_type=pricing_type,
        charge=charge,
        recurring=recurring,
        benefits=benefits,
        quantity=quantity,
    )


def _unit_price(pricing: dict[str, Any], currency: str, name: str) -> int:
    for point in pricing.get("pricePoints") or []:
        if str(point.get("currency", "")).upper() == currency:
            return int(point["unitPrice"])
    raise MissingPriceError(f"pricing line '{name}' has no price in {currency}")


def _billing_months(line: LineTerms) -> tuple[str, int]:
    frequency = str(line.pricing.get("billingFrequency") or "Monthly")
    if frequency == "Custom":
        months = line.pricing.get("billingFrequencyCustomMonths")
        if not isinstance(months, int) or months < 1:
            raise TermsError(f"pricing line '{line.name}' bills at a Custom frequency without a month count")
        return ORDER_FREQUENCY[frequency], months
    if frequency not in FREQUENCY_MONTHS:
        raise TermsError(f"pricing line '{line.name}' has the unknown billing frequency {frequency}")
    return ORDER_FREQUENCY[frequency], FREQUENCY_MONTHS[frequency]


def terms_currencies(product: Product, plan: Plan | None) -> list[str]:
    """Return the currencies in which every charged line of the plan has a price, sorted."""
    codes: set[str] | None = None
    overrides = {attribute.product_attribute_id: attribute for attribute in plan.attributes} if plan else {}
    for product_line in product.attributes:
        if not product_line.active:
            continue
        source = overrides.get(product_line.id, product_line)
        pricing = source.pricing or {}
        if pricing.get("pricingType") in USAGE_TYPES:
            continue
        line_codes = {str(point.get("currency", "")).upper() for point in pricing.get("pricePoints") or []}
        codes = line_codes if codes is None else codes & line_codes
    if codes is None:
        # Nothing is charged, so any currency works; plans still name theirs.
        return sorted(code.upper() for code in (plan.supported_currencies if plan else []) or ["USD"])
    return sorted(codes)
