"""Customer portal links: POST /customer-portals/, the portal page, expiry and the upgrade form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.dashboard_helpers import hidden_value
from tests.guide import create_guide_catalog


@pytest.fixture
def customer(tenant) -> dict:  # type: ignore[no-untyped-def]
    create_guide_catalog(tenant.paid())
    response = tenant.http.post("/customers/", json={"name": "Ada Lovelace", "externalId": "user-42"})
    assert response.status_code == 201, response.text
    tenant.http.post("/customers/external/user-42/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 100})
    return response.json()


@pytest.fixture
def frozen_clock():  # type: ignore[no-untyped-def]
    from tallystick.server import clock

    yield clock
    clock.freeze(None)


def create_portal(tenant, **body) -> httpx.Response:  # type: ignore[no-untyped-def]
    return tenant.http.post("/customer-portals/", json=body)


def shown_balance(page_html: str) -> str:
    match = re.search(r'data-balance="chat_credits">([^<]+)<', page_html)
    assert match is not None
    return match.group(1)


def test_portal_created_by_external_id(tenant, customer, server):
    response = create_portal(tenant, externalCustomerId="user-42", returnUrl="https://app.example.com/account")

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("cpor_")
    assert body["customerId"] == customer["id"]
    assert body["status"] == "active"
    assert body["returnUrl"] == "https://app.example.com/account"
    assert body["url"].startswith(f"{server.root}/portal/")
    expires = datetime.fromisoformat(body["expiresAt"])
    created = datetime.fromisoformat(body["createdAt"])
    assert timedelta(minutes=59) < expires - created <= timedelta(hours=1)


def test_portal_page_shows_balance_and_usage(tenant, customer):
    tenant.http.post(
        "/signals/bulk",
        json={"signals": [{"eventName": "chat_message", "customer": {"externalCustomerId": "user-42"}, "attribution": {"externalProductId": "chatbot"}}] * 2},
    )
    url = create_portal(tenant, customerId=customer["id"]).json()["url"]

    page = httpx.get(url)

    assert page.status_code == 200
    assert shown_balance(page.text) == "98"
    assert "Ada Lovelace" in page.text
    assert 'data-value="2"' in page.text
    assert "You have no subscription." in page.text
    assert "Margin" not in page.text
    assert "AI cost" not in page.text
    assert page.headers["cache-control"] == "no-store"


def test_paid_sdk_creates_portal(tenant, customer):
    portal = tenant.paid().customer_portals.create_customer_portal(external_customer_id="user-42")

    assert portal.customer_id == customer["id"]
    assert portal.status == "active"
    assert httpx.get(portal.url).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "customerId"),
        ({"customerId": "cus_x", "externalCustomerId": "user-42"}, 400, "customerId"),
        ({"externalCustomerId": "nobody"}, 404, None),
        ({"customerId": "cus_unknown"}, 404, None),
        ({"externalCustomerId": "user-42", "expiresAt": "2000-01-01T00:00:00Z"}, 400, "expiresAt"),
        ({"externalCustomerId": "user-42", "expiresAt": "2999-01-01T00:00:00Z"}, 400, "expiresAt"),
        ({"externalCustomerId": "user-42", "returnUrl": "javascript:alert(1)"}, 400, "returnUrl"),
    ],
)
def test_invalid_portal_request_is_rejected(tenant, customer, body, status, field):
    response = create_portal(tenant, **body)

    assert response.status_code == status
    if field is not None:
        assert response.json()["fields"][0]["field"] == field


def test_other_organizations_customer_gets_404(other_tenant, customer):
    response = create_portal(other_tenant, customerId=customer["id"])

    assert response.status_code == 404


def test_expired_link_is_rejected(tenant, customer, frozen_clock):
    expires = datetime.now(UTC) + timedelta(minutes=5)
    url = create_portal(tenant, externalCustomerId="user-42", expiresAt=expires.isoformat()).json()["url"]
    assert httpx.get(url).status_code == 200

    frozen_clock.freeze(expires + timedelta(seconds=1))
    page = httpx.get(url)

    assert page.status_code == 410
    assert "This portal link has expired" in page.text
    assert "data-balance" not in page.text


def test_tampered_link_is_rejected(tenant, customer):
    url = create_portal(tenant, externalCustomerId="user-42").json()["url"]
    token = url.rsplit("/", 1)[1]
    payload, signature = token.split(".")

    response = httpx.get(url.replace(token, payload + "." + signature[::-1]))

    assert response.status_code == 404
    assert "data-balance" not in response.text


def test_upgrade_opens_checkout_for_customer(tenant, customer):
    url = create_portal(tenant, externalCustomerId="user-42", returnUrl="https://app.example.com/account").json()["url"]
    with httpx.Client(follow_redirects=False) as browser:
        page = browser.get(url)

        response = browser.post(f"{url}/upgrade", data={"form_token": hidden_value(page.text, "form_token")})

    assert response.status_code == 303
    checkout_id = response.headers["location"].rsplit("/", 1)[1]
    checkout = tenant.http.get(f"/checkouts/{checkout_id}").json()
    assert checkout["customerId"] == customer["id"]
    assert checkout["successUrl"] == "https://app.example.com/account"
    assert checkout["status"] == "active"


def test_upgrade_without_form_token_creates_nothing(tenant, customer):
    url = create_portal(tenant, externalCustomerId="user-42").json()["url"]
    with httpx.Client(follow_redirects=False) as browser:
        browser.get(url)

        response = browser.post(f"{url}/upgrade", data={"form_token": "forged"})

    assert response.status_code == 403
    assert tenant.http.get("/checkouts/").json()["data"] == []


def test_portal_of_subscriber_offers_other_plans(tenant):
    from tests.checkout_helpers import create_checkout, hosted_page

    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-42")
    assert hosted_page(checkout).pay(catalog.plan_ids["starter"]).status_code == 303
    url = create_portal(tenant, externalCustomerId="user-42").json()["url"]

    with httpx.Client(follow_redirects=False) as browser:
        page = browser.get(url)
        response = browser.post(f"{url}/upgrade", data={"form_token": hidden_value(page.text, "form_token")})

    assert "ChatBot · Starter" in page.text
    assert "Next renewal" in page.text
    assert shown_balance(page.text) == "500"
    assert response.status_code == 303
    upgrade = tenant.http.get(f"/checkouts/{response.headers['location'].rsplit('/', 1)[1]}").json()
    offered = {plan["id"] for plan in upgrade["products"][0]["plans"]}
    assert offered == {catalog.plan_ids["pro"], catalog.plan_ids["business"]}


def test_portal_opens_private_value_receipt(tenant, customer):
    from tests.test_value_api import create_minutes_metric

    create_minutes_metric(tenant.paid())
    tenant.http.post(
        "/signals/bulk",
        json={"signals": [{"eventName": "chat_message", "customer": {"externalCustomerId": "user-42"}, "attribution": {"externalProductId": "chatbot"}}]},
    )
    now = datetime.now(UTC)
    receipt = tenant.http.post(
        "/value-receipts/sync",
        json={"externalCustomerId": "user-42", "startDate": (now - timedelta(days=1)).isoformat(), "endDate": (now + timedelta(days=1)).isoformat()},
    ).json()
    page = httpx.get(create_portal(tenant, externalCustomerId="user-42").json()["url"])
    link = re.search(r'href="(/receipts/[^"]+\?access=[^"]+)"', page.text).group(1)
    server_root = page.url.scheme + "://" + page.url.netloc.decode()

    private = httpx.get(f"{server_root}/receipts/{receipt['publicUrlToken']}")
    opened = httpx.get(server_root + link.replace("&amp;", "&"))

    assert "Minutes saved" in page.text
    assert private.status_code == 403
    assert opened.status_code == 200
    assert "Minutes saved" in opened.text


def test_portal_shows_money_saved_as_money(tenant):
    from tests.test_value_receipts import MARCH_CENTS, guide_setup, guide_value_model, send_march_signals

    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)

    page = httpx.get(create_portal(tenant, externalCustomerId="ada").json()["url"])

    row = re.search(r"<td>Money saved</td>\s*(.*?)</tr>", page.text, re.S)
    assert row is not None
    cells = re.findall(r'<td class="number">([^<]*)</td>', row.group(1))
    assert cells[:2] == [f"${MARCH_CENTS / 100:.2f}"] * 2
