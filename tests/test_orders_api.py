"""Sales-led orders through paid-python and raw HTTP: create, update, delete, activate, lines,
input errors, and backdated activation with signal replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from paid.core.api_error import ApiError
from paid.errors import BadRequestError
from paid.types import (
    CreateOrderLineAttributeRequest,
    CreateOrderLineAttributeRequestPricing,
    CreateOrderLineAttributeRequestPricingCreditBenefitsItem,
    CreateOrderLineAttributeRequestPricingPricePoints,
    CreateOrderLineRequest,
)
from sqlalchemy import select

from tallystick.server.models import Signal
from tests.billing_helpers import available, frozen, order_grants, order_invoices, order_periods

NOW = datetime(2026, 5, 10, 15, 0, tzinfo=UTC)
START = datetime(2026, 2, 10, 0, 0, tzinfo=UTC)
NO_RETRY = {"max_retries": 0}


def build_catalog(tenant) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A product with a $500 monthly fee and a chat message line that costs no credits yet."""
    http = tenant.http
    currency = http.post("/credits/currencies", json={"name": "Messages", "key": "messages"}).json()
    product = http.post("/products/", json={"name": "Assistant", "active": True}).json()
    http.put(
        f"/products/{product['id']}",
        json={
            "productAttributes": [
                {
                    "name": "Platform fee",
                    "pricing": {
                        "pricingType": "RecurringPerUnit",
                        "billingFrequency": "Monthly",
                        "pricePoints": [{"currency": "USD", "unitPrice": 50000}],
                    },
                },
                {
                    "name": "Chat message",
                    "pricing": {
                        "pricingType": "UsagePerUnit",
                        "eventName": "chat_message",
                        "pricePoints": [{"currency": "USD", "unitPrice": 1}],
                    },
                },
            ]
        },
    )
    customer = http.post("/customers/", json={"name": "Acme", "externalId": "acme"}).json()
    return {"currency": currency["id"], "product": product["id"], "customer": customer["id"]}


def sold_lines(ids: dict[str, str], *, credits: int = 500, fee: int = 40000) -> list[CreateOrderLineRequest]:
    """One line: the fee at a negotiated price with `credits` a month, and chat messages at one credit."""
    return [
        CreateOrderLineRequest(
            product_id=ids["product"],
            attributes=[
                CreateOrderLineAttributeRequest(
                    name="Platform fee",
                    pricing=CreateOrderLineAttributeRequestPricing(
                        charge_type="recurring",
                        pricing_model="perUnit",
                        billing_frequency="monthly",
                        price_points=CreateOrderLineAttributeRequestPricingPricePoints(unit_price=fee),
                        credit_benefits=[
                            CreateOrderLineAttributeRequestPricingCreditBenefitsItem(
                                id="monthly-messages",
                                credits_currency_id=ids["currency"],
                                amount=credits,
                                allocation_cadence="monthly",
                            )
                        ],
                    ),
                ),
                CreateOrderLineAttributeRequest(
                    name="Chat message",
                    pricing=CreateOrderLineAttributeRequestPricing(
                        charge_type="usage",
                        pricing_model="prepaidCredits",
                        event_name="chat_message",
                        credits_currency_id=ids["currency"],
                        credit_cost=1,
                        price_points=CreateOrderLineAttributeRequestPricingPricePoints(unit_price=0),
                    ),
                ),
            ],
        )
    ]


def test_order_lifecycle_through_paid_python(tenant):
    ids = build_catalog(tenant)
    client = tenant.paid()

    with frozen(NOW):
        draft = client.orders.create_order(
            customer_id=ids["customer"], name="Acme annual deal", lines=sold_lines(ids), external_id="deal-1"
        )
        assert draft.creation_state == "draft"
        assert draft.order_amount == 40000
        assert draft.start_date == NOW

        updated = client.orders.update_order_by_id(
            draft.id, name="Acme deal", metadata={"owner": "sales"}, start_date=START, billing_anchor=10
        )
        assert (updated.name, updated.metadata, updated.start_date) == ("Acme deal", {"owner": "sales"}, START)
        assert updated.version == draft.version + 1

        lines = client.orders.get_order_lines(draft.id)
        assert [line.product_id for line in lines.data] == [ids["product"]]
        assert lines.pagination.total == 1

        throwaway = client.orders.create_order(customer_id=ids["customer"], lines=sold_lines(ids))
        assert client.orders.delete_order_by_id(throwaway.id) is not None
        with pytest.raises(ApiError) as missing:
            client.orders.get_order_by_id(throwaway.id)
        assert missing.value.status_code == 404

        active = client.orders.activate_order_by_id(draft.id)
        assert active.creation_state == "active"
        listed = client.orders.list_orders(customer_id=ids["customer"], status="active")
        assert [order.id for order in listed.data] == [draft.id]
        assert client.orders.list_orders(external_id="deal-1").data[0].id == draft.id


def test_create_active_order_in_one_call(tenant, store):
    ids = build_catalog(tenant)
    with frozen(NOW):
        order = tenant.paid().orders.create_order(
            customer_id=ids["customer"], lines=sold_lines(ids), creation_state="active"
        )
        assert available(tenant, "acme") == Decimal(500)
    [invoice] = order_invoices(store, order.id)
    assert (invoice.total, invoice.status, invoice.payment_status) == (40000, "posted", "pending")


def _attribute(name: str, pricing: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "pricing": {"pricePoints": {"unitPrice": 0}, **pricing}}


# (body fields as a function of the product id, the field the error must name)
INVALID_ORDERS = [
    (lambda product: {"customerId": "cus_missing"}, "customerId"),
    (lambda product: {"lines": [{"productId": "prod_missing"}]}, "lines[0].productId"),
    (
        lambda product: {
            "lines": [{"productId": product, "attributes": [_attribute("Nope", {"chargeType": "recurring", "pricingModel": "perUnit"})]}]
        },
        "lines[0].attributes[0].name",
    ),
    (
        lambda product: {
            "lines": [
                {
                    "productId": product,
                    "attributes": [
                        _attribute(
                            "Chat message",
                            {"chargeType": "usage", "pricingModel": "prepaidCredits", "eventName": "chat_message"},
                        )
                    ],
                }
            ]
        },
        "lines[0].attributes[0].pricing.creditsCurrencyId",
    ),
    (lambda product: {"billingAnchor": 32}, "billingAnchor"),
    (lambda product: {"startDate": "2026-01-01T00:00:00"}, "startDate"),
    (lambda product: {"startDate": "2026-03-01T00:00:00Z", "endDate": "2026-02-01T00:00:00Z"}, "endDate"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_ORDERS)
def test_create_rejects_invalid_input(tenant, body, field: str):  # type: ignore[no-untyped-def]
    ids = build_catalog(tenant)

    response = tenant.http.post("/orders/", json={"customerId": ids["customer"], **body(ids["product"])})

    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    assert tenant.http.get("/orders/").json()["pagination"]["total"] == 0


def test_unknown_catalog_ids_get_their_codes(tenant):
    ids = build_catalog(tenant)
    unknown_product = {"customerId": ids["customer"], "lines": [{"productId": "prod_missing"}]}
    usage = {"chargeType": "usage", "pricingModel": "prepaidCredits", "eventName": "chat_message", "creditCost": 1}
    unknown_currency = {
        "customerId": ids["customer"],
        "lines": [
            {
                "productId": ids["product"],
                "attributes": [_attribute("Chat message", {**usage, "creditsCurrencyId": "cc_missing"})],
            }
        ],
    }

    product_response = tenant.http.post("/orders/", json=unknown_product)
    currency_response = tenant.http.post("/orders/", json=unknown_currency)

    assert product_response.status_code == 400
    assert product_response.json()["code"] == "unknown_product"
    assert currency_response.status_code == 400, currency_response.text
    assert currency_response.json()["code"] == "unknown_currency"
    assert currency_response.json()["fields"][0]["value"] == "cc_missing"
    assert tenant.http.get("/orders/").json()["pagination"]["total"] == 0


def test_active_order_cannot_be_deleted_or_redated(tenant):
    ids = build_catalog(tenant)
    client = tenant.paid()
    with frozen(NOW):
        order = client.orders.create_order(customer_id=ids["customer"], lines=sold_lines(ids), creation_state="active")

        with pytest.raises(ApiError) as deleted:
            client.orders.delete_order_by_id(order.id, request_options=NO_RETRY)
        with pytest.raises(BadRequestError) as redated:
            client.orders.update_order_by_id(order.id, start_date=START, request_options=NO_RETRY)
        with pytest.raises(BadRequestError) as reactivated:
            client.orders.activate_order_by_id(order.id, request_options=NO_RETRY)

    assert deleted.value.status_code == 400
    assert "startDate" in redated.value.body["error"]
    assert "draft" in reactivated.value.body["error"]
    assert client.orders.get_order_by_id(order.id).creation_state == "active"


def test_external_id_filters_skip_deleted_customer(tenant):
    ids = build_catalog(tenant)
    client = tenant.paid()
    with frozen(NOW):
        old = client.orders.create_order(customer_id=ids["customer"], lines=sold_lines(ids), creation_state="active")
        assert tenant.http.delete(f"/customers/{ids['customer']}").status_code == 200
        live = tenant.http.post("/customers/", json={"name": "Acme", "externalId": "acme"}).json()
        new = client.orders.create_order(customer_id=live["id"], lines=sold_lines(ids), creation_state="active")

        orders = tenant.http.get("/orders/", params={"externalCustomerId": "acme"}).json()
        invoices = tenant.http.get("/invoices/", params={"externalCustomerId": "acme"}).json()
        deleted_invoices = tenant.http.get("/invoices/", params={"customerId": ids["customer"]}).json()

    assert [order["id"] for order in orders["data"]] == [new.id]
    assert orders["pagination"]["total"] == 1
    assert invoices["data"] != []
    assert {invoice["orderId"] for invoice in invoices["data"]} == {new.id}
    # The deleted customer's invoices stay readable by its customer id.
    assert {invoice["orderId"] for invoice in deleted_invoices["data"]} == {old.id}


def test_activate_sends_no_body(tenant):
    ids = build_catalog(tenant)
    with frozen(NOW):
        order = tenant.paid().orders.create_order(customer_id=ids["customer"], lines=sold_lines(ids))
        response = tenant.http.post(f"/orders/{order.id}/activate", content=b"")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"


def test_other_organization_cannot_touch_order(tenant, other_tenant):
    ids = build_catalog(tenant)
    with frozen(NOW):
        order = tenant.paid().orders.create_order(customer_id=ids["customer"], lines=sold_lines(ids))

        for method, path in (("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/activate"), ("GET", "/lines")):
            response = other_tenant.http.request(method, f"/orders/{order.id}{path}", json={} if method == "PUT" else None)
            assert response.status_code == 404, (method, path)
        response = other_tenant.http.post("/orders/", json={"customerId": ids["customer"]})
        assert response.status_code == 400
    assert tenant.paid().orders.get_order_by_id(order.id).creation_state == "draft"


def send_signals_at(tenant, moments: list[datetime], prefix: str) -> None:  # type: ignore[no-untyped-def]
    signals = [
        {
            "eventName": "chat_message",
            "customer": {"externalCustomerId": "acme"},
            "attribution": {"productId": tenant.product_id},
            "idempotencyKey": f"{prefix}-{index}",
            "timestamp": moment.isoformat(),
        }
        for index, moment in enumerate(moments)
    ]
    response = tenant.http.post("/signals/bulk", json={"signals": signals})
    assert response.status_code in (200, 201, 207), response.text


def test_backdated_activation_replays_periods(tenant, store):
    ids = build_catalog(tenant)
    tenant.product_id = ids["product"]
    # Signals sent before the order exists: the product's own line rates none of them.
    with frozen(NOW):
        send_signals_at(tenant, [START + timedelta(days=1, minutes=i) for i in range(100)], "feb")
        send_signals_at(tenant, [START + timedelta(days=29, minutes=i) for i in range(600)], "mar")
        send_signals_at(tenant, [START + timedelta(days=60, minutes=i) for i in range(50)], "apr")
        send_signals_at(tenant, [NOW - timedelta(hours=2, minutes=i) for i in range(20)], "may")
        assert available(tenant, "acme") == Decimal(0)

        order = tenant.paid().orders.create_order(
            customer_id=ids["customer"], start_date=START, lines=sold_lines(ids), creation_state="active"
        )
        # Feb 10: 100 used, 400 expire. Mar 10: 600 used, 100 of them pending. Apr 10: the
        # pending 100 settle, 50 used, 350 expire. May 10: 20 used.
        assert available(tenant, "acme") == Decimal(480)

    periods = order_periods(store, order.id)
    assert [(period.number, period.start_date) for period in periods] == [
        (1, START),
        (2, datetime(2026, 3, 10, tzinfo=UTC)),
        (3, datetime(2026, 4, 10, tzinfo=UTC)),
        (4, datetime(2026, 5, 10, tzinfo=UTC)),
    ]
    grants = order_grants(store, order.id)
    assert [(grant.starts_at, grant.amount) for grant in grants] == [(period.start_date, Decimal(500)) for period in periods]
    invoices = order_invoices(store, order.id)
    assert [invoice.status for invoice in invoices] == ["draft", "draft", "draft", "posted"]

    with store.read_sessions() as session:
        signals = session.scalars(
            select(Signal).where(Signal.organization_id == tenant.organization_id).order_by(Signal.occurred_at)
        ).all()
    assert all(signal.product_attribute_id is not None for signal in signals)
    assert sum(signal.credits_consumed for signal in signals) == Decimal(670)
    assert sum(signal.credits_pending for signal in signals) == Decimal(100)

    # Reading again, or activating again, grants nothing more.
    with frozen(NOW + timedelta(hours=1)):
        assert available(tenant, "acme") == Decimal(480)
        assert tenant.http.post(f"/orders/{order.id}/activate").status_code == 400
    assert len(order_grants(store, order.id)) == 4


def test_invoices_through_paid_python(tenant, store):
    ids = build_catalog(tenant)
    client = tenant.paid()
    with frozen(NOW):
        order = client.orders.create_order(
            customer_id=ids["customer"], start_date=START, lines=sold_lines(ids), creation_state="active"
        )

        listed = client.invoices.list_invoices(order_id=order.id)
        assert [invoice.status for invoice in listed.data] == ["posted", "draft", "draft", "draft"]
        current = listed.data[0]
        assert (current.invoice_total, current.amount_due, current.payment_status) == (40000, 40000, "pending")
        lines = client.invoices.get_invoice_lines(current.id)
        assert [(line.description, line.total_price_after_tax) for line in lines.data] == [("Assistant: Platform fee", 40000)]
        updated = client.invoices.update_invoice_by_id(current.id, metadata={"po": "A-17"})
        assert updated.metadata == {"po": "A-17"}
        assert client.invoices.get_invoice_by_id(current.id).metadata == {"po": "A-17"}

        oldest = listed.data[-1]
        posted = tenant.http.post(f"/invoices/{oldest.id}/post")
        assert posted.status_code == 200, posted.text
        assert posted.json()["status"] == "posted"
        paid = tenant.http.post(f"/invoices/{current.id}/mark-paid")
        assert (paid.json()["paymentStatus"], paid.json()["amountRemaining"]) == ("paid", 0)
        assert tenant.http.post(f"/invoices/{listed.data[1].id}/mark-paid").status_code == 400
    assert [invoice.payment_status for invoice in order_invoices(store, order.id)] == ["pending", "pending", "pending", "paid"]
