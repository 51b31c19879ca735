"""The integration guide's catalog and checkout, written with the SDK's Client as docs/sdk.md shows."""

from __future__ import annotations

from decimal import Decimal

from tallystick import Client

PLANS = [
    ("Starter", "starter", 2900, 500),
    ("Pro", "pro", 7900, 2000),
    ("Business", "business", 19900, 10000),
]


def monthly_fee(cents: int) -> dict:
    return {
        "pricingType": "RecurringPerUnit",
        "billingFrequency": "Monthly",
        "pricePoints": [{"currency": "USD", "unitPrice": cents}],
    }


def test_guide_catalog_and_checkout(tenant):  # type: ignore[no-untyped-def]
    with Client(tenant.server.root, tenant.api_key) as client:
        currency = client.credits.create_currency(name="Chat Credits", key="chat_credits")
        product = client.products.create(name="ChatBot", external_id="chatbot", active=True)
        detail = client.products.update(
            product["id"],
            product_attributes=[
                {"name": "Monthly fee", "pricing": monthly_fee(2900)},
                {
                    "name": "Chat message",
                    "pricing": {
                        "pricingType": "UsagePrepaidCredits",
                        "eventName": "chat_message",
                        "creditsCurrencyId": currency["id"],
                        "creditCost": 1,
                    },
                },
            ],
        )
        fee_line = detail["productAttributes"][0]["productAttributeId"]
        plan_ids = []
        for name, external_id, cents, credits in PLANS:
            plan = client.plans.create(
                product_id=product["id"],
                name=name,
                external_id=external_id,
                attributes=[
                    {
                        "productAttributeId": fee_line,
                        "pricing": monthly_fee(cents),
                        "creditBenefits": [
                            {
                                "creditsCurrencyId": currency["id"],
                                "amount": credits,
                                "allocationCadence": "monthly",
                            }
                        ],
                    }
                ],
            )
            plan_ids.append(plan["id"])

        checkout = client.checkouts.create(
            products=[{"id": product["id"], "plans": [{"id": plan_id} for plan_id in plan_ids]}],
            success_url="https://chat.example.com/welcome?checkout={CHECKOUT_ID}",
            external_customer_id="acme",
        )
        fetched = client.checkouts.get(checkout["id"])
        pro = client.plans.get_by_external_id("pro")
        listed_plans = client.plans.list()["data"]

    assert sorted(plan["name"] for plan in listed_plans) == ["Business", "Pro", "Starter"]
    benefit = pro["attributes"][0]["creditBenefits"][0]
    assert Decimal(benefit["amount"]) == 2000
    assert fetched["status"] == "active"
    assert fetched["url"] == checkout["url"]
    assert fetched.get("orderId") is None
