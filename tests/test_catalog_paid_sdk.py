"""The official paid-python SDK builds and reads back the integration guide's catalog."""

from __future__ import annotations

from tests.guide import GUIDE_PLANS, create_guide_catalog


def test_guide_catalog_round_trip(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)

    currencies = client.credits.list_credit_currencies().data
    assert [(c.id, c.key, c.name, c.status) for c in currencies] == [
        (catalog.currency_id, "chat_credits", "Chat Credits", "active")
    ]

    by_id = client.products.get_product_by_id(catalog.product_id)
    by_external_id = client.products.get_product_by_external_id("chatbot")
    assert by_id == by_external_id
    assert by_id.name == "ChatBot"
    assert by_id.external_id == "chatbot"
    fee, usage = by_id.product_attributes
    assert fee.pricing.pricing_type == "RecurringPerUnit"
    assert fee.pricing.charge_type == "recurring"
    assert fee.pricing.price_points[0].unit_price == 2900
    assert usage.pricing.pricing_type == "UsagePrepaidCredits"
    assert usage.pricing.charge_type == "usage"
    assert usage.pricing.event_name == "chat_message"
    assert usage.pricing.credits_currency_id == catalog.currency_id
    assert usage.pricing.credit_cost == 1

    for name, external_id, cents, credits in GUIDE_PLANS:
        plan = client.plans.get_plan_by_id(catalog.plan_ids[external_id])
        assert plan == client.plans.get_plan_by_external_id(external_id)
        assert plan.name == name
        assert plan.product_id == catalog.product_id
        assert plan.supported_currencies == ["USD"]
        assert plan.status == "active"
        [attribute] = plan.attributes
        assert attribute.product_attribute_id == catalog.fee_line_id
        assert attribute.name == "Monthly fee"
        assert attribute.pricing.price_points[0]["unitPrice"] == cents
        [benefit] = attribute.credit_benefits
        assert benefit.amount == credits
        # Exact text without an exponent: 2000, not 2E+3.
        assert (benefit.model_extra or {})["amountDecimal"] == str(credits)
        assert benefit.credits_currency_id == catalog.currency_id
        assert benefit.allocation_cadence == "monthly"
        assert benefit.credit_grant_timing == "on_order_activation"


def test_guide_catalog_lists_paginate(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)

    first = client.plans.list_plans(limit=2, offset=0)
    second = client.plans.list_plans(limit=2, offset=2)
    assert first.pagination.total == 3
    assert first.pagination.has_more is True
    assert second.pagination.has_more is False
    listed = [plan.id for plan in first.data + second.data]
    assert sorted(listed) == sorted(catalog.plan_ids.values())

    by_product = client.plans.list_plans(external_product_id="chatbot")
    assert by_product.pagination.total == 3

    products = client.products.list_products(limit=1)
    assert [product.id for product in products.data] == [catalog.product_id]
    assert products.pagination.total == 1
    assert products.pagination.has_more is False


def test_plan_archive_hides_from_active_listing(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)

    archived = client.plans.update_plan_by_external_id("starter", status="archived")
    assert archived.status == "archived"
    assert archived.archived_at is not None

    active_only = client.plans.list_plans(include_archived=False)
    assert catalog.plan_ids["starter"] not in [plan.id for plan in active_only.data]
    everything = client.plans.list_plans()
    assert everything.pagination.total == 3


def test_currency_archive_and_status_filter(tenant):
    client = tenant.paid()
    currency = client.credits.create_credit_currency(name="Chat Credits", key="chat_credits")
    client.credits.create_credit_currency(name="API Credits", key="api-credits", description="for the API")

    updated = client.credits.update_credit_currency_by_id(currency.id, status="archived", description="old")
    assert updated.status == "archived"
    assert updated.description == "old"
    assert updated.archived_at is not None

    archived = client.credits.list_credit_currencies(status="archived").data
    active = client.credits.list_credit_currencies(status="active").data
    every = client.credits.list_credit_currencies().data
    assert [c.key for c in archived] == ["chat_credits"]
    assert [c.key for c in active] == ["api-credits"]
    assert len(every) == 2
