"""Findings of the security review, one test each: logs, tokens, forms and webhook targets.

Secrets must never reach a log: API keys, webhook signing secrets, card details, form tokens
and the access tokens of signed receipt links. The in-process tests capture every log record
at DEBUG level and render it with the server's JSON formatter, extras included. The CLI test
reads what a real `tallystick serve` process writes.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tallystick.server.observability import JsonLogFormatter
from tests.checkout_helpers import ADDRESS, PAYING_CARD, create_checkout, form_token, hosted_page
from tests.conftest import free_port, serve_app
from tests.guide import create_guide_catalog
from tests.test_crash_ingestion import CLI, ServerProcess
from tests.test_isolation_routes import build_world
from tests.test_stripe_provider import stripe_api  # noqa: F401 - a fixture


# Loggers of the HTTP clients the test itself drives; at DEBUG they print the test's own
# requests and responses, cookies included.
CLIENT_LOGGERS = ("httpx", "httpcore")


STRIPE_SECRET_KEY = "sk_test_51ReviewKeyThatMustNotBeLogged00"
STRIPE_WEBHOOK_SECRET = "whsec_review_secret_that_must_not_be_logged"


def rendered_logs(caplog: pytest.LogCaptureFixture) -> str:
    formatter = JsonLogFormatter()
    records = [record for record in caplog.records if not record.name.startswith(CLIENT_LOGGERS)]
    return "\n".join(formatter.format(record) for record in records)


def assert_not_logged(logs: str, secrets_by_name: dict[str, str]) -> None:
    for name, secret in secrets_by_name.items():
        assert secret, name
        assert secret not in logs, f"{name} appears in the logs"


def test_secrets_never_logged(tenant, store, caplog):
    from tallystick.server.api_keys import create_api_key

    caplog.set_level(logging.DEBUG)

    with store.transaction() as session:
        created = create_api_key(session, "Logging review")
    tenant.http.get("/customers/", headers={"Authorization": f"Bearer {created.secret}"})
    enabled = tenant.http.patch(
        "/webhooks/billing-checkout-completed", json={"url": "http://127.0.0.1:9/hook", "enabled": True}
    ).json()
    rotated = tenant.http.post("/webhooks/rotate-secret").json()
    stripe_settings = tenant.http.put(
        "/payment-settings",
        json={"provider": "stripe", "stripeSecretKey": STRIPE_SECRET_KEY, "stripeWebhookSecret": STRIPE_WEBHOOK_SECRET},
    )
    # Back to the test provider, which pays on the hosted page without a network call.
    tenant.http.put("/payment-settings", json={"provider": "test"})

    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="logged-buyer")
    page = hosted_page(checkout)
    opened, token = page.open()
    paid = page.submit(token, {"option": catalog.plan_ids["pro"], **ADDRESS, **PAYING_CARD})
    browser_cookie = page.client.cookies.get("tallystick_checkout_browser")
    page.client.close()

    assert stripe_settings.status_code == 200
    assert opened.status_code == 200
    assert paid.status_code == 303
    logs = rendered_logs(caplog)
    # The run did log: the checks below would pass trivially on an empty log.
    assert "api_key.created" in logs
    assert "request.finished" in logs
    assert_not_logged(
        logs,
        {
            "new API key": created.secret,
            "test tenant's API key": tenant.api_key,
            "first webhook signing secret": enabled["signingSecret"] or rotated["signingSecret"],
            "rotated webhook signing secret": rotated["signingSecret"],
            "Stripe secret key": STRIPE_SECRET_KEY,
            "Stripe webhook secret": STRIPE_WEBHOOK_SECRET,
            "card number": PAYING_CARD["card_number"],
            "card number without spaces": PAYING_CARD["card_number"].replace(" ", ""),
            "form token": token,
            "browser cookie": browser_cookie or "",
        },
    )


def test_cli_logs_no_key_or_token(tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'logs.db'}"
    created = subprocess.run(
        [CLI, "api-keys", "create", "--org", "Log test", "--database-url", database_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = json.loads(created.stdout)["apiKey"]
    # The key goes to standard output once, for the operator; logs go to standard error.
    assert api_key not in created.stderr

    running = ServerProcess(free_port(), database_url, tmp_path / "server.log", log_level="info")
    running.start()
    try:
        headers = {"Authorization": f"Bearer {api_key}"}
        secret_token = "A" * 40
        httpx.get(f"{running.root}/receipts/{secret_token}?access={secret_token}")
        httpx.get(f"{running.root}/api/v2/customers/external/{secret_token}", headers=headers)
        httpx.get(f"{running.root}/api/v2/customers/", headers=headers, params={"externalId": secret_token})
    finally:
        running.stop()

    logs = running.log_path.read_text()
    assert api_key not in logs
    assert secret_token not in logs
    # Requests are still logged, by route template.
    assert '"route": "/receipts/{token}"' in logs
    assert '"event": "request.finished"' in logs


def test_request_failure_log_names_route_not_path(tenant, caplog, monkeypatch):
    from tallystick.server.customers import service as customer_service

    caplog.set_level(logging.ERROR)
    token = "secret-path-token-" + "x" * 20

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected")

    monkeypatch.setattr(customer_service, "get_customer_by_external_id", broken)
    response = tenant.http.get(f"/customers/external/{token}")

    logs = rendered_logs(caplog)
    assert response.status_code == 500
    assert "request.failed" in logs
    assert "/customers/external/{external_id}" in logs
    assert token not in logs


def test_receipt_link_opens_only_its_receipt(server, store, tenant, other_tenant):
    owner = build_world(tenant, store)
    intruder = build_world(other_tenant, store)
    owner_receipt = owner.value_for("/value-receipts", "receipt_id")
    intruder_receipt = intruder.value_for("/value-receipts", "receipt_id")
    link = tenant.http.post(f"/value-receipts/{owner_receipt}/links", json={"expiresInSeconds": 600}).json()
    other = other_tenant.http.post(f"/value-receipts/{intruder_receipt}/links", json={"expiresInSeconds": 600}).json()
    owner_access = link["url"].split("?access=")[1]
    intruder_page = other["url"].split("?access=")[0]

    opened = httpx.get(link["url"])
    swapped = httpx.get(f"{intruder_page}?access={owner_access}")
    bare = httpx.get(link["url"].split("?access=")[0])

    assert opened.status_code == 200
    # Another organization's valid token does not open this organization's receipt.
    assert swapped.status_code == 403
    assert owner.marker not in swapped.text
    assert intruder.marker not in swapped.text
    assert bare.status_code == 403
    assert owner.marker not in bare.text


def test_page_forms_reject_nul_characters(server, store, tenant):
    from tests.dashboard_helpers import DashboardClient, make_operator

    catalog = create_guide_catalog(tenant.paid())
    checkout = create_checkout(
        tenant, products=[{"id": catalog.product_id}], externalCustomerId="nul-buyer", collectAddress=True
    )
    page = hosted_page(checkout)
    _, token = page.open()
    dashboard = DashboardClient(server.root)
    dashboard.sign_in(make_operator(store, tenant.organization_id))

    paid = page.submit(
        token, {"option": catalog.plan_ids["pro"], **ADDRESS, "address_city": "Spring\x00field", **PAYING_CARD}
    )
    created = dashboard.submit(
        "/dashboard/customers", "/dashboard/customers", {"name": "Gr\x00ace", "external_id": "nul-customer"}
    )
    page.client.close()
    dashboard.close()

    # PostgreSQL cannot store NUL, so these are 400s instead of 500s, and nothing is written.
    assert paid.status_code == 400
    assert created.status_code == 400
    assert created.json()["code"] == "validation_error"
    assert tenant.http.get("/orders/").json()["pagination"]["total"] == 0
    assert tenant.http.get("/customers/external/nul-customer").status_code == 404


def test_buyer_fields_with_nul_get_field_errors():
    from tallystick.server.checkout.forms import read_buyer

    read = read_buyer({"name": "A\x00", "email": "a@example.com"}, ask_name_email=True, ask_phone=False, ask_address=False)

    assert read.errors == {"name": "Remove the invalid character from this field."}


def test_oversized_form_is_413_not_buffered(tenant):
    body = b"name=" + b"x" * (11 * 1024 * 1024)
    response = httpx.post(
        tenant.server.root + "/dashboard/customers",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://2130706433/hook",
        "http://0x7f.0.0.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://0.0.0.0/hook",
        "file:///etc/passwd",
    ],
)
def test_webhook_target_rejects_private_hosts(store, database_url, url):
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings
    from tests.conftest import make_tenant

    # Production settings: private targets are not allowed. Only local names and numeric
    # addresses are used, so resolving them sends no traffic.
    app = create_app(Settings(database_url=database_url, allow_private_webhook_targets=False), store=store)
    with serve_app(app, database_url) as running:
        tenant = make_tenant(running, store)
        response = tenant.http.patch("/webhooks/billing-invoice-paid", json={"url": url, "enabled": True})
        listed = tenant.http.get("/webhooks/").json()["data"]
        tenant.http.close()

    assert response.status_code == 400, response.text
    [setting] = [item for item in listed if item["name"] == "billing-invoice-paid"]
    assert setting["url"] is None
    assert setting["enabled"] is False


def test_form_token_of_another_checkout_is_rejected(tenant):
    catalog = create_guide_catalog(tenant.paid())
    first = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="buyer-a")
    second = create_checkout(tenant, products=[{"id": catalog.product_id}], externalCustomerId="buyer-b")
    page = hosted_page(first)
    _, first_token = page.open()

    # The same browser posts the first checkout's token to the second checkout's form.
    response = page.client.post(
        second["url"],
        data={"form_token": first_token, "currency": "USD", "option": catalog.plan_ids["pro"], **ADDRESS, **PAYING_CARD},
    )
    without_cookie = httpx.post(
        first["url"],
        data={"form_token": first_token, "currency": "USD", "option": catalog.plan_ids["pro"], **ADDRESS, **PAYING_CARD},
    )
    page.client.close()

    assert response.status_code == 400
    assert without_cookie.status_code == 400
    assert re.search(r"expired or was opened in another browser", response.text)
    assert form_token(response.text) != first_token
    assert tenant.http.get("/orders/").json()["pagination"]["total"] == 0


def test_stripe_event_cannot_complete_other_organizations_checkout(tenant, other_tenant, store, stripe_api):
    """B signs an event with its own Stripe webhook secret, naming A's checkout in the metadata."""
    from tests.stripe_stub import fixture, signed_event
    from tests.test_stripe_provider import WEBHOOK_SECRET, use_stripe

    victim_catalog = create_guide_catalog(tenant.paid())
    victim_checkout = create_checkout(tenant, products=[{"id": victim_catalog.product_id}], externalCustomerId="victim")
    use_stripe(other_tenant)
    event = fixture("event_checkout_session_completed")
    event["data"]["object"]["metadata"] = {
        "tallystick_checkout_id": victim_checkout["id"],
        "tallystick_offer": victim_catalog.plan_ids["pro"],
        "tallystick_currency": "USD",
    }
    body, signature = signed_event(event, WEBHOOK_SECRET)

    delivered = httpx.post(
        f"{other_tenant.server.root}/webhooks/stripe/{other_tenant.organization_id}",
        content=body,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )

    assert delivered.status_code == 200
    assert delivered.json()["handled"] is False
    assert tenant.http.get(f"/checkouts/{victim_checkout['id']}").json()["status"] == "active"
    assert tenant.http.get("/orders/").json()["pagination"]["total"] == 0
    assert other_tenant.http.get("/orders/").json()["pagination"]["total"] == 0


def test_dashboard_sign_in_logs_no_password_or_session(server, store, tenant, caplog):
    from tests.dashboard_helpers import DashboardClient, make_operator

    caplog.set_level(logging.DEBUG)
    operator = make_operator(store, tenant.organization_id)
    browser = DashboardClient(server.root)
    wrong = DashboardClient(server.root)

    signed_in = browser.sign_in(operator)
    rejected = wrong.sign_in(type(operator)(email=operator.email, password="wrong password 123"))
    session_cookie = browser.http.cookies.get("tallystick_dashboard_session")
    browser.close()
    wrong.close()

    assert signed_in.status_code == 303
    assert rejected.status_code != 303
    assert_not_logged(
        rendered_logs(caplog),
        {"password": operator.password, "wrong password": "wrong password 123", "session cookie": session_cookie or ""},
    )


def test_dashboard_session_ends_at_sign_out(server, store, tenant):
    from tests.dashboard_helpers import DashboardClient, make_operator

    operator = make_operator(store, tenant.organization_id)
    browser = DashboardClient(server.root)
    other_browser = DashboardClient(server.root)
    assert browser.sign_in(operator).status_code == 303
    assert other_browser.sign_in(operator).status_code == 303
    copied = browser.http.cookies.get("tallystick_dashboard_session")
    signed_out = browser.http.post("/dashboard/logout", data={"csrf_token": browser.csrf_token()})
    browser.close()

    replayed = httpx.get(
        server.root + "/dashboard", cookies={"tallystick_dashboard_session": copied}, follow_redirects=False
    )
    still_signed_in = other_browser.get("/dashboard")
    other_browser.close()

    assert signed_out.status_code == 303
    assert replayed.status_code == 303
    assert replayed.headers["location"].startswith("/dashboard/login")
    # Sign-out ends that one session; the operator's other browser stays signed in.
    assert still_signed_in.status_code == 200


def test_span_text_with_nul_is_stored(tenant, store):
    """Model output and ids in spans may contain NUL, which PostgreSQL cannot store in text."""
    from tests.otlp_factories import cost_rows, export, openai_chat_attributes, post_export, span

    attributes = openai_chat_attributes(customer="cust\x00omer")
    attributes["output.value"] = "answer with \x00 inside"
    attributes["k\x00ey"] = "value"
    body = export(span(attributes, name="Chat\x00Completion")).SerializeToString()

    response = post_export(tenant.server.root, tenant.api_key, body)

    assert response.status_code == 200
    [row] = cost_rows(store, tenant.organization_id)
    assert row.cost_status == "priced"
    assert row.external_customer_id == "cust\ufffdomer"
    assert row.span_name == "Chat\ufffdCompletion"
    assert row.attributes["output.value"] == "answer with \ufffd inside"
    assert "k\ufffdey" in row.attributes
