"""Credit unit values behind signal revenue.

Order grants are valued at their share of the order's price, and manual grants at the unit
value they were given.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from tallystick.server.costs.margin import credit_unit_values
from tallystick.server.models import CreditGrant
from tests.checkout_helpers import create_checkout, hosted_page
from tests.guide import create_guide_catalog
from tests.test_checkout_completion import build_quarterly_catalog

# A credit of the Pro plan of `create_guide_catalog`: $79 a month for 2,000 Chat Credits.
PRO_CREDIT_VALUE = Decimal("0.0395")


def _grants(store, organization_id):  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return list(session.scalars(select(CreditGrant).where(CreditGrant.organization_id == organization_id)))


def test_quarterly_two_currency_order_values(tenant, store):
    # $300 a quarter granting 1,000 Messages a month and 90 Reports up front: each currency
    # is worth half the price, $150 a quarter.
    ids = build_quarterly_catalog(tenant)
    checkout = create_checkout(tenant, products=[{"id": ids["product"]}], externalCustomerId="user-q")
    assert hosted_page(checkout).pay(ids["plan"]).status_code == 303
    grants = {grant.credits_currency_id: grant for grant in _grants(store, tenant.organization_id)}

    with store.read_sessions() as session:
        values = credit_unit_values(session, tenant.organization_id, {grant.id for grant in grants.values()})

    messages, reports = grants[ids["messages"]], grants[ids["reports"]]
    # One month of Messages: $300 / 3 months / 2 currencies / 1,000 credits.
    assert values[messages.id] == Decimal("0.05")
    # The whole quarter of Reports: $300 / 2 currencies / 90 credits.
    assert round(values[reports.id], 12) == Decimal("1.666666666667")
    assert round(values[reports.id] * reports.amount, 12) == Decimal(150)


def test_manual_grant_is_worth_nothing(tenant, store):
    assert tenant.http.post("/credits/currencies", json={"name": "Chat", "key": "chat"}).status_code == 201
    assert tenant.http.post("/customers/", json={"name": "U", "externalId": "user-m"}).status_code == 201
    response = tenant.http.post(
        "/customers/external/user-m/credits/grants", json={"creditCurrencyKey": "chat", "amount": 5}
    )
    assert response.status_code == 201, response.text
    (grant,) = _grants(store, tenant.organization_id)

    with store.read_sessions() as session:
        values = credit_unit_values(session, tenant.organization_id, {grant.id})

    assert values == {grant.id: Decimal(0)}


def _send_chat_message(tenant, cost: str) -> dict:  # type: ignore[no-untyped-def]
    """Send a chat_message signal of user-1 with an AI cost in USD, and return its listing item.

    The signal must be the tenant's only one.
    """
    signal = {
        "eventName": "chat_message",
        "customer": {"externalCustomerId": "user-1"},
        "attribution": {"externalProductId": "chatbot"},
        "data": {"costData": {"vendor": "openai", "cost": {"amount": cost, "currency": "USD"}}},
    }
    response = tenant.http.post("/signals/bulk", json={"signals": [signal]})
    assert response.status_code == 200, response.text
    [item] = tenant.http.get("/signals/").json()["data"]
    return item


def _spends(tenant, signal_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Return the credits the signal drew from each grant, by grant id."""
    entries = tenant.http.get("/credits/transactions", params={"type": "spend"}).json()["data"]
    return {entry["grantId"]: entry["amount"] for entry in entries if entry["signalId"] == signal_id}


def test_manual_grant_unit_value_is_revenue(tenant):
    create_guide_catalog(tenant.paid())
    assert tenant.http.post("/customers/", json={"name": "U", "externalId": "user-1"}).status_code == 201
    granted = tenant.http.post(
        "/customers/external/user-1/credits/grants",
        json={"creditCurrencyKey": "chat_credits", "amount": 100, "unitValue": "0.05"},
    )
    assert granted.status_code == 201, granted.text

    item = _send_chat_message(tenant, "0.002")

    assert item["creditsConsumed"] == "1"
    assert item["cost"] == {"amount": "0.002000000000", "currency": "USD", "status": "priced"}
    assert item["revenue"] == {"amount": "0.050000000000", "currency": "USD"}
    assert item["margin"] == {"amount": "0.048000000000", "currency": "USD"}
    detail = tenant.http.get(f"/signals/{item['id']}").json()
    assert detail["revenue"] == item["revenue"]
    assert detail["margin"] == item["margin"]
    [group] = tenant.http.get("/costs/aggregates", params={"groupBy": "customer"}).json()["data"]
    assert group["revenue"] == {"amount": "0.050000000000", "currency": "USD"}
    assert group["margin"] == {"amount": "0.048000000000", "currency": "USD"}


def test_manual_and_order_grant_revenue_mix(tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-1")
    assert hosted_page(checkout).pay(catalog.plan_ids["pro"]).status_code == 303
    # Half a credit drawn before the plan's grant (lower priority first), worth $0.10 a credit.
    granted = tenant.http.post(
        "/customers/external/user-1/credits/grants",
        json={"creditCurrencyKey": "chat_credits", "amount": "0.5", "unitValue": "0.1", "priority": -1},
    )
    assert granted.status_code == 201, granted.text
    manual_id = granted.json()["grant"]["id"]

    item = _send_chat_message(tenant, "0.01")

    spends = _spends(tenant, item["id"])
    assert spends.pop(manual_id) == "-0.5"
    assert list(spends.values()) == ["-0.5"]
    revenue = Decimal("0.5") * Decimal("0.1") + Decimal("0.5") * PRO_CREDIT_VALUE
    assert revenue == Decimal("0.06975")
    assert item["revenue"] == {"amount": f"{revenue:.12f}", "currency": "USD"}
    assert item["margin"] == {"amount": f"{revenue - Decimal('0.01'):.12f}", "currency": "USD"}
    [group] = tenant.http.get("/costs/aggregates", params={"groupBy": "customer"}).json()["data"]
    assert group["revenue"] == {"amount": f"{revenue:.12f}", "currency": "USD"}


def test_unit_value_counts_only_without_order(tenant, store):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-1")
    assert hosted_page(checkout).pay(catalog.plan_ids["pro"]).status_code == 303
    granted = tenant.http.post(
        "/customers/external/user-1/credits/grants",
        json={"creditCurrencyKey": "chat_credits", "amount": 10, "unitValue": "0.2"},
    )
    assert granted.status_code == 201, granted.text
    manual_id = granted.json()["grant"]["id"]
    # No endpoint sets a unit value on an order's grant, so the test writes one directly.
    with store.transaction() as session:
        order_grant = session.scalars(
            select(CreditGrant).where(
                CreditGrant.organization_id == tenant.organization_id, CreditGrant.order_id.is_not(None)
            )
        ).one()
        order_grant.unit_value = Decimal("1")
        order_grant_id = order_grant.id

    with store.read_sessions() as session:
        values = credit_unit_values(session, tenant.organization_id, {manual_id, order_grant_id})

    assert values[manual_id] == Decimal("0.2")
    assert values[order_grant_id] == PRO_CREDIT_VALUE
