"""Credit unit values behind signal revenue: order grants valued at their share of the price."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from tallystick.server.costs.margin import credit_unit_values
from tallystick.server.models import CreditGrant
from tests.checkout_helpers import create_checkout, hosted_page
from tests.test_checkout_completion import build_quarterly_catalog


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
