"""Test clocks: customers on a clock renew only when it is advanced, each event as of its time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tallystick.server import clock, events
from tallystick.server.billing.renewals import renew_due_orders
from tests.billing_helpers import (
    available,
    buy,
    create_chat_catalog,
    expiry_entries,
    frozen,
    load_order,
    order_grants,
    order_invoices,
    order_periods,
    send_chat_messages,
)
from tests.test_webhooks_delivery import Hang, WebhookReceiver, enable_webhooks

JAN_31 = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
FEB_28 = datetime(2026, 2, 28, 9, 30, tzinfo=UTC)
MAR_31 = datetime(2026, 3, 31, 9, 30, tzinfo=UTC)


def create_clock(tenant, frozen_time: datetime) -> dict:  # type: ignore[no-untyped-def, type-arg]
    response = tenant.http.post("/test-clocks/", json={"frozenTime": frozen_time.isoformat(), "name": "renewals"})
    assert response.status_code == 201, response.text
    return response.json()


def test_advancing_clock_renews_each_period_once(tenant, store):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    test_clock = create_clock(tenant, JAN_31)
    assert (test_clock["frozenTime"], test_clock["status"]) == ("2026-01-31T09:30:00Z", "ready")
    created = tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-1", "testClockId": test_clock["id"]})
    assert created.status_code == 201, created.text
    assert created.json()["testClockId"] == test_clock["id"]
    assert tenant.http.get("/customers/external/clock-1").json()["testClockId"] == test_clock["id"]
    listed = tenant.http.get("/customers/", params={"externalId": "clock-1"}).json()["data"]
    assert [customer["testClockId"] for customer in listed] == [test_clock["id"]]

    order_id = buy(tenant, catalog, "Starter", "clock-1")
    assert load_order(store, order_id).start_date == JAN_31
    assert available(tenant, "clock-1") == Decimal(500)

    # The renewal task at the real time leaves customers on a test clock alone.
    renew_due_orders(store.transaction, clock.now())
    assert len(order_periods(store, order_id)) == 1

    advanced = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": "2026-03-31T10:00:00Z"})
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["frozenTime"] == "2026-03-31T10:00:00Z"

    assert [(period.number, period.start_date) for period in order_periods(store, order_id)] == [
        (1, JAN_31),
        (2, FEB_28),
        (3, MAR_31),
    ]
    invoices = order_invoices(store, order_id)
    assert [(invoice.issue_date, invoice.payment_status) for invoice in invoices] == [
        (JAN_31, "paid"),
        (FEB_28, "paid"),
        (MAR_31, "paid"),
    ]
    assert [grant.starts_at for grant in order_grants(store, order_id)] == [JAN_31, FEB_28, MAR_31]
    assert available(tenant, "clock-1") == Decimal(500)
    assert tenant.http.get(f"/test-clocks/{test_clock['id']}").json()["frozenTime"] == "2026-03-31T10:00:00Z"


def test_clock_only_moves_forward(tenant):
    test_clock = create_clock(tenant, FEB_28)

    response = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": JAN_31.isoformat()})

    assert response.status_code == 400
    assert "frozenTime" in response.json()["error"]
    assert tenant.http.get(f"/test-clocks/{test_clock['id']}").json()["frozenTime"] == "2026-02-28T09:30:00Z"


def test_unknown_clock_is_rejected_on_customer(tenant, other_tenant):
    foreign = create_clock(other_tenant, JAN_31)

    response = tenant.http.post("/customers/", json={"name": "Nobody", "testClockId": foreign["id"]})

    assert response.status_code == 400
    assert "testClockId" in response.json()["error"]
    assert tenant.http.get(f"/test-clocks/{foreign['id']}").status_code == 404


def test_deleting_clock_deletes_its_customers(tenant, store):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    test_clock = create_clock(tenant, JAN_31)
    tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-2", "testClockId": test_clock["id"]})
    order_id = buy(tenant, catalog, "Starter", "clock-2")

    assert tenant.http.delete(f"/test-clocks/{test_clock['id']}").json() == {}

    assert tenant.http.get(f"/test-clocks/{test_clock['id']}").status_code == 404
    assert tenant.http.get("/customers/external/clock-2").status_code == 404
    assert load_order(store, order_id).status == "ended"


def test_advance_returns_after_webhooks_sent(tenant, store):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    test_clock = create_clock(tenant, JAN_31)
    tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-3", "testClockId": test_clock["id"]})
    buy(tenant, catalog, "Starter", "clock-3")
    # Each response is held back, so an attempt can only be recorded by the time the advance
    # returns if the advance itself waited for it.
    receiver = WebhookReceiver(script=[Hang(seconds=0.3)] * 20)
    try:
        enable_webhooks(tenant, receiver.url, events.INVOICE_CREATED, events.INVOICE_PAID, events.PAYMENT_SUCCEEDED)

        advanced = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": "2026-03-31T10:00:00Z"})
        assert advanced.status_code == 200, advanced.text

        renewal_requests = [
            request for request in receiver.requests if request.envelope["timestamp"][:10] in ("2026-02-28", "2026-03-31")
        ]
        deliveries = tenant.http.get("/webhooks/deliveries", params={"limit": 100}).json()["data"]
    finally:
        receiver.close()

    sent = sorted((request.envelope["timestamp"], request.envelope["event"]) for request in renewal_requests)
    assert sent == [
        ("2026-02-28T09:30:00.000Z", events.INVOICE_CREATED),
        ("2026-02-28T09:30:00.000Z", events.INVOICE_PAID),
        ("2026-02-28T09:30:00.000Z", events.PAYMENT_SUCCEEDED),
        ("2026-03-31T09:30:00.000Z", events.INVOICE_CREATED),
        ("2026-03-31T09:30:00.000Z", events.INVOICE_PAID),
        ("2026-03-31T09:30:00.000Z", events.PAYMENT_SUCCEEDED),
    ]
    # The object is the only key of data, not wrapped in its key a second time.
    data_by_event: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for request in renewal_requests:
        data_by_event.setdefault(request.envelope["event"], []).append(request.envelope["data"])
    paid_invoices = [data["invoice"] for data in data_by_event[events.INVOICE_PAID]]
    payments = [data["payment"] for data in data_by_event[events.PAYMENT_SUCCEEDED]]
    assert [invoice["paymentStatus"] for invoice in paid_invoices] == ["paid", "paid"]
    assert {payment["invoiceId"] for payment in payments} == {invoice["id"] for invoice in paid_invoices}
    renewal_event_ids = {request.envelope["id"] for request in renewal_requests}
    renewal_deliveries = [item for item in deliveries if item["eventId"] in renewal_event_ids]
    assert len(renewal_deliveries) == 6
    assert {(item["status"], item["attemptCount"]) for item in renewal_deliveries} == {("delivered", 1)}


def test_advance_leaves_failed_webhook_to_retries(tenant, store):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    test_clock = create_clock(tenant, JAN_31)
    tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-4", "testClockId": test_clock["id"]})
    buy(tenant, catalog, "Starter", "clock-4")
    receiver = WebhookReceiver(script=[503] * 50)
    try:
        enable_webhooks(tenant, receiver.url, events.INVOICE_PAID)

        advanced = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": "2026-02-28T10:00:00Z"})
        assert advanced.status_code == 200, advanced.text

        (renewal_request,) = [request for request in receiver.requests if request.envelope["timestamp"].startswith("2026-02-28")]
        listed = tenant.http.get("/webhooks/deliveries", params={"eventId": renewal_request.envelope["id"]}).json()["data"]
    finally:
        receiver.close()

    (delivery,) = listed
    assert delivery["status"] == "pending"
    assert delivery["attemptCount"] >= 1
    assert delivery["nextAttemptAt"] is not None


def test_signals_use_customer_clock_time(tenant, store):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    test_clock = create_clock(tenant, JAN_31)
    tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-5", "testClockId": test_clock["id"]})
    order_id = buy(tenant, catalog, "Starter", "clock-5")
    advanced = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": "2026-03-31T10:00:00Z"})
    assert advanced.status_code == 200, advanced.text

    # The real time is months past the clock's, when the March grant has long expired. The
    # signals must draw from it as of the clock's time, without expiring it.
    send_chat_messages(tenant, "clock-5", 3, "clocked")

    assert available(tenant, "clock-5") == Decimal(497)
    march_grant = order_grants(store, order_id)[-1]
    assert march_grant.starts_at == MAR_31
    assert march_grant.remaining == Decimal(497)
    assert expiry_entries(store, march_grant.id) == []
    listed = tenant.http.get("/signals/", params={"externalCustomerId": "clock-5"})
    assert listed.status_code == 200, listed.text
    occurred = sorted(item["createdAt"] for item in listed.json()["data"])
    assert occurred == ["2026-03-31T10:00:00Z"] * 3


def test_grants_and_holds_use_clock_time(tenant):
    test_clock = create_clock(tenant, JAN_31)
    created = tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-h", "testClockId": test_clock["id"]})
    assert created.status_code == 201, created.text
    currency = tenant.http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"})
    assert currency.status_code == 201, currency.text

    grant = tenant.http.post(
        "/customers/external/clock-h/credits/grants", json={"creditCurrencyKey": "chat_credits", "amount": 10}
    )
    assert grant.status_code == 201, grant.text
    assert grant.json()["grant"]["startsAt"] == "2026-01-31T09:30:00Z"
    assert available(tenant, "clock-h") == Decimal(10)

    hold = tenant.http.post(
        "/customers/external/clock-h/credits/holds",
        json={"creditCurrencyKey": "chat_credits", "amount": 4, "ttlSeconds": 60},
    )
    assert hold.status_code == 201, hold.text
    assert hold.json()["expiresAt"] == "2026-01-31T09:31:00Z"
    assert available(tenant, "clock-h") == Decimal(6)
    # Long past at the real time, but the clock has not reached it yet.
    assert tenant.http.get(f"/credits/holds/{hold.json()['holdId']}").json()["status"] == "active"

    released = tenant.http.delete(f"/credits/holds/{hold.json()['holdId']}")
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
    assert available(tenant, "clock-h") == Decimal(10)


def send_signal(tenant, customer: dict, timestamp: datetime, key: str):  # type: ignore[no-untyped-def, type-arg]
    signal = {"eventName": "chat_message", "customer": customer, "timestamp": timestamp.isoformat(), "idempotencyKey": key}
    return tenant.http.post("/signals/bulk", json={"signals": [signal]})


def test_signal_timestamp_limit_follows_clock(tenant, store):
    catalog = create_chat_catalog(tenant, [("Starter", 2900, 500)])
    with frozen(JAN_31):
        test_clock = create_clock(tenant, JAN_31)
        tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-6", "testClockId": test_clock["id"]})
        buy(tenant, catalog, "Starter", "clock-6")
        advanced = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": "2026-03-31T10:00:00Z"})
        assert advanced.status_code == 200, advanced.text
        clock_time = datetime(2026, 3, 31, 10, 0, tzinfo=UTC)
        customer = {"externalCustomerId": "clock-6"}

        # The clock is two months ahead of the real time, and its customer lives at the clock's time.
        at_clock = send_signal(tenant, customer, clock_time, "at-clock")
        within_skew = send_signal(tenant, customer, clock_time + timedelta(minutes=4), "within-skew")
        beyond_skew = send_signal(tenant, customer, clock_time + timedelta(minutes=6), "beyond-skew")

    assert at_clock.status_code == 200, at_clock.text
    assert at_clock.json()["ingested"] == 1
    assert within_skew.status_code == 200, within_skew.text
    assert within_skew.json()["ingested"] == 1
    assert beyond_skew.status_code == 400
    body = beyond_skew.json()
    assert body["code"] == "timestamp_in_future"
    assert body["errors"][0]["field"] == "signals[0].timestamp"
    assert "300 seconds" in body["error"]
    assert "test clock time 2026-03-31T10:00:00Z" in body["error"]
    assert available(tenant, "clock-6") == Decimal(498)
    listed = tenant.http.get("/signals/", params={"externalCustomerId": "clock-6"}).json()["data"]
    assert sorted(item["createdAt"] for item in listed) == ["2026-03-31T10:00:00Z", "2026-03-31T10:04:00Z"]


def test_bulk_timestamp_limit_per_customer(tenant):
    with frozen(JAN_31):
        test_clock = create_clock(tenant, JAN_31)
        clocked = tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-7", "testClockId": test_clock["id"]})
        assert clocked.status_code == 201, clocked.text
        real = tenant.http.post("/customers/", json={"name": "Real time", "externalId": "real-7"})
        assert real.status_code == 201, real.text
        advanced = tenant.http.post(f"/test-clocks/{test_clock['id']}/advance", json={"frozenTime": "2026-03-31T10:00:00Z"})
        assert advanced.status_code == 200, advanced.text
        at_clock = "2026-03-31T10:00:00Z"
        beyond_skew = "2026-03-31T10:06:00Z"
        signals = [
            {"eventName": "e", "customer": {"externalCustomerId": "clock-7"}, "timestamp": at_clock},
            {"eventName": "e", "customer": {"externalCustomerId": "real-7"}, "timestamp": at_clock},
            {"eventName": "e", "customer": {"externalCustomerId": "clock-7"}, "timestamp": beyond_skew},
            {"eventName": "e", "customer": {"externalCustomerId": "new-7"}, "timestamp": at_clock},
            {"eventName": "e", "customer": {"customerId": clocked.json()["id"]}, "timestamp": "2026-03-31T10:02:00Z"},
            {"eventName": "e", "customer": {"customerId": real.json()["id"]}, "timestamp": "2026-01-31T09:32:00Z"},
        ]

        response = tenant.http.post("/signals/bulk", json={"signals": signals})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["ingested"], body["duplicates"], body["failed"]) == (3, 0, 3)
    errors = {error["index"]: error for error in body["errors"]}
    assert sorted(errors) == [1, 2, 3]
    assert {error["code"] for error in errors.values()} == {"timestamp_in_future"}
    assert [errors[index]["field"] for index in (1, 2, 3)] == [
        "signals[1].timestamp",
        "signals[2].timestamp",
        "signals[3].timestamp",
    ]
    assert "server time 2026-01-31T09:30:00Z" in errors[1]["message"]
    assert "test clock time 2026-03-31T10:00:00Z" in errors[2]["message"]
    assert "server time 2026-01-31T09:30:00Z" in errors[3]["message"]
    # A signal that failed creates no customer.
    assert tenant.http.get("/customers/external/new-7").status_code == 404


def test_clock_behind_keeps_real_limit(tenant):
    with frozen(MAR_31):
        test_clock = create_clock(tenant, JAN_31)
        created = tenant.http.post("/customers/", json={"name": "Clocked", "externalId": "clock-8", "testClockId": test_clock["id"]})
        assert created.status_code == 201, created.text

        # The SDK's signal() and OTLP signal spans stamp signals with the real time, even on a clock.
        response = send_signal(tenant, {"externalCustomerId": "clock-8"}, MAR_31 + timedelta(minutes=4), "real-time")
        too_late = send_signal(tenant, {"externalCustomerId": "clock-8"}, MAR_31 + timedelta(minutes=6), "too-late")

    assert response.status_code == 200, response.text
    assert response.json()["ingested"] == 1
    assert too_late.status_code == 400
    message = too_late.json()["error"]
    assert "after the server time" in message
    # Without a timestamp the signal would happen at the clock's time, not at the receipt time.
    assert message.endswith("omit timestamp to use the test clock time")
