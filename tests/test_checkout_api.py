"""The checkouts API: create, list, get and archive, its validation, and tenant isolation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from paid.types import CheckoutPlanInput, CheckoutProductInput

from tests.checkout_helpers import SUCCESS_URL, create_checkout, hosted_page, page_text
from tests.guide import create_guide_catalog


def test_create_checkout_with_paid_sdk(tenant, server):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    before = datetime.now(UTC)

    checkout = client.checkouts.create_checkout(
        products=[
            CheckoutProductInput(
                id=catalog.product_id,
                plans=[
                    CheckoutPlanInput(id=catalog.plan_ids["starter"]),
                    CheckoutPlanInput(id=catalog.plan_ids["pro"], features=["Priority support"]),
                ],
            )
        ],
        external_customer_id="user-1",
        success_url=SUCCESS_URL,
        cancel_url="https://app.example.com/pricing",
        metadata={"campaign": "spring"},
    )

    assert checkout.id.startswith("chk_")
    assert checkout.url == f"{server.root}/checkout/{checkout.id}"
    assert checkout.status == "active"
    assert checkout.external_customer_id == "user-1"
    assert checkout.customer_id is None
    assert checkout.success_url == SUCCESS_URL
    assert checkout.cancel_url == "https://app.example.com/pricing"
    assert checkout.metadata == {"campaign": "spring"}
    assert checkout.single_use is True
    assert checkout.collect_address is True
    assert checkout.collect_phone is False
    assert checkout.allowed_currencies == ["USD"]
    assert before + timedelta(hours=23, minutes=59) < checkout.expires_at <= before + timedelta(hours=24, minutes=1)
    [product] = checkout.products
    assert [plan.id for plan in product.plans] == [catalog.plan_ids["starter"], catalog.plan_ids["pro"]]
    assert product.plans[1].features == ["Priority support"]

    fetched = client.checkouts.get_checkout(checkout.id)
    assert fetched.status == "active"
    assert fetched.order_id is None
    assert fetched.selected_product is None


def test_page_shows_plans_prices_credits_and_features(tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(
        tenant,
        products=[
            {
                "id": catalog.product_id,
                "plans": [
                    {"id": catalog.plan_ids["pro"], "features": ["Priority support"]},
                    {"id": catalog.plan_ids["business"]},
                ],
            }
        ],
        customCards=[{"label": "Enterprise", "priceText": "Let's talk", "buttonUrl": "https://example.com/sales"}],
    )

    response, token = hosted_page(checkout).open()

    assert response.status_code == 200
    assert token
    text = page_text(response.text)
    assert "Pro $79.00 per month 2,000 Chat Credits every month Priority support" in text
    assert "Business $199.00 per month 10,000 Chat Credits every month" in text
    assert "Starter" not in text
    assert "Enterprise Let's talk" in text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    # Every script, stylesheet and image comes from this server. A substring check for "cdn"
    # failed on random signed tokens that happened to contain it.
    external_resources = r'<(?:script|img|iframe)\b[^>]*\ssrc="(?:https?:)?//|<link\b[^>]*\shref="(?:https?:)?//'
    assert re.findall(external_resources, response.text) == []
    assert '<link rel="stylesheet" href="/static/' in response.text
    stylesheet = hosted_page(checkout).client.get(checkout["url"].split("/checkout/")[0] + "/static/tallystick.css")
    assert stylesheet.status_code == 200


def test_omitted_plans_offer_every_active_plan(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    client.plans.update_plan_by_external_id("business", status="archived")

    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}])
    text = page_text(hosted_page(checkout).open()[0].text)

    assert "Starter" in text
    assert "Pro" in text
    assert "Business" not in text


def test_list_filters_by_status(tenant):
    catalog = create_guide_catalog(tenant.paid())
    kept = create_checkout(tenant, products=[{"id": catalog.product_id}])
    archived = create_checkout(tenant, products=[{"id": catalog.product_id}])
    assert tenant.http.delete(f"/checkouts/{archived['id']}").json() == {}

    client = tenant.paid()
    active = client.checkouts.list_checkouts(status="active")
    everything = client.checkouts.list_checkouts()
    archived_list = client.checkouts.list_checkouts(status="archived")

    assert [item.id for item in active.data] == [kept["id"]]
    assert [item.id for item in archived_list.data] == [archived["id"]]
    assert everything.pagination.total == 2
    assert client.checkouts.get_checkout(archived["id"]).status == "archived"


def test_list_rejects_unknown_status(tenant):
    response = tenant.http.get("/checkouts/", params={"status": "paid"})

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "status" in response.json()["error"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"products": []}, "products"),
        ({"products": [{"id": "prod_missing"}]}, "products[0].id"),
        ({"successUrl": "/welcome"}, "successUrl"),
        ({"successUrl": "javascript:alert(1)"}, "successUrl"),
        ({"cancelUrl": "ftp://example.com"}, "cancelUrl"),
        ({"expiresAt": "2000-01-01T00:00:00Z"}, "expiresAt"),
        ({"currency": "EUR"}, "products[0].id"),
        ({"currency": "US"}, "currency"),
        ({"customerId": "cus_missing"}, "customerId"),
        ({"customerId": "cus_x", "externalCustomerId": "user-1"}, "customerId"),
        ({"externalCustomerId": "a/b"}, "externalCustomerId"),
        ({"customCards": [{"label": "x", "buttonUrl": "not a url"}]}, "customCards[0].buttonUrl"),
    ],
)
def test_create_rejects_bad_input(tenant, store, change, field):
    catalog = create_guide_catalog(tenant.paid())
    body = {"products": [{"id": catalog.product_id}], "successUrl": SUCCESS_URL, **change}

    response = tenant.http.post("/checkouts/", json=body)

    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    assert tenant.http.get("/checkouts/").json()["pagination"]["total"] == 0


def test_create_unknown_product_code(tenant):
    response = tenant.http.post("/checkouts/", json={"products": [{"id": "prod_missing"}], "successUrl": SUCCESS_URL})

    assert response.status_code == 400
    assert response.json()["code"] == "unknown_product"
    assert response.json()["fields"][0]["field"] == "products[0].id"


def test_create_rejects_plan_of_another_product(tenant):
    client = tenant.paid()
    catalog = create_guide_catalog(client)
    other = client.products.create_product(name="Other", active=True)

    response = tenant.http.post(
        "/checkouts/",
        json={"products": [{"id": other.id, "plans": [{"id": catalog.plan_ids["pro"]}]}], "successUrl": SUCCESS_URL},
    )

    assert response.status_code == 400
    assert "products[0].plans[0].id" in response.json()["error"]


def test_other_organization_cannot_see_or_use_checkout(tenant, other_tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}])

    assert other_tenant.http.get(f"/checkouts/{checkout['id']}").status_code == 404
    assert other_tenant.http.delete(f"/checkouts/{checkout['id']}").status_code == 404
    assert other_tenant.http.get("/checkouts/").json()["pagination"]["total"] == 0
    response = other_tenant.http.post(
        "/checkouts/", json={"products": [{"id": catalog.product_id}], "successUrl": SUCCESS_URL}
    )
    assert response.status_code == 400
    assert tenant.paid().checkouts.get_checkout(checkout["id"]).status == "active"


def test_archive_keeps_completed_checkout_completed(tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-6")
    hosted_page(checkout).pay(catalog.plan_ids["pro"])

    tenant.paid().checkouts.archive_checkout(checkout["id"])

    fetched = tenant.paid().checkouts.get_checkout(checkout["id"])
    assert fetched.status == "completed"
    assert fetched.order_id is not None


def test_public_url_setting_sets_page_address(store, tenant):
    import threading
    import time

    import httpx
    import uvicorn

    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings
    from tests.conftest import free_port

    catalog = create_guide_catalog(tenant.paid())
    app = create_app(
        Settings(database_url=store.url, public_url="https://billing.example.com"),
        store=store,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v2/checkouts/",
            headers={"Authorization": f"Bearer {tenant.api_key}"},
            json={"products": [{"id": catalog.product_id}], "successUrl": SUCCESS_URL},
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    assert response.status_code == 201, response.text
    assert response.json()["url"] == f"https://billing.example.com/checkout/{response.json()['id']}"
