"""Plan changes through checkout (prorated upgrade now, downgrade at period end) and
cancellation at period end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tallystick.server.models import Order
from tallystick.server.signals.lines import find_active_orders
from tests.billing_helpers import (
    available,
    buy,
    create_chat_catalog,
    frozen,
    load_order,
    order_grants,
    order_invoices,
    send_chat_messages,
)
from tests.checkout_helpers import create_checkout, hosted_page, page_text

APR_1 = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
APR_11 = datetime(2026, 4, 11, 9, 30, tzinfo=UTC)
MAY_1 = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
PLANS = [("Starter", 2900, 500), ("Pro", 7900, 2000)]


def test_upgrade_day_10_prorates_two_thirds(tenant, store):
    catalog = create_chat_catalog(tenant, PLANS)
    with frozen(APR_1):
        order_id = buy(tenant, catalog, "Starter", "up-1")
        send_chat_messages(tenant, "up-1", 100, "up-1-apr")

    with frozen(APR_11):
        checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="up-1")
        page, _ = hosted_page(checkout).open()
        assert "$33.33 due today for the rest of this period" in page_text(page.text)
        assert buy(tenant, catalog, "Pro", "up-1") == order_id
        # 400 left of Starter's 500, plus the 1,500 that Pro adds this month.
        assert available(tenant, "up-1") == Decimal(1900)

    invoices = order_invoices(store, order_id)
    upgrade = invoices[-1]
    assert (upgrade.billing_reason, upgrade.total, upgrade.payment_status) == ("upgrade", 3333, "paid")
    assert (upgrade.start_date, upgrade.end_date) == (APR_11, MAY_1)
    order = load_order(store, order_id)
    assert (order.plan_id, order.period_amount) == (catalog.plans["Pro"], 7900)
    ended, current = sorted(order.lines, key=lambda line: line.position)
    assert (ended.end_date, current.start_date, current.end_date) == (APR_11, APR_11, None)

    with frozen(MAY_1):
        assert available(tenant, "up-1") == Decimal(2000)
    renewal = order_invoices(store, order_id)[-1]
    assert (renewal.period_number, renewal.total, renewal.payment_status) == (2, 7900, "paid")
    assert [grant.amount for grant in order_grants(store, order_id)] == [Decimal(500), Decimal(1500), Decimal(2000)]


def test_downgrade_takes_effect_next_period(tenant, store):
    catalog = create_chat_catalog(tenant, PLANS)
    with frozen(APR_1):
        order_id = buy(tenant, catalog, "Pro", "down-1")

    with frozen(APR_11):
        checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="down-1")
        page, _ = hosted_page(checkout).open()
        assert "Starts May 1, 2026; nothing due today" in page_text(page.text)
        assert buy(tenant, catalog, "Starter", "down-1") == order_id
        assert available(tenant, "down-1") == Decimal(2000)
        order = tenant.http.get(f"/orders/{order_id}").json()
        assert order["scheduledChange"]["planId"] == catalog.plans["Starter"]
        assert order["orderAmount"] == 7900
    assert len(order_invoices(store, order_id)) == 1

    with frozen(MAY_1):
        assert available(tenant, "down-1") == Decimal(500)
    order = load_order(store, order_id)
    assert (order.plan_id, order.period_amount, order.scheduled_change) == (catalog.plans["Starter"], 2900, None)
    renewal = order_invoices(store, order_id)[-1]
    assert (renewal.period_number, renewal.total) == (2, 2900)


def test_same_plan_again_is_rejected_on_page(tenant, store):
    catalog = create_chat_catalog(tenant, PLANS)
    with frozen(APR_1):
        order_id = buy(tenant, catalog, "Starter", "same-1")

    with frozen(APR_11):
        checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="same-1")
        response = hosted_page(checkout).pay(catalog.plans["Starter"])

    assert response.status_code == 400
    assert "You already have this plan." in page_text(response.text)
    assert len(order_invoices(store, order_id)) == 1


def test_cancel_ends_order_at_period_end(tenant, store):
    catalog = create_chat_catalog(tenant, PLANS)
    with frozen(APR_1):
        order_id = buy(tenant, catalog, "Starter", "cancel-1")

    with frozen(APR_11):
        response = tenant.http.post(f"/orders/{order_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["endDate"] == "2026-05-01T09:30:00Z"
        assert response.json()["status"] == "active"

    with frozen(MAY_1 + timedelta(hours=1)):
        assert available(tenant, "cancel-1") == Decimal(0)
        state = tenant.http.get("/customers/external/cancel-1/state").json()
        assert state["orders"] == []
        order = tenant.http.get(f"/orders/{order_id}").json()
    assert (order["status"], order["endedAt"]) == ("ended", "2026-05-01T09:30:00Z")
    assert len(order_invoices(store, order_id)) == 1
    assert len(order_grants(store, order_id)) == 1


def test_cancel_then_clear_end_date_keeps_renewing(tenant, store):
    catalog = create_chat_catalog(tenant, PLANS)
    with frozen(APR_1):
        order_id = buy(tenant, catalog, "Starter", "cancel-2")

    with frozen(APR_11):
        assert tenant.http.post(f"/orders/{order_id}/cancel").status_code == 200
        response = tenant.http.put(f"/orders/{order_id}", json={"endDate": None})
        assert response.status_code == 200, response.text
        assert response.json()["endDate"] is None

    with frozen(MAY_1):
        assert available(tenant, "cancel-2") == Decimal(500)
    assert len(order_invoices(store, order_id)) == 2


def test_ended_line_judged_at_customer_time(tenant, store):
    catalog = create_chat_catalog(tenant, PLANS)
    with frozen(APR_1):
        order_id = buy(tenant, catalog, "Starter", "line-time-1")
    with frozen(APR_11):
        buy(tenant, catalog, "Pro", "line-time-1")
    # Both plans price a chat message at one credit. Pricing the ended Starter line at seven
    # makes the two lines differ.
    with store.transaction() as session:
        order = session.get(Order, order_id)
        starter_line, pro_line = sorted(order.lines, key=lambda line: line.position)
        assert (starter_line.end_date, pro_line.end_date) == (APR_11, None)
        starter_line.attributes = [_with_chat_cost(attribute, 7) for attribute in starter_line.attributes]
        customer_id = order.customer_id
    key = (customer_id, catalog.product_id)

    with store.read_sessions() as session:
        at_real_time = find_active_orders(session, tenant.organization_id, {key})
        before_upgrade = find_active_orders(session, tenant.organization_id, {key}, {customer_id: APR_11 - timedelta(days=5)})

    # The real time is months after the upgrade, so only Pro's line is in force. A customer whose
    # time (a test clock's) is before the upgrade still has Starter's line.
    assert at_real_time[key].lines["chat_message"].credit_cost == Decimal(1)
    assert before_upgrade[key].lines["chat_message"].credit_cost == Decimal(7)


def _with_chat_cost(attribute: dict, credits: int) -> dict:  # type: ignore[type-arg]
    pricing = attribute.get("pricing") or {}
    if pricing.get("eventName") != "chat_message":
        return attribute
    return {**attribute, "pricing": {**pricing, "creditCost": credits}}
