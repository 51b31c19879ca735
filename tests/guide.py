"""The integration guide's catalog, created through the official paid-python SDK.

An AI chatbot sells three monthly plans (Starter $29 -> 500 Chat Credits, Pro $79 -> 2,000,
Business $199 -> 10,000) and every chat message costs one credit.
"""

from __future__ import annotations

from dataclasses import dataclass

from paid.types import (
    PlanAttributeInput,
    ProductAttributeUpsert,
    ProductCreditBenefitInput,
    ProductPricingInput_RecurringPerUnit,
    ProductPricingInput_UsagePrepaidCredits,
    ProductSimplePricePoint,
)

# (name, external id, monthly price in cents, credits granted per month)
GUIDE_PLANS = [
    ("Starter", "starter", 2900, 500),
    ("Pro", "pro", 7900, 2000),
    ("Business", "business", 19900, 10000),
]


@dataclass
class GuideCatalog:
    currency_id: str
    product_id: str
    fee_line_id: str
    usage_line_id: str
    plan_ids: dict[str, str]


def monthly_fee(cents: int) -> ProductPricingInput_RecurringPerUnit:
    return ProductPricingInput_RecurringPerUnit(
        billing_frequency="Monthly",
        price_points=[ProductSimplePricePoint(currency="USD", unit_price=cents)],
    )


def create_guide_catalog(client) -> GuideCatalog:  # type: ignore[no-untyped-def]
    """Create the guide's currency, product and plans with `client` (a paid.Paid)."""
    currency = client.credits.create_credit_currency(name="Chat Credits", key="chat_credits")
    product = client.products.create_product(name="ChatBot", external_id="chatbot", active=True)
    detail = client.products.update_product_by_id(
        product.id,
        product_attributes=[
            ProductAttributeUpsert(name="Monthly fee", pricing=monthly_fee(2900)),
            ProductAttributeUpsert(
                name="Chat message",
                pricing=ProductPricingInput_UsagePrepaidCredits(
                    event_name="chat_message", credits_currency_id=currency.id, credit_cost=1
                ),
            ),
        ],
    )
    fee_line, usage_line = detail.product_attributes

    plan_ids = {}
    for name, external_id, cents, credits in GUIDE_PLANS:
        plan = client.plans.create_plan(
            product_id=product.id,
            name=name,
            external_id=external_id,
            attributes=[
                PlanAttributeInput(
                    product_attribute_id=fee_line.product_attribute_id,
                    pricing=monthly_fee(cents),
                    credit_benefits=[
                        ProductCreditBenefitInput(
                            credits_currency_id=currency.id,
                            amount=credits,
                            allocation_cadence="monthly",
                        )
                    ],
                )
            ],
        )
        plan_ids[external_id] = plan.id

    return GuideCatalog(
        currency_id=currency.id,
        product_id=product.id,
        fee_line_id=fee_line.product_attribute_id,
        usage_line_id=usage_line.product_attribute_id,
        plan_ids=plan_ids,
    )
