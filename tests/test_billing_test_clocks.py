"""Test clocks: customers on a clock renew only when it is advanced, each event as of its time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tallystick.server import clock
from tallystick.server.billing.renewals import renew_due_orders
from tests.billing_helpers import available, buy, create_chat_catalog, load_order, order_grants, order_invoices, order_periods

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
