"""Reading orders, order lines, invoices and invoice lines created by checkouts."""

from __future__ import annotations

from tests.checkout_helpers import create_checkout, hosted_page
from tests.guide import create_guide_catalog


def buy(tenant, catalog, external_id: str, plan: str) -> str:  # type: ignore[no-untyped-def]
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId=external_id)
    assert hosted_page(checkout).pay(catalog.plan_ids[plan]).status_code == 303
    return tenant.paid().checkouts.get_checkout(checkout["id"]).order_id


def test_orders_and_invoices_filter_by_customer(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    first = buy(tenant, catalog, "user-a", "starter")
    second = buy(tenant, catalog, "user-b", "business")

    all_orders = client.orders.list_orders()
    by_external = client.orders.list_orders(external_customer_id="user-b")
    active = client.orders.list_orders(status="active", creation_state="active")
    unknown = client.orders.list_orders(external_customer_id="nobody")

    assert [order.id for order in all_orders.data] == [second, first]
    assert all_orders.data[1].number == 1
    assert all_orders.data[0].number == 2
    assert [order.id for order in by_external.data] == [second]
    assert active.pagination.total == 2
    assert unknown.pagination.total == 0

    invoices = client.invoices.list_invoices(external_customer_id="user-a")
    [invoice] = invoices.data
    assert invoice.order_id == first
    assert invoice.invoice_total == 2900
    assert invoice.display_number == "INV-000001"
    assert client.invoices.list_invoices(payment_status="paid").pagination.total == 2
    assert client.invoices.list_invoices(status="draft").pagination.total == 0
    assert client.invoices.list_invoices(currency="usd").pagination.total == 2
    assert client.invoices.get_invoice_by_id(invoice.id) == invoice
    [line] = client.invoices.get_invoice_lines(invoice.id).data
    assert line.order_id == first
    assert line.payment_status == "paid"
    assert line.balance_amount == 0


def test_order_lines_carry_pricing_as_sold(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    order_id = buy(tenant, catalog, "user-c", "pro")

    lines = tenant.http.get(f"/orders/{order_id}/lines").json()

    assert lines["pagination"]["total"] == 1
    [line] = lines["data"]
    fee, usage = line["attributes"]
    assert fee["productAttributeId"] == catalog.fee_line_id
    assert fee["unitPrice"] == 7900
    assert fee["creditBenefits"][0]["amount"] == "2000.000000000"
    assert usage["productAttributeId"] == catalog.usage_line_id
    assert usage["unitPrice"] is None


def test_bad_filters_are_rejected(tenant):
    for path, params in [
        ("/orders/", {"status": "finished"}),
        ("/orders/", {"startDateFrom": "yesterday"}),
        ("/invoices/", {"paymentStatus": "unpaid"}),
        ("/invoices/", {"issueDateTo": "2026-13-01"}),
        ("/invoices/", {"limit": "0"}),
    ]:
        response = tenant.http.get(path, params=params)
        assert response.status_code == 400, (path, params)
        assert list(params)[0] in response.json()["error"]


def test_other_organization_cannot_read_orders_or_invoices(tenant, other_tenant):
    catalog = create_guide_catalog(tenant.paid())
    order_id = buy(tenant, catalog, "user-d", "pro")
    invoice_id = tenant.http.get("/invoices/").json()["data"][0]["id"]

    for path in (f"/orders/{order_id}", f"/orders/{order_id}/lines", f"/invoices/{invoice_id}", f"/invoices/{invoice_id}/lines"):
        response = other_tenant.http.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    assert other_tenant.http.get("/orders/").json()["pagination"]["total"] == 0
    assert other_tenant.http.get("/invoices/", params={"orderId": order_id}).json()["pagination"]["total"] == 0
