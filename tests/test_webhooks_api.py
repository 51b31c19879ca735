"""Webhook settings through the API: the Paid endpoints, target validation and thresholds."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from paid.errors import BadRequestError, NotFoundError

from tallystick.server import events
from tallystick.server.webhooks.catalog import WEBHOOK_EVENTS
from tallystick.webhooks import SIGNATURE_HEADER, WebhookSignatureError, verify_webhook_signature
from tests.conftest import make_tenant, serve_app
from tests.test_webhooks_delivery import WebhookReceiver, record, wait_for_delivery

NO_RETRIES = {"max_retries": 0}


def test_list_webhooks_paid_sdk(tenant):
    listed = tenant.paid().webhooks.list_webhooks()

    assert listed.signing_secret_configured is False
    assert [webhook.name for webhook in listed.data] == list(WEBHOOK_EVENTS)
    assert all(webhook.enabled is False and webhook.url is None for webhook in listed.data)
    assert all(webhook.description for webhook in listed.data)
    assert len({webhook.id for webhook in listed.data}) == len(WEBHOOK_EVENTS)
    assert tenant.paid().webhooks.list_webhooks().data[0].id == listed.data[0].id


def test_update_webhook_paid_sdk(tenant):
    client = tenant.paid()

    first = client.webhooks.update_webhook(
        events.CHECKOUT_COMPLETED, url="http://127.0.0.1:9/hooks", enabled=True
    )
    second = client.webhooks.update_webhook(events.INVOICE_PAID, url="https://127.0.0.1/paid")

    assert first.enabled is True
    assert first.url == "http://127.0.0.1:9/hooks"
    assert first.signing_secret.startswith("whsec_")
    assert second.signing_secret is None
    assert second.enabled is False  # setting a url leaves enabled as it was
    listed = {webhook.name: webhook for webhook in client.webhooks.list_webhooks().data}
    assert listed[events.CHECKOUT_COMPLETED].enabled is True
    assert listed[events.INVOICE_PAID].url == "https://127.0.0.1/paid"
    assert client.webhooks.list_webhooks().signing_secret_configured is True


def test_null_url_clears_and_disables(tenant):
    tenant.http.patch(f"/webhooks/{events.PAYMENT_FAILED}", json={"url": "http://127.0.0.1:9/x", "enabled": True})

    response = tenant.http.patch(f"/webhooks/{events.PAYMENT_FAILED}", json={"url": None})

    assert response.status_code == 200
    assert response.json()["url"] is None
    assert response.json()["enabled"] is False


def test_enable_without_url_is_400(tenant):
    with pytest.raises(BadRequestError) as raised:
        tenant.paid().webhooks.update_webhook(events.INVOICE_CREATED, enabled=True)

    assert raised.value.body["fields"][0]["field"] == "enabled"
    assert "no url" in raised.value.body["error"]


def test_unknown_webhook_name_is_404(tenant):
    with pytest.raises(NotFoundError):
        tenant.paid().webhooks.update_webhook("billing-no-such-event", url="http://127.0.0.1:9/x")
    response = tenant.http.post("/webhooks/billing-no-such-event/test", json={})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/hooks", "must start with http:// or https://"),
        ("127.0.0.1/hooks", "must start with http:// or https://"),
        ("http:///hooks", "has no host name"),
        ("http://user:pass@127.0.0.1/hooks", "must not contain a user name or password"),
        ("http://127.0.0.1:99999/hooks", "not a valid URL"),
        ("http://127.0.0.1/a b", "must not contain spaces"),
        ("http://example.com/" + "a" * 2048, "must be at most 2048 characters"),
    ],
)
def test_invalid_url_is_400(tenant, url, message):
    response = tenant.http.patch(f"/webhooks/{events.INVOICE_CREATED}", json={"url": url, "enabled": True})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert message in body["error"]
    assert body["fields"][0]["field"] == "url"
    listed = {item["name"]: item for item in tenant.http.get("/webhooks/").json()["data"]}
    assert listed[events.INVOICE_CREATED]["url"] is None


@pytest.fixture(scope="module")
def strict_server(store, database_url: str) -> Iterator:  # type: ignore[no-untyped-def]
    """A server with production target rules: private addresses are rejected."""
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    settings = Settings(
        database_url=database_url,
        allow_private_webhook_targets=False,
        webhook_delivery_enabled=False,
    )
    with serve_app(create_app(settings, store=store), database_url) as running:
        yield running


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:8080/hooks", "127.0.0.1, a loopback address"),
        ("https://localhost/hooks", "a loopback address"),
        ("http://[::1]/hooks", "::1, a loopback address"),
        ("https://10.1.2.3/hooks", "10.1.2.3, a private-range address"),
        ("https://192.168.0.10/hooks", "a private-range address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a link-local address"),
        ("http://[::ffff:10.0.0.1]/hooks", "a private-range address"),
    ],
)
def test_private_target_rejected_by_default(strict_server, store, url, problem):
    tenant = make_tenant(strict_server, store)

    response = tenant.http.patch(f"/webhooks/{events.CHECKOUT_COMPLETED}", json={"url": url, "enabled": True})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert problem in body["error"]
    assert "TALLYSTICK_ALLOW_PRIVATE_WEBHOOK_TARGETS=true" in body["error"]
    listed = {item["name"]: item for item in tenant.http.get("/webhooks/").json()["data"]}
    assert listed[events.CHECKOUT_COMPLETED]["url"] is None
    assert listed[events.CHECKOUT_COMPLETED]["enabled"] is False
    tenant.http.close()


def test_test_webhook_sends_signed_test_event(tenant):
    receiver = WebhookReceiver(script=[200, 500])
    try:
        client = tenant.paid()
        secret = client.webhooks.update_webhook(events.CHECKOUT_CREATED, url=receiver.url, enabled=True).signing_secret

        passed = client.webhooks.test_webhook(events.CHECKOUT_CREATED)
        after_success = {item.name: item for item in client.webhooks.list_webhooks().data}
        failed = client.webhooks.test_webhook(events.CHECKOUT_CREATED)
        after_failure = {item.name: item for item in client.webhooks.list_webhooks().data}
    finally:
        receiver.close()

    assert passed.success is True
    assert failed.success is False
    request = receiver.requests[0]
    verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], secret)
    envelope = json.loads(request.body)
    assert envelope["event"] == events.CHECKOUT_CREATED
    assert envelope["isTest"] is True
    checkout = envelope["data"]["checkout"]
    assert checkout["id"] == "test_checkout"
    # The fields the Paid SDK requires of a checkout.
    required = ["url", "status", "products", "successUrl", "collectAddress", "collectPhone", "singleUse"]
    required += ["allowedCurrencies", "createdAt", "updatedAt"]
    assert [key for key in required if key not in checkout] == []
    assert after_success[events.CHECKOUT_CREATED].last_status == "success"
    assert after_success[events.CHECKOUT_CREATED].last_sent_at is not None
    assert after_failure[events.CHECKOUT_CREATED].last_status == "failed"


def test_test_webhook_reports_receiver_status(tenant):
    receiver = WebhookReceiver(script=[400, 200])
    try:
        enabled = tenant.http.patch(f"/webhooks/{events.INVOICE_PAID}", json={"url": receiver.url, "enabled": True})
        assert enabled.status_code == 200, enabled.text
        rejected = tenant.http.post(f"/webhooks/{events.INVOICE_PAID}/test", json={}).json()
        accepted = tenant.http.post(f"/webhooks/{events.INVOICE_PAID}/test", json={}).json()
    finally:
        receiver.close()

    assert (rejected["success"], rejected["responseStatus"]) == (False, 400)
    assert rejected["error"] == "receiver responded with HTTP 400"
    assert rejected["latencyMs"] >= 0
    assert (accepted["success"], accepted["responseStatus"], accepted["error"]) == (True, 200, None)


def test_test_webhook_disabled_is_400(tenant):
    with pytest.raises(BadRequestError) as raised:
        tenant.paid().webhooks.test_webhook(events.INVOICE_PAID, request_options=NO_RETRIES)

    assert raised.value.body["code"] == "webhook_disabled"


def test_rotate_secret_replaces_old_one(tenant, store):
    receiver = WebhookReceiver()
    try:
        client = tenant.paid()
        old = client.webhooks.update_webhook(events.INVOICE_PAID, url=receiver.url, enabled=True).signing_secret
        new = client.webhooks.rotate_webhook_secret().signing_secret
        event_id = record(store, tenant.organization_id, events.INVOICE_PAID, {"id": "inv_rotated"})
        wait_for_delivery(tenant, event_id)
    finally:
        receiver.close()

    assert new != old
    assert new.startswith("whsec_")
    (request,) = receiver.requests_for(event_id)
    verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], new)
    with pytest.raises(WebhookSignatureError):
        verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], old)


def test_secret_never_listed(tenant):
    secret = tenant.http.post("/webhooks/rotate-secret", json={}).json()["signingSecret"]

    listed = tenant.http.get("/webhooks").text
    patched = tenant.http.patch(f"/webhooks/{events.INVOICE_PAID}", json={"url": "http://127.0.0.1:9/x"}).text

    assert secret not in listed
    assert secret not in patched


def test_deliveries_filter_validation(tenant):
    response = tenant.http.get("/webhooks/deliveries", params={"status": "lost"})
    assert response.status_code == 400
    assert "status" in response.json()["error"]

    response = tenant.http.get("/webhooks/deliveries", params={"event": "billing-nothing"})
    assert response.status_code == 400

    missing = tenant.http.get("/webhooks/deliveries/whdl_missing")
    assert missing.status_code == 404


def test_redeliver_disabled_webhook_is_400(tenant, store):
    receiver = WebhookReceiver()
    try:
        tenant.http.patch(f"/webhooks/{events.INVOICE_PAID}", json={"url": receiver.url, "enabled": True})
        event_id = record(store, tenant.organization_id, events.INVOICE_PAID, {"id": "inv_off_later"})
        delivery = wait_for_delivery(tenant, event_id)
    finally:
        receiver.close()
    tenant.http.patch(f"/webhooks/{events.INVOICE_PAID}", json={"enabled": False})

    response = tenant.http.post(f"/webhooks/deliveries/{delivery['id']}/redeliver", json={})

    assert response.status_code == 400
    assert response.json()["code"] == "webhook_disabled"


def _create_currency(tenant) -> str:  # type: ignore[no-untyped-def]
    response = tenant.http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_low_balance_threshold_crud(tenant):
    currency_id = _create_currency(tenant)

    created = tenant.http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json={"threshold": "100"})
    replaced = tenant.http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json={"threshold": "12.50"})
    listed = tenant.http.get("/webhooks/low-balance-thresholds")

    assert created.status_code == 200, created.text
    assert created.json()["threshold"] == "100"
    assert replaced.json()["threshold"] == "12.5"
    assert [(item["creditsCurrencyId"], item["threshold"]) for item in listed.json()["data"]] == [
        (currency_id, "12.5")
    ]
    assert tenant.http.delete(f"/webhooks/low-balance-thresholds/{currency_id}").json() == {}
    assert tenant.http.get("/webhooks/low-balance-thresholds").json()["data"] == []
    assert tenant.http.delete(f"/webhooks/low-balance-thresholds/{currency_id}").status_code == 404


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ("0", "must be greater than 0"),
        ("-5", "must be greater than 0"),
        ("lots", "must be a decimal number"),
        ("NaN", "must be a finite number"),
        ("0.0000000001", "at most 9 decimal places"),
        ("10000000000", "must be at most"),
        (1e30, "Invalid threshold 1e+30: must be at most 1000000000 credits"),
        (1e-10, "at most 9 decimal places"),
        ([12.5], "Invalid threshold"),
    ],
)
def test_low_balance_threshold_invalid_is_400(tenant, threshold, message):
    currency_id = _create_currency(tenant)

    response = tenant.http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json={"threshold": threshold})

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert tenant.http.get("/webhooks/low-balance-thresholds").json()["data"] == []


def test_low_balance_threshold_number_is_exact(tenant):
    currency_id = _create_currency(tenant)

    response = tenant.http.put(
        f"/webhooks/low-balance-thresholds/{currency_id}",
        content=b'{"threshold": 12.000000001}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 200
    assert response.json()["threshold"] == "12.000000001"


def test_low_balance_threshold_other_tenant_currency_is_404(tenant, other_tenant):
    currency_id = _create_currency(other_tenant)

    response = tenant.http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json={"threshold": "5"})

    assert response.status_code == 404
    assert other_tenant.http.get("/webhooks/low-balance-thresholds").json()["data"] == []


def test_openapi_documents_webhook_operations(server):
    import httpx

    paths = httpx.get(server.root + "/openapi.json", timeout=60).json()["paths"]

    assert "/api/v2/webhooks/" in paths
    assert "patch" in paths["/api/v2/webhooks/{webhook_name}"]
    assert "post" in paths["/api/v2/webhooks/rotate-secret"]
    assert "get" in paths["/api/v2/webhooks/deliveries"]
    assert "post" in paths["/api/v2/webhooks/deliveries/{delivery_id}/redeliver"]
    assert "put" in paths["/api/v2/webhooks/low-balance-thresholds/{credits_currency_id}"]


def test_paid_sdk_bad_url_is_bad_request(tenant):
    with pytest.raises(BadRequestError) as raised:
        tenant.paid().webhooks.update_webhook(events.INVOICE_PAID, url="ftp://x", request_options=NO_RETRIES)

    assert raised.value.status_code == 400


# The state each test event's object must show: (key, expected value) pairs.
TEST_EVENT_STATES = {
    events.INVOICE_CREATED: [("status", "draft"), ("paymentStatus", "pending")],
    events.INVOICE_POSTED: [("status", "posted"), ("paymentStatus", "pending")],
    events.INVOICE_PAID: [("paymentStatus", "paid"), ("amountPaid", 7900)],
    events.PAYMENT_SUCCEEDED: [("status", "succeeded"), ("invoiceId", "test_invoice")],
    events.PAYMENT_FAILED: [("status", "failed"), ("attempt", 1), ("failureCode", "card_declined")],
    events.CHECKOUT_CREATED: [("status", "active"), ("orderId", None)],
    events.CHECKOUT_COMPLETED: [("status", "completed"), ("orderId", "test_order")],
    events.CHECKOUT_EXPIRED: [("status", "expired")],
    events.CREDITS_DEPLETED: [("available", "0"), ("externalCustomerId", "test-customer")],
    events.CREDITS_LOW: [("threshold", "100"), ("available", "99")],
    events.OVERAGE_INCURRED: [("overage", "5"), ("signalCount", 1)],
    events.CREDIT_CAP_REACHED: [("customerId", "test_customer")],
}


@pytest.mark.parametrize("name", sorted(WEBHOOK_EVENTS))
def test_test_event_object_matches_its_event(name):
    from datetime import UTC, datetime

    from tallystick.server.webhooks.samples import sample_payload

    sample = sample_payload(name, datetime(2026, 1, 1, tzinfo=UTC))

    assert sample["customerId"] == "test_customer"
    assert [(key, sample.get(key)) for key, _ in TEST_EVENT_STATES[name]] == TEST_EVENT_STATES[name]
