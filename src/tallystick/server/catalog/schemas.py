"""Wire models of the catalog: credit currencies, products, pricing lines, plans, credit benefits."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel, check_path_segment

CURRENCY_KEY_PATTERN = re.compile(r"^[a-z0-9_-]{1,64}$")

RECURRING_TYPES = ("RecurringPerUnit", "RecurringGraduated", "RecurringVolume", "RecurringPercentOfTotal")
USAGE_TYPES = (
    "UsagePerUnit",
    "UsageGraduated",
    "UsageVolume",
    "UsagePrepaidCredits",
    "UsageBracketedPrepaidCredits",
    "UsageCostPlus",
)
SEAT_TYPES = ("SeatBasedPerUnit", "SeatBasedGraduated", "SeatBasedVolume", "SeatBasedPrepaidCredits")
PRICING_TYPES = RECURRING_TYPES + USAGE_TYPES + ("OneTimePerUnit",) + SEAT_TYPES

# Pricing types whose signals consume prepaid credits.
PREPAID_CREDIT_TYPES = ("UsagePrepaidCredits", "UsageBracketedPrepaidCredits")

# Required fields of each pricing type, as the Paid v2 API defines its pricing inputs.
_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "RecurringPerUnit": ("billing_frequency", "price_points"),
    "RecurringGraduated": ("billing_frequency", "price_points"),
    "RecurringVolume": ("billing_frequency", "price_points"),
    "RecurringPercentOfTotal": ("percentage_value", "billing_frequency"),
    "UsagePerUnit": ("event_name", "price_points"),
    "UsageGraduated": ("event_name", "price_points"),
    "UsageVolume": ("event_name", "price_points"),
    "UsagePrepaidCredits": ("event_name", "credits_currency_id", "credit_cost"),
    "UsageBracketedPrepaidCredits": ("event_name", "pricing_input", "credit_unit_brackets"),
    "UsageCostPlus": ("cost_plus_multiplier",),
    "OneTimePerUnit": ("price_points",),
    "SeatBasedPerUnit": ("billing_frequency", "price_points"),
    "SeatBasedGraduated": ("billing_frequency", "price_points"),
    "SeatBasedVolume": ("billing_frequency", "price_points"),
    "SeatBasedPrepaidCredits": ("credits_currency_id", "credit_cost", "billing_frequency"),
}
_TIERED_TYPES = {name for name in PRICING_TYPES if name.endswith(("Graduated", "Volume"))}

BILLING_FREQUENCIES = ("Monthly", "Quarterly", "Semi-Annually", "Annual", "Custom")


def charge_type(pricing_type: str) -> str:
    """Return the output `chargeType` of a pricing type: usage, recurring, oneTime or seatBased."""
    if pricing_type.startswith("Usage"):
        return "usage"
    if pricing_type.startswith("SeatBased"):
        return "seatBased"
    if pricing_type.startswith("OneTime"):
        return "oneTime"
    return "recurring"


def pricing_model(pricing_type: str) -> str:
    """Return the output `pricingModel` of a pricing type, such as perUnit or prepaidCredits."""
    if pricing_type == "UsageBracketedPrepaidCredits":
        return "bracketedPrepaidCredits"
    if pricing_type.endswith("PrepaidCredits"):
        return "prepaidCredits"
    if pricing_type.endswith("Graduated"):
        return "graduatedPricing"
    if pricing_type.endswith("Volume"):
        return "volumePricing"
    if pricing_type.endswith("PercentOfTotal"):
        return "percentOfTotal"
    if pricing_type.endswith("CostPlus"):
        return "costPlus"
    return "perUnit"


class Tier(RequestModel):
    model_config = ConfigDict(extra="allow")

    lower_bound: int = Field(ge=0)
    upper_bound: int | None = Field(default=None, ge=0)
    unit_amount: int | None = Field(default=None, ge=0, description="Price per unit in cents.")
    flat_amount: int | None = Field(default=None, ge=0, description="Flat price of the tier in cents.")
    tier_billing_type: Literal["flat", "perUnit"] | None = None
    index: float | None = None
    number: int | None = None


class PricePoint(RequestModel):
    model_config = ConfigDict(extra="allow")

    currency: str = Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code, such as USD.")
    unit_price: int = Field(ge=0, description="Price in cents (minor units) of the currency.")
    tiers: list[Tier] | None = None
    min_quantity: int | None = Field(default=None, ge=0)
    max_quantity: int | None = Field(default=None, ge=0)
    included_quantity: int | None = Field(default=None, ge=0)


class QuantityMapping(RequestModel):
    model_config = ConfigDict(extra="allow")

    kind: Literal["signalQuantity"]
    path: str | None = Field(
        default=None,
        max_length=255,
        description="JSONPath-like location of the quantity in signal data, such as $.quantity.",
    )

    @field_validator("path")
    @classmethod
    def _simple_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\$(\.[A-Za-z_][A-Za-z0-9_]*)+", value):
            raise ValueError("must be a dotted path such as $.quantity or $.usage.tokens")
        return value


class CreditUnitBracket(RequestModel):
    model_config = ConfigDict(extra="allow")

    up_to: int | None = Field(default=None, ge=0, description="Upper quantity bound; null = no bound.")
    credit_units: Decimal = Field(ge=0, max_digits=28, decimal_places=9)
    credit_units_per_unit: Decimal | None = Field(default=None, ge=0, max_digits=28, decimal_places=9)


class PricingInput(RequestModel):
    """A pricing line as the Paid v2 API sends it, discriminated by `pricingType`.

    Fields that tallystick does not interpret are kept (`extra="allow"`) and returned as sent.
    """

    model_config = ConfigDict(extra="allow")

    pricing_type: Literal[PRICING_TYPES]  # type: ignore[valid-type]
    event_name: str | None = Field(default=None, min_length=1, max_length=255)
    signal_type: str | None = None
    billing_frequency: Literal[BILLING_FREQUENCIES] | None = None  # type: ignore[valid-type]
    billing_frequency_custom_months: int | None = Field(default=None, ge=1, le=120)
    billing_type: Literal["Advance", "Arrears"] | None = None
    credits_currency_id: str | None = Field(default=None, min_length=1, max_length=40)
    credit_cost: Decimal | None = Field(default=None, ge=0, max_digits=28, decimal_places=9)
    unit_value: Decimal | None = Field(default=None, ge=0)
    percentage_value: Decimal | None = Field(default=None, ge=0)
    cost_plus_multiplier: Decimal | None = Field(default=None, ge=0)
    overage_unit_price: int | None = Field(default=None, ge=0)
    credit_rollover_amount: Decimal | None = Field(default=None, ge=0)
    fee_type: str | None = None
    pricing_input: QuantityMapping | None = None
    credit_unit_brackets: list[CreditUnitBracket] | None = Field(default=None, min_length=1)
    price_points: list[PricePoint] | None = None

    @model_validator(mode="after")
    def _required_for_type(self) -> PricingInput:
        missing = [name for name in _REQUIRED_FIELDS[self.pricing_type] if getattr(self, name) is None]
        if missing:
            from pydantic.alias_generators import to_camel

            names = ", ".join(to_camel(name) for name in missing)
            raise ValueError(f"{self.pricing_type} pricing requires {names}")
        if self.pricing_type in _TIERED_TYPES:
            for point in self.price_points or []:
                if not point.tiers:
                    raise ValueError(f"{self.pricing_type} pricing requires tiers on every price point")
        if self.billing_frequency == "Custom" and self.billing_frequency_custom_months is None:
            raise ValueError("billingFrequency Custom requires billingFrequencyCustomMonths")
        return self


class CreditBenefitInput(RequestModel):
    credits_currency_id: str = Field(min_length=1, max_length=40)
    amount: Decimal = Field(ge=0, max_digits=28, decimal_places=9, description="Credits per allocation.")
    recipient: Literal["organization", "seat"] | None = None
    is_infinite_total: bool | None = None
    allocation_cadence: Literal["upfront", "monthly"] | None = None
    credit_grant_timing: Literal["on_order_activation", "on_payment", "on_invoice_posted"] | None = None
    overage_unit_price: int | None = Field(default=None, ge=0, description="Cents per credit beyond the allowance.")
    rollover_amount: Decimal | None = Field(default=None, ge=0, max_digits=28, decimal_places=9)
    rollover_duration: int | None = Field(default=None, ge=0)
    rollover_duration_unit: Literal["days", "months"] | None = None


class ProductAttributeUpsert(RequestModel):
    product_attribute_id: str | None = None
    name: str = Field(min_length=1, max_length=500)
    active: bool | None = None
    pricing: PricingInput
    credit_benefits: list[CreditBenefitInput] | None = None
    tax_code: str | None = Field(default=None, max_length=64)


class PlanAttributeInput(RequestModel):
    product_attribute_id: str = Field(min_length=1)
    pricing: PricingInput
    credit_benefits: list[CreditBenefitInput] | None = None


# Credit currencies


class CreditCurrencyCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    key: str = Field(description="Stable machine name: lowercase letters, digits, _ and -.")
    description: str | None = Field(default=None, max_length=2000)

    @field_validator("key")
    @classmethod
    def _key_format(cls, value: str) -> str:
        if not CURRENCY_KEY_PATTERN.fullmatch(value):
            raise ValueError("must be 1 to 64 lowercase letters, digits, '_' or '-'")
        return value


class CreditCurrencyUpdate(RequestModel):
    description: str | None = Field(default=None, max_length=2000)
    status: Literal["active", "archived"] | None = None


class CreditCurrencyOut(ResponseModel):
    id: str
    name: str
    key: str
    status: str
    description: str | None = None
    archived_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class CreditCurrencyListOut(ResponseModel):
    data: list[CreditCurrencyOut]


# Products


class ProductCreate(RequestModel):
    name: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    active: bool | None = None
    product_code: str | None = Field(default=None, max_length=255)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None

    _external_id_check = field_validator("external_id")(check_path_segment)


class ProductUpdate(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    active: bool | None = None
    product_code: str | None = Field(default=None, max_length=255)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    product_attributes: list[ProductAttributeUpsert] | None = None

    _external_id_check = field_validator("external_id")(check_path_segment)


class CreditBenefitOut(ResponseModel):
    id: str
    credits_currency_id: str | None = None
    amount: float
    amount_decimal: str
    recipient: str
    is_infinite_total: bool
    allocation_cadence: str
    credit_grant_timing: str | None = None
    overage_unit_price: int | None = None
    rollover_amount: float | None = None
    rollover_duration: int | None = None
    rollover_duration_unit: str | None = None


class ProductAttributeOut(ResponseModel):
    product_attribute_id: str
    name: str
    active: bool
    pricing: dict[str, Any] | None = None
    credit_benefits: list[CreditBenefitOut]
    tax_code: str | None = None


class ProductOut(ResponseModel):
    id: str
    name: str
    description: str | None = None
    created_at: datetime
    updated_at: datetime
    active: bool
    product_code: str | None = None
    external_id: str | None = None
    archived_at: datetime | None = None
    metadata: dict[str, Any] | None = None


class ProductDetailOut(ProductOut):
    product_attributes: list[ProductAttributeOut]


class ProductListOut(ResponseModel):
    data: list[ProductOut]
    pagination: PaginationOut


# Plans


class PlanCreate(RequestModel):
    product_id: str = Field(min_length=1)
    name: str | None = Field(default=None, max_length=500)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    supported_currencies: list[str] | None = None
    is_default: bool | None = None
    attributes: list[PlanAttributeInput]

    _external_id_check = field_validator("external_id")(check_path_segment)

    @field_validator("supported_currencies")
    @classmethod
    def _currency_codes(cls, value: list[str] | None) -> list[str] | None:
        return _check_currency_codes(value)


class PlanUpdate(RequestModel):
    name: str | None = Field(default=None, max_length=500)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    supported_currencies: list[str] | None = None
    is_default: bool | None = None
    status: Literal["active", "archived"] | None = None
    attributes: list[PlanAttributeInput] | None = None

    _external_id_check = field_validator("external_id")(check_path_segment)

    @field_validator("supported_currencies")
    @classmethod
    def _currency_codes(cls, value: list[str] | None) -> list[str] | None:
        return _check_currency_codes(value)


def _check_currency_codes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    for code in value:
        if not re.fullmatch(r"[A-Za-z]{3}", code):
            raise ValueError(f"'{code}' is not a three-letter ISO 4217 currency code")
    return [code.upper() for code in value]


class PlanUpgradePathGroup(RequestModel):
    frequency: str | None = None
    plan_ids: list[str]


class PlanUpgradePathUpdate(RequestModel):
    product_id: str = Field(min_length=1)
    groups: list[PlanUpgradePathGroup]


class PlanAttributeOut(ResponseModel):
    product_attribute_id: str
    name: str
    active: bool
    pricing: dict[str, Any] | None = None
    credit_benefits: list[CreditBenefitOut]


class PlanOut(ResponseModel):
    id: str
    product_id: str
    name: str | None = None
    external_id: str | None = None
    supported_currencies: list[str]
    is_default: bool
    status: str
    upgrade_path_order: int | None = None
    archived_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    attributes: list[PlanAttributeOut]


class PlanListOut(ResponseModel):
    data: list[PlanOut]
    pagination: PaginationOut


class PlanUpgradePathOut(ResponseModel):
    data: list[PlanOut]
