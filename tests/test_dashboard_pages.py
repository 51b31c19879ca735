"""Dashboard pages and forms over HTTP: figures on the overview, the customer page, manual
grants, the guide's catalog built through the forms, API keys and webhooks."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tallystick.server.web import format_usd_cost
from tests.checkout_helpers import create_checkout, hosted_page
from tests.dashboard_helpers import DashboardClient, field_errors, make_operator
from tests.guide import create_guide_catalog
from tests.test_value_receipts import guide_setup

CHAT_SIGNAL = {
    "eventName": "chat_message",
    "customer": {"externalCustomerId": "user-42"},
    "attribution": {"externalProductId": "chatbot"},
}


@pytest.fixture
def dashboard(server, tenant, store) -> Iterator[DashboardClient]:  # type: ignore[no-untyped-def]
    client = DashboardClient(server.root)
    response = client.sign_in(make_operator(store, tenant.organization_id))
    assert response.status_code == 303
    yield client
    client.close()


def send_signals(tenant, count: int) -> None:  # type: ignore[no-untyped-def]
    response = tenant.http.post("/signals/bulk", json={"signals": [CHAT_SIGNAL] * count})
    assert response.status_code == 200, response.text


def stat(page_html: str, name: str) -> str:
    match = re.search(rf'data-stat="{name}">([^<]+)<', page_html)
    assert match is not None, name
    return match.group(1)


def shown_balance(page_html: str, key: str = "chat_credits") -> str:
    match = re.search(rf'data-balance="{key}">([^<]+)<', page_html)
    assert match is not None
    return match.group(1)


def available(tenant, external_id: str = "user-42") -> Decimal:  # type: ignore[no-untyped-def]
    [balance] = tenant.http.get(f"/customers/external/{external_id}/credits/balances").json()["data"]
    return Decimal(str(balance["available"]))


def test_overview_shows_revenue_credits_and_signals(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-42")
    assert hosted_page(checkout).pay(catalog.plan_ids["pro"]).status_code == 303
    send_signals(tenant, 3)

    page = dashboard.get("/dashboard").text

    assert stat(page, "revenue") == "$79.00"
    assert stat(page, "signals") == "3"
    assert stat(page, "ai-cost") == "$0.0000"
    assert re.search(r"<td>Chat Credits</td><td class=\"number\">2,000</td><td class=\"number\">3</td>", page)
    assert "In about 4659 days" in page  # 1,997 credits at 3 per week
    assert "<svg class=\"chart chart-wide\"" in page


def test_overview_empty_state_explains_first_signal(dashboard):
    page = dashboard.get("/dashboard").text

    assert "No signals in the last 30 days" in page
    assert "/api/v2/signals/bulk" in page
    assert stat(page, "revenue") == "$0.00"


def test_manual_grant_adds_credits(dashboard, tenant):
    create_guide_catalog(tenant.paid())
    customer = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "user-42"}).json()
    currency_id = tenant.http.get("/credits/currencies").json()["data"][0]["id"]
    page = f"/dashboard/customers/{customer['id']}"

    response = dashboard.submit(page, f"{page}/grants", {"currency_id": currency_id, "amount": "250", "description": "Goodwill"})

    assert response.status_code == 303
    assert response.headers["location"] == f"{page}?notice=grant_created"
    assert available(tenant) == 250
    [entry] = tenant.http.get("/credits/transactions", params={"externalCustomerId": "user-42"}).json()["data"]
    assert entry["originCode"] == "manual"
    assert shown_balance(dashboard.get(page).text) == "250"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-5", "Must be greater than 0."),
        ("1.1234567", "Must have at most 6 decimal places."),
        ("many", "Enter the amount as a number, such as 1000 or 0.5."),
    ],
)
def test_invalid_grant_changes_nothing(dashboard, tenant, amount, message):
    create_guide_catalog(tenant.paid())
    customer = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "user-42"}).json()
    currency_id = tenant.http.get("/credits/currencies").json()["data"][0]["id"]
    page = f"/dashboard/customers/{customer['id']}"

    response = dashboard.submit(page, f"{page}/grants", {"currency_id": currency_id, "amount": amount})

    assert response.status_code == 400
    assert field_errors(response.text) == [message]
    assert tenant.http.get("/customers/external/user-42/credits/balances").json()["data"] == []


def test_customer_page_shows_usage_and_pending(dashboard, tenant):
    create_guide_catalog(tenant.paid())
    customer = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "user-42"}).json()
    tenant.http.post("/customers/external/user-42/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 2})
    send_signals(tenant, 3)

    page = dashboard.get(f"/dashboard/customers/{customer['id']}").text

    assert shown_balance(page) == "0"
    assert "1 pending" in page
    assert page.count("<td>chat_message</td>") == 4  # three signals and one pending consumption row
    assert 'data-value="3"' in page  # today's bar of the usage chart
    assert "No orders." in page


def test_customer_form_creates_customer(dashboard, tenant):
    response = dashboard.submit(
        "/dashboard/customers", "/dashboard/customers", {"name": "Grace", "external_id": "user-7", "email": "g@example.com"}
    )

    assert response.status_code == 303
    created = tenant.http.get("/customers/external/user-7").json()
    assert created["name"] == "Grace"
    assert response.headers["location"] == f"/dashboard/customers/{created['id']}?notice=customer_created"

    duplicate = dashboard.submit("/dashboard/customers", "/dashboard/customers", {"name": "Twin", "external_id": "user-7"})
    assert duplicate.status_code == 400
    assert "already exists" in field_errors(duplicate.text)[0]


def test_customer_form_rejects_invalid_email(dashboard, tenant):
    response = dashboard.submit(
        "/dashboard/customers", "/dashboard/customers", {"name": "Grace", "external_id": "user-8", "email": "grace@"}
    )

    assert response.status_code == 400
    assert "not a valid email address" in field_errors(response.text)[0]
    assert tenant.http.get("/customers/external/user-8").status_code == 404


def test_customer_search_finds_by_external_id(dashboard, tenant):
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "user-42"})
    tenant.http.post("/customers/", json={"name": "Grace", "externalId": "user-7"})

    page = dashboard.get("/dashboard/customers", params={"q": "user-4"}).text

    assert ">Ada</a>" in page
    assert ">Grace</a>" not in page


def test_catalog_forms_build_guide_setup(dashboard, tenant):
    response = dashboard.submit(
        "/dashboard/catalog", "/dashboard/catalog/currencies", {"currency_name": "Chat Credits", "currency_key": "chat_credits"}
    )
    assert response.status_code == 303
    response = dashboard.submit(
        "/dashboard/catalog",
        "/dashboard/catalog/products",
        {"product_name": "ChatBot", "product_external_id": "chatbot", "active": "on"},
    )
    assert response.status_code == 303
    product_page = response.headers["location"].split("?")[0]
    currency_id = tenant.http.get("/credits/currencies").json()["data"][0]["id"]
    fee = {"line_name": "Monthly fee", "pricing_type": "RecurringPerUnit", "currency": "USD", "price": "29", "billing_frequency": "Monthly"}
    usage = {
        "line_name": "Chat message",
        "pricing_type": "UsagePrepaidCredits",
        "event_name": "chat_message",
        "credits_currency_id": currency_id,
        "credit_cost": "1",
    }
    assert dashboard.submit(product_page, f"{product_page}/lines", fee).status_code == 303
    assert dashboard.submit(product_page, f"{product_page}/lines", usage).status_code == 303
    product_id = product_page.rsplit("/", 1)[1]
    fee_line = tenant.http.get(f"/products/{product_id}").json()["productAttributes"][0]["productAttributeId"]
    for name, external_id, price, credits in (("Starter", "starter", "29", "500"), ("Pro", "pro", "79.00", "2000"), ("Business", "business", "199", "10000")):
        response = dashboard.submit(
            f"{product_page}/plans/new",
            f"{product_page}/plans",
            {
                "name": name,
                "external_id": external_id,
                "currency": "USD",
                f"price_{fee_line}": price,
                f"credits_amount_{fee_line}": credits,
                f"credits_currency_{fee_line}": currency_id,
                f"credits_cadence_{fee_line}": "monthly",
            },
        )
        assert response.status_code == 303, field_errors(response.text)

    product = tenant.http.get("/products/external/chatbot").json()
    assert [line["name"] for line in product["productAttributes"]] == ["Monthly fee", "Chat message"]
    assert product["productAttributes"][1]["pricing"]["creditCost"] == 1
    plans = {plan["externalId"]: plan for plan in tenant.http.get("/plans/").json()["data"]}
    assert plans["pro"]["attributes"][0]["pricing"]["pricePoints"] == [{"currency": "USD", "unitPrice": 7900}]
    assert plans["business"]["attributes"][0]["creditBenefits"][0]["amount"] == 10000
    assert plans["starter"]["attributes"][0]["creditBenefits"][0]["allocationCadence"] == "monthly"
    tenant.http.post("/customers/", json={"name": "Ada", "externalId": "user-42"})
    tenant.http.post("/customers/external/user-42/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 10})
    send_signals(tenant, 1)
    assert available(tenant) == 9


def test_plan_price_with_too_many_places_is_rejected(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    new_plan = f"/dashboard/catalog/products/{catalog.product_id}/plans/new"

    response = dashboard.submit(
        new_plan,
        f"/dashboard/catalog/products/{catalog.product_id}/plans",
        {"name": "Odd", "currency": "USD", f"price_{catalog.fee_line_id}": "29.999"},
    )

    assert response.status_code == 400
    assert field_errors(response.text) == ["Enter a price of at least 0 with at most 2 decimal places, such as 79.00."]
    assert len(tenant.http.get("/plans/").json()["data"]) == 3


def test_plan_form_edits_price(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    plan_page = f"/dashboard/catalog/plans/{catalog.plan_ids['pro']}"
    fields = {
        "name": "Pro",
        "external_id": "pro",
        "currency": "USD",
        "status": "active",
        f"price_{catalog.fee_line_id}": "89",
        f"credits_amount_{catalog.fee_line_id}": "2500",
        f"credits_currency_{catalog.fee_line_id}": catalog.currency_id,
        f"credits_cadence_{catalog.fee_line_id}": "monthly",
    }

    response = dashboard.submit(plan_page, plan_page, fields)

    assert response.status_code == 303
    plan = tenant.http.get(f"/plans/{catalog.plan_ids['pro']}").json()
    assert plan["attributes"][0]["pricing"]["pricePoints"][0]["unitPrice"] == 8900
    assert plan["attributes"][0]["creditBenefits"][0]["amount"] == 2500


def test_api_key_is_shown_once_and_works(dashboard, tenant, server):
    import httpx

    response = dashboard.submit("/dashboard/api-keys", "/dashboard/api-keys", {"name": "Production app"})

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/api-keys"
    assert "tsk_" not in response.text
    key = re.search(r'id="new-api-key">([^<]+)<', dashboard.get("/dashboard/api-keys").text).group(1)
    reply = httpx.get(f"{server.api_url}/customers/", headers={"Authorization": f"Bearer {key}"})
    assert reply.status_code == 200
    listing = dashboard.get("/dashboard/api-keys").text
    assert key not in listing
    assert "Production app" in listing
    key_id = re.search(r'<tr data-key="(key_[a-z0-9]+)">\s*<td>Production app', listing).group(1)

    revoked = dashboard.submit("/dashboard/api-keys", f"/dashboard/api-keys/{key_id}/revoke", {})

    assert revoked.status_code == 303
    assert httpx.get(f"{server.api_url}/customers/", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_other_organizations_key_cannot_be_revoked(dashboard, other_tenant, store):
    from tallystick.server.dashboard.queries import organization_api_keys

    with store.read_sessions() as session:
        [foreign] = organization_api_keys(session, other_tenant.organization_id)

    response = dashboard.submit("/dashboard/api-keys", f"/dashboard/api-keys/{foreign.id}/revoke", {})

    assert response.status_code == 404
    assert other_tenant.http.get("/customers/").status_code == 200


def test_webhook_form_sets_url_and_shows_secret_once(dashboard, tenant):
    fields = {"url": "http://127.0.0.1:9/hooks", "enabled": "on"}

    response = dashboard.submit("/dashboard/webhooks", "/dashboard/webhooks/billing-invoice-paid", fields)

    assert response.status_code == 200
    assert re.search(r'id="signing-secret">whsec_', response.text)
    listed = {item["name"]: item for item in tenant.http.get("/webhooks/").json()["data"]}
    assert listed["billing-invoice-paid"]["url"] == "http://127.0.0.1:9/hooks"
    assert listed["billing-invoice-paid"]["enabled"] is True
    again = dashboard.submit("/dashboard/webhooks", "/dashboard/webhooks/billing-invoice-paid", fields)
    assert again.status_code == 303


def test_webhook_form_rejects_bad_url(dashboard, tenant):
    response = dashboard.submit("/dashboard/webhooks", "/dashboard/webhooks/billing-invoice-paid", {"url": "ftp://example.com"})

    assert response.status_code == 400
    assert field_errors(response.text)
    listed = {item["name"]: item for item in tenant.http.get("/webhooks/").json()["data"]}
    assert listed["billing-invoice-paid"]["url"] is None


def test_signal_explorer_filters_by_event(dashboard, tenant):
    create_guide_catalog(tenant.paid())
    send_signals(tenant, 2)

    matching = dashboard.get("/dashboard/signals", params={"event": "chat_message"}).text
    other = dashboard.get("/dashboard/signals", params={"event": "image_generated"}).text

    assert matching.count("<td>chat_message</td>") == 2
    assert "No signals match these filters." in other


def test_explorer_rejects_bad_date_without_error_page(dashboard):
    response = dashboard.get("/dashboard/traces", params={"from": "yesterday", "status": "odd"})

    assert response.status_code == 200
    assert "Enter a date such as 2030-01-31." in field_errors(response.text)


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/checkouts",
        "/dashboard/checkouts?status=completed",
        "/dashboard/orders",
        "/dashboard/invoices?payment=paid",
        "/dashboard/traces",
        "/dashboard/value-types",
        "/dashboard/settings/payments",
        "/dashboard/catalog",
    ],
)
def test_list_pages_render(dashboard, tenant, path):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-42")
    hosted_page(checkout).pay(catalog.plan_ids["starter"])

    response = dashboard.get(path)

    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_billing_pages_list_the_purchase(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-42")
    hosted_page(checkout).pay(catalog.plan_ids["starter"])

    orders = dashboard.get("/dashboard/orders").text
    invoices = dashboard.get("/dashboard/invoices?payment=paid").text
    checkouts = dashboard.get("/dashboard/checkouts?status=completed").text

    assert "ChatBot · Starter" in orders
    assert "$29.00" in orders
    assert "$29.00" in invoices
    assert checkout["id"] not in checkouts or "completed" in checkouts
    assert ">completed<" in checkouts


def test_payment_form_switches_to_stripe(dashboard, tenant):
    missing = dashboard.submit("/dashboard/settings/payments", "/dashboard/settings/payments", {"provider": "stripe"})
    saved = dashboard.submit(
        "/dashboard/settings/payments",
        "/dashboard/settings/payments",
        {"provider": "stripe", "stripe_secret_key": "sk_test_abcd1234", "stripe_webhook_secret": "whsec_test"},
    )

    assert missing.status_code == 400
    assert field_errors(missing.text) == ["Is required to take payments with Stripe."]
    assert saved.status_code == 303
    settings = tenant.http.get("/payment-settings").json()
    assert settings["provider"] == "stripe"
    assert settings["stripeSecretKeyLast4"] == "1234"
    page = dashboard.get("/dashboard/settings/payments").text
    assert "sk_test_abcd1234" not in page
    assert "ending in" in page


def test_customer_page_shows_plan_and_renewal(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-42")
    hosted_page(checkout).pay(catalog.plan_ids["pro"])
    [order] = tenant.http.get("/orders/").json()["data"]

    page = dashboard.get(f"/dashboard/customers/{order['customerId']}").text

    assert "<td>Pro</td>" in page
    assert "$79.00" in page
    renewal = re.search(r"<td>(\d{4}-\d\d-\d\d \d\d:\d\d UTC)</td>\s*</tr>", page)
    assert renewal is not None
    assert shown_balance(page) == "2,000"


def test_currency_form_archives_currency(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    page = f"/dashboard/catalog/currencies/{catalog.currency_id}"

    response = dashboard.submit(page, page, {"currency_description": "One chat message each", "status": "archived"})

    assert response.status_code == 303
    [currency] = tenant.http.get("/credits/currencies").json()["data"]
    assert currency["status"] == "archived"
    assert currency["description"] == "One chat message each"


def test_rotating_webhook_secret_shows_new_one(dashboard, tenant):
    first = dashboard.submit(
        "/dashboard/webhooks", "/dashboard/webhooks/billing-invoice-paid", {"url": "http://127.0.0.1:9/hooks", "enabled": "on"}
    )
    old_secret = re.search(r'id="signing-secret">([^<]+)<', first.text).group(1)

    rotated = dashboard.submit("/dashboard/webhooks", "/dashboard/webhooks/rotate-secret", {})

    new_secret = re.search(r'id="signing-secret">([^<]+)<', rotated.text).group(1)
    assert rotated.status_code == 200
    assert new_secret.startswith("whsec_")
    assert new_secret != old_secret
    assert "signing-secret" not in dashboard.get("/dashboard/webhooks").text


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard?days=abc",
        "/dashboard?days=-1",
        "/dashboard/customers?offset=abc",
        f"/dashboard/customers?offset={10**30}",
        "/dashboard/signals?offset=-5&from=2030-02-31",
        "/dashboard/orders?status=bogus",
        "/dashboard/customers/cus_%27%22%3C",
    ],
)
def test_odd_query_values_render_a_page(dashboard, path):
    response = dashboard.get(path)

    assert response.status_code in (200, 404)
    assert response.headers["content-type"].startswith("text/html")


def test_plan_price_beyond_bound_is_rejected(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())

    response = dashboard.submit(
        f"/dashboard/catalog/products/{catalog.product_id}/plans/new",
        f"/dashboard/catalog/products/{catalog.product_id}/plans",
        {"name": "Huge", "currency": "USD", f"price_{catalog.fee_line_id}": "1e30"},
    )

    assert response.status_code == 400
    assert field_errors(response.text) == ["Enter a price of at most 10,000,000,000 USD."]


def test_value_type_edit_archive_restore(dashboard, tenant):
    from tests.test_value_api import create_minutes_metric
    from tests.test_value_receipts import guide_setup

    create_minutes_metric(guide_setup(tenant))
    form = "/dashboard/value-types/minutes_saved"

    saved = dashboard.submit(
        "/dashboard/value-types", form, {"name": "Minutes saved in chat", "description": "", "value_per_unit": "150"}
    )
    assert saved.status_code == 303
    assert "notice=value_type_saved" in saved.headers["location"]
    metric = tenant.http.get("/value-metrics/minutes_saved").json()
    assert metric["name"] == "Minutes saved in chat"
    assert metric["description"] is None
    assert metric["monetaryConversion"]["valuePerUnit"] == 150
    # The saved worth stays editable in the form.
    assert 'name="value_per_unit" inputmode="decimal" value="150"' in dashboard.get("/dashboard/value-types").text
    changed = dashboard.submit(
        "/dashboard/value-types", form, {"name": "Minutes saved in chat", "description": "", "value_per_unit": "200"}
    )
    assert changed.status_code == 303
    assert tenant.http.get("/value-metrics/minutes_saved").json()["monetaryConversion"]["valuePerUnit"] == 200

    archived = dashboard.submit("/dashboard/value-types", form, {"action": "archive"})
    assert archived.status_code == 303
    assert tenant.http.get("/value-metrics/minutes_saved").json()["archivedAt"] is not None
    assert "Restore" in dashboard.get("/dashboard/value-types").text

    restored = dashboard.submit("/dashboard/value-types", form, {"action": "restore"})
    assert restored.status_code == 303
    assert tenant.http.get("/value-metrics/minutes_saved").json()["archivedAt"] is None
    versions = tenant.http.get("/value-models/versions").json()["pagination"]["total"]
    assert versions == 5


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "", "value_per_unit": "1"}, "Enter a name."),
        ({"name": "Minutes", "value_per_unit": "lots"}, "Enter the worth per unit as a number"),
        ({"name": "Minutes", "value_per_unit": "-1"}, "Enter a worth per unit of 0 or more."),
    ],
)
def test_value_type_edit_rejects_bad_input(dashboard, tenant, fields, message):
    from tests.test_value_api import create_minutes_metric
    from tests.test_value_receipts import guide_setup

    create_minutes_metric(guide_setup(tenant))

    response = dashboard.submit("/dashboard/value-types", "/dashboard/value-types/minutes_saved", fields)

    assert response.status_code == 400
    assert message in response.text
    metric = tenant.http.get("/value-metrics/minutes_saved").json()
    assert (metric["name"], metric["monetaryConversion"]["valuePerUnit"]) == ("Minutes saved", 100)


def test_value_type_edit_unknown_slug_is_shown(dashboard, tenant):
    from tests.test_value_api import create_minutes_metric
    from tests.test_value_receipts import guide_setup

    create_minutes_metric(guide_setup(tenant))

    response = dashboard.submit("/dashboard/value-types", "/dashboard/value-types/no_such_type", {"name": "X"})

    assert response.status_code == 404
    assert "No value type is called no_such_type." in response.text


def test_signal_table_margin_matches_api(dashboard, tenant):
    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="user-42")
    assert hosted_page(checkout).pay(catalog.plan_ids["pro"]).status_code == 303
    cheap = {**CHAT_SIGNAL, "data": {"costData": {"vendor": "openai", "cost": {"amount": "0.000045", "currency": "USD"}}}}
    response = tenant.http.post("/signals/bulk", json={"signals": [CHAT_SIGNAL, cheap]})
    assert response.status_code == 200, response.text
    items = tenant.http.get("/signals/").json()["data"]
    customer_id = items[0]["customerId"]

    page = dashboard.get(f"/dashboard/customers/{customer_id}").text

    signal_table = page[page.index("<th class=\"number\">Margin</th>") :]
    signal_table = signal_table[: signal_table.index("</table>")]
    cell = r'<td class="number">([^<]*)</td>\s*'
    rows = re.findall(cell + cell + r'<td class="mono">(\w+)</td>', signal_table)
    cells_by_signal = {signal_id: (cost, margin) for cost, margin, signal_id in rows}
    assert set(cells_by_signal) == {item["id"] for item in items}
    for item in items:
        cost, margin = cells_by_signal[item["id"]]
        assert Decimal(item["revenue"]["amount"]) > 0, item
        assert margin == format_usd_cost(Decimal(item["margin"]["amount"])), item
        if item["cost"]["status"] == "none":
            assert cost == "—", item
        else:
            assert cost == "$0.000045", item
    # The traces table rounds the same way instead of printing the stored twelve places.
    assert "$0.000045000000" not in page


def test_value_types_empty_state_example_works(dashboard, tenant):
    guide_setup(tenant)
    page = dashboard.get("/dashboard/value-types").text
    examples = dict(re.findall(r'<code data-example="([a-z-]+)">(.*?)</code>', page, re.S))
    metric = json.loads(html.unescape(examples["value-metric"]))
    signal_data = json.loads(html.unescape(examples["signal-data"]))

    created = tenant.http.post("/value-metrics/", json=metric)
    assert created.status_code == 201, created.text
    signal = {
        **CHAT_SIGNAL,
        "customer": {"externalCustomerId": "ada"},
        "data": signal_data,
        "timestamp": "2026-01-15T12:00:00Z",
    }
    sent = tenant.http.post("/signals/bulk", json={"signals": [signal]})
    assert sent.json()["ingested"] == 1

    period = {"startDate": "2026-01-01T00:00:00Z", "endDate": "2026-02-01T00:00:00Z"}
    receipt = tenant.http.post("/value-receipts/", json={"externalCustomerId": "ada", **period})
    assert receipt.status_code == 201, receipt.text
    detail = tenant.http.get(f"/value-receipts/{receipt.json()['id']}").json()
    [line] = detail["lines"]
    assert (line["quantity"], line["signalCount"], line["unknownCount"]) == ("12", 1, 0)


def test_customer_page_opens_draft_value_receipt(dashboard, tenant):
    from tests.test_value_receipts import guide_value_model, send_march_signals

    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    draft = client.value_receipts.create_value_receipt(
        external_customer_id="ada", start_date="2026-03-01T00:00:00Z", end_date="2026-04-01T00:00:00Z"
    )
    customer_id = tenant.http.get("/customers/external/ada").json()["id"]

    page = dashboard.get(f"/dashboard/customers/{customer_id}").text
    link = re.search(r'href="(/receipts/[^"]+)"', page)
    assert link is not None
    opened = dashboard.get(html.unescape(link.group(1)))

    assert draft.status == "draft"
    assert opened.status_code == 200
    assert "Money saved" in opened.text
