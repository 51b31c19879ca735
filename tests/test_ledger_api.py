"""Credit balances, grants, pending consumption, transactions and holds over HTTP and paid-python."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, select

from tallystick.server import clock, events
from tallystick.server.ledger import hold_routes, queries, service
from tallystick.server.ledger.schemas import HoldCreate
from tallystick.server.models import OutboxEvent


def make_customer(tenant, external_id: str = "user-1") -> str:  # type: ignore[no-untyped-def]
    response = tenant.http.post("/customers/", json={"name": external_id, "externalId": external_id})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def make_currency(tenant, key: str = "chat_credits", name: str = "Chat Credits") -> str:  # type: ignore[no-untyped-def]
    response = tenant.http.post("/credits/currencies", json={"name": name, "key": key})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post_grant(tenant, path: str, body: dict):  # type: ignore[no-untyped-def]
    return tenant.http.post(f"/customers/{path}/credits/grants", json=body)


def consume(store, tenant, customer_id: str, currency_id: str, amount: str, **kwargs):  # type: ignore[no-untyped-def]
    arguments = {"signal_id": None, "event_name": "chat_message", "product_id": None, "occurred_at": clock.now()}
    arguments.update(kwargs)
    with store.transaction() as session:
        return service.consume(
            session,
            organization_id=tenant.organization_id,
            customer_id=customer_id,
            currency_id=currency_id,
            amount=Decimal(amount),
            **arguments,
        )


def test_grant_and_balance_with_paid_sdk(tenant):
    client = tenant.paid()
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    expires = datetime.now(UTC) + timedelta(days=30)

    granted = client.customers.grant_customer_credits_by_external_id(
        "user-1", credit_currency_key="chat_credits", amount=500.0, expires_at=expires
    )
    client.customers.grant_customer_credits(customer_id, credit_currency_key="chat_credits", amount=0.25)

    assert granted.created is True
    assert granted.customer.id == customer_id
    assert granted.customer.external_id == "user-1"
    assert granted.credit_currency.key == "chat_credits"
    assert granted.credit_currency.name == "Chat Credits"
    assert granted.grant.amount == 500
    assert granted.grant.amount_decimal == "500"
    assert granted.grant.status == "active"
    assert granted.grant.expires_at == expires.replace(microsecond=expires.microsecond)

    [balance] = client.customers.get_customer_credit_balances_by_external_id("user-1").data
    assert balance == client.customers.get_customer_credit_balances(customer_id).data[0]
    assert balance.credits_currency_id == currency_id
    assert balance.currency_key == "chat_credits"
    assert balance.available == 500.25
    assert balance.total == 500.25
    assert balance.used == 0
    assert balance.recipient == "organization"
    assert balance.period_end is None
    assert [grant.total for grant in balance.grants] == [500, 0.25]
    assert balance.grants[0].expires_at == expires
    assert balance.grants[0].is_in_rollover_window is False


def test_balance_after_consumption_and_hold(store, tenant):
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 10})
    consume(store, tenant, customer_id, currency_id, "2.5")
    hold = tenant.http.post(
        "/customers/external/user-1/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 3}
    )
    assert hold.status_code == 201

    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]

    assert balance["available"] == 4.5
    assert balance["availableDecimal"] == "4.5"
    assert balance["usedDecimal"] == "2.5"
    assert balance["totalDecimal"] == "10"
    assert balance["heldDecimal"] == "3"
    assert balance["pendingDecimal"] == "0"
    [grant] = balance["grants"]
    assert grant["availableDecimal"] == "4.5"
    assert grant["usedDecimal"] == "2.5"


def test_grant_amount_kept_exact(tenant):
    make_customer(tenant)
    make_currency(tenant)

    response = tenant.http.post(
        "/customers/external/user-1/credits/grants",
        content=b'{"creditCurrencyKey": "chat_credits", "amount": 123456789.123457}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 201
    assert response.json()["grant"]["amountDecimal"] == "123456789.123457"
    assert response.json()["grant"]["amount"] == 123456789
    [balance] = tenant.http.get("/customers/external/user-1/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "123456789.123457"


GRANT_ERRORS = [
    ({"creditCurrencyKey": "nope", "amount": 5}, "creditCurrencyKey"),
    ({"amount": 5}, "creditCurrencyKey"),
    ({"creditCurrencyKey": "chat_credits"}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": 0}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": -1}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": 0.0000001}, "amount"),
    # Below the smallest exponent of Python's default decimal context, so normalize() gives 0.
    ({"creditCurrencyKey": "chat_credits", "amount": "1e-999999999"}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": "lots"}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": True}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": [0.05]}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": 1e12}, "amount"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "startsAt": "2999-01-01T00:00:00Z"}, "startsAt"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "startsAt": "2026-01-01T00:00:00"}, "startsAt"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "expiresAt": "soon"}, "expiresAt"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "priority": 1.5}, "priority"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "idempotencyKey": ""}, "idempotencyKey"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "idempotencyKey": "k" * 256}, "idempotencyKey"),
    ({"creditCurrencyKey": "chat_credits", "amount": 5, "idempotencyKey": 42}, "idempotencyKey"),
]


@pytest.mark.parametrize(("body", "field"), GRANT_ERRORS)
def test_grant_rejects_bad_input(tenant, body, field):
    make_customer(tenant)
    make_currency(tenant)

    response = post_grant(tenant, "external/user-1", body)

    assert response.status_code == 400
    error = response.json()
    assert field in error["error"]
    assert error["fields"][0]["field"] == field
    assert tenant.http.get("/customers/external/user-1/credits/balances").json() == {"data": []}


def test_grant_past_expiry_echoes_timestamp(tenant):
    make_customer(tenant)
    make_currency(tenant)

    body = {"creditCurrencyKey": "chat_credits", "amount": 5, "expiresAt": "2020-01-01T00:00:00Z"}
    response = post_grant(tenant, "external/user-1", body)

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid expiresAt '2020-01-01T00:00:00Z': must be in the future"
    assert response.json()["fields"][0]["value"] == "2020-01-01T00:00:00Z"


def test_grant_misspelled_key_hinted(tenant):
    # Grant bodies are parsed by the route itself, to keep amounts exact, not by FastAPI.
    make_customer(tenant)
    make_currency(tenant)

    response = post_grant(tenant, "external/user-1", {"creditCurrencyKye": "chat_credits", "amount": 5})

    assert response.status_code == 400
    assert response.json()["error"] == (
        "Invalid creditCurrencyKey: Field required (the body has 'creditCurrencyKye'; did you mean 'creditCurrencyKey'?)"
    )
    assert tenant.http.get("/customers/external/user-1/credits/balances").json()["data"] == []


def test_grant_unit_value_shown(tenant):
    make_customer(tenant)
    make_currency(tenant)

    priced = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 100, "unitValue": "0.05", "priority": 1})
    smallest = tenant.http.post(
        "/customers/external/user-1/credits/grants",
        content=b'{"creditCurrencyKey": "chat_credits", "amount": 1, "unitValue": 0.000000000001, "priority": 2}',
        headers={"Content-Type": "application/json"},
    )
    largest = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 1, "unitValue": 1000000, "priority": 3})
    unpriced = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 1, "priority": 4})
    negative_zero = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 1, "unitValue": "-0", "priority": 5})

    for response in (priced, smallest, largest, unpriced, negative_zero):
        assert response.status_code == 201, response.text
    assert priced.json()["grant"]["unitValue"] == "0.050000000000"
    assert smallest.json()["grant"]["unitValue"] == "0.000000000001"
    assert largest.json()["grant"]["unitValue"] == "1000000.000000000000"
    assert unpriced.json()["grant"]["unitValue"] is None
    assert negative_zero.json()["grant"]["unitValue"] == "0.000000000000"
    [balance] = tenant.http.get("/customers/external/user-1/credits/balances").json()["data"]
    assert [grant["unitValue"] for grant in balance["grants"]] == [
        "0.050000000000", "0.000000000001", "1000000.000000000000", None, "0.000000000000"
    ]  # fmt: skip


# (unitValue as sent in the JSON body, the value as the error message shows it)
# A string that parses as a number is shown as the number that the range checks read.
BAD_UNIT_VALUES = [
    (b"-0.01", "-0.01"),
    (b'"-1"', "-1"),
    (b'"0.0000000000001"', "1e-13"),
    (b"1e-13", "1e-13"),
    # Below the smallest exponent of Python's default decimal context, so normalize() gives 0.
    (b'"1e-999999999"', "1e-999999999"),
    (b"1000000.000000000001", "1000000.000000000001"),
    (b'"1000001"', "1000001"),
    (b'"NaN"', "'NaN'"),
    (b'"Infinity"', "'Infinity'"),
    (b'"five cents"', "'five cents'"),
    (b'""', "''"),
    (b"true", "true"),
    (b"[0.05]", "[0.05]"),
    (b'{"usd": 0.05}', '{"usd": 0.05}'),
]


@pytest.mark.parametrize(("unit_value", "shown"), BAD_UNIT_VALUES)
def test_grant_rejects_bad_unit_value(tenant, unit_value, shown):
    make_customer(tenant)
    make_currency(tenant)
    body = b'{"creditCurrencyKey": "chat_credits", "amount": 5, "idempotencyKey": "pack-1", "unitValue": ' + unit_value + b"}"

    response = tenant.http.post(
        "/customers/external/user-1/credits/grants", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"].startswith(f"Invalid unitValue {shown}: ")
    assert error["fields"][0]["field"] == "unitValue"
    assert tenant.http.get("/customers/external/user-1/credits/balances").json() == {"data": []}
    # The rejected request did not use the idempotency key up.
    retried = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 5, "idempotencyKey": "pack-1"})
    assert retried.status_code == 201, retried.text
    assert retried.json()["created"] is True


def test_grant_key_replay_compares_unit_value(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    valued = {"creditCurrencyKey": "chat_credits", "amount": 100, "unitValue": "0.05", "idempotencyKey": "pack-1"}
    unvalued = {"creditCurrencyKey": "chat_credits", "amount": 10, "idempotencyKey": "promo-1"}
    first_valued = post_grant(tenant, customer_id, valued)
    first_unvalued = post_grant(tenant, customer_id, unvalued)
    assert first_valued.status_code == 201, first_valued.text
    assert first_unvalued.status_code == 201, first_unvalued.text

    # The same value in another spelling, and 0 or null for a grant given none, are the same grant.
    same = [
        post_grant(tenant, customer_id, valued | {"unitValue": "0.050"}),
        post_grant(tenant, customer_id, valued | {"unitValue": 0.05}),
        post_grant(tenant, customer_id, unvalued | {"unitValue": "0"}),
        post_grant(tenant, customer_id, unvalued | {"unitValue": None}),
    ]
    other = [
        post_grant(tenant, customer_id, valued | {"unitValue": "0.06"}),
        post_grant(tenant, customer_id, {key: value for key, value in valued.items() if key != "unitValue"}),
        post_grant(tenant, customer_id, unvalued | {"unitValue": "0.01"}),
    ]

    for response, first in zip(same, [first_valued, first_valued, first_unvalued, first_unvalued], strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["grant"]["id"] == first.json()["grant"]["id"]
        assert response.json()["grant"]["unitValue"] == first.json()["grant"]["unitValue"]
    for response in other:
        assert response.status_code == 400, response.text
        assert response.json()["fields"][0]["field"] == "idempotencyKey"
        assert "unit value" in response.json()["error"]
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "110"
    assert [grant["unitValue"] for grant in balance["grants"]] == ["0.050000000000", None]


def test_grant_retry_with_key_grants_once(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    body = {"creditCurrencyKey": "chat_credits", "amount": 25, "idempotencyKey": "welcome-bonus"}

    first = post_grant(tenant, customer_id, body)
    retried = post_grant(tenant, "external/user-1", body)

    assert first.status_code == 201, first.text
    assert retried.status_code == 200, retried.text
    assert first.json()["created"] is True
    assert retried.json()["created"] is False
    assert retried.json()["grant"]["id"] == first.json()["grant"]["id"]
    assert retried.json()["grant"]["amountDecimal"] == "25"
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "25"
    assert len(balance["grants"]) == 1


def test_grant_key_reused_for_other_grant_rejected(tenant):
    customer_id = make_customer(tenant)
    other_id = make_customer(tenant, "user-2")
    make_currency(tenant)
    first = post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 25, "idempotencyKey": "k1"})
    assert first.status_code == 201, first.text

    other_amount = post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 30, "idempotencyKey": "k1"})
    other_customer = post_grant(tenant, other_id, {"creditCurrencyKey": "chat_credits", "amount": 25, "idempotencyKey": "k1"})

    for response in (other_amount, other_customer):
        assert response.status_code == 400, response.text
        assert response.json()["fields"][0]["field"] == "idempotencyKey"
        assert first.json()["grant"]["id"] in response.json()["error"]
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "25"
    assert tenant.http.get(f"/customers/{other_id}/credits/balances").json() == {"data": []}


def test_grant_key_is_per_organization(tenant, other_tenant):
    for organization in (tenant, other_tenant):
        customer_id = make_customer(organization)
        make_currency(organization)
        response = post_grant(organization, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5, "idempotencyKey": "same"})
        assert response.status_code == 201, response.text
        assert response.json()["created"] is True


@pytest.mark.parametrize("customers", [1, 2], ids=["same-customer", "two-customers"])
def test_parallel_grants_with_one_key_grant_once(tenant, customers):
    customer_ids = [make_customer(tenant, f"user-{index}") for index in range(customers)]
    make_currency(tenant)
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def request_grant(index: int) -> None:
        start.wait()
        customer_id = customer_ids[index % customers]
        response = post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 10, "idempotencyKey": "once"})
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=request_grant, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses.count(201) == 1
    # Requests for the customer that got the grant replay it. Requests for another customer are
    # rejected because the key belongs to a grant to someone else.
    assert statuses.count(200) + statuses.count(400) == 7
    if customers == 1:
        assert statuses.count(200) == 7
    granted = [
        balance["availableDecimal"]
        for customer_id in customer_ids
        for balance in tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    ]
    assert granted == ["10"]


def test_grant_rejects_non_json_body(tenant):
    make_customer(tenant)

    response = tenant.http.post(
        "/customers/external/user-1/credits/grants",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"


@pytest.mark.parametrize(("content", "shown"), [(b"[]", "Invalid body []: "), (b"", "Invalid body: ")])
def test_grant_body_must_be_object(tenant, content: bytes, shown: str):  # type: ignore[no-untyped-def]
    make_customer(tenant)

    response = tenant.http.post(
        "/customers/external/user-1/credits/grants", content=content, headers={"Content-Type": "application/json"}
    )
    customer_route = tenant.http.post("/customers/", content=b"[]", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert response.json()["error"] == f"{shown}must be a JSON object"
    assert response.json()["fields"][0]["field"] == "body"
    # Routes that FastAPI parses reject a list body with the same error.
    assert customer_route.json()["code"] == "validation_error"
    assert customer_route.json()["error"] == "Invalid body []: must be a JSON object"


def test_hold_amount_object_message(tenant):
    make_customer(tenant)
    make_currency(tenant)

    response = tenant.http.post(
        "/customers/external/user-1/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": {}}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid amount {}: must be a number, or a string that holds one"


def test_grant_rejects_archived_currency(tenant):
    make_customer(tenant)
    currency_id = make_currency(tenant)
    assert tenant.http.put(f"/credits/currencies/{currency_id}", json={"status": "archived"}).status_code == 200

    response = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "chat_credits", "amount": 5})

    assert response.status_code == 400
    assert "archived" in response.json()["error"]


def test_other_organization_customer_not_found(tenant, other_tenant):
    customer_id = make_customer(tenant)
    make_currency(other_tenant)
    grant_body = {"creditCurrencyKey": "chat_credits", "amount": 5}

    responses = [
        other_tenant.http.get(f"/customers/{customer_id}/credits/balances"),
        other_tenant.http.get("/customers/external/user-1/credits/balances"),
        other_tenant.http.post(f"/customers/{customer_id}/credits/grants", json=grant_body),
        other_tenant.http.post("/customers/external/user-1/credits/grants", json=grant_body),
        other_tenant.http.get(f"/customers/{customer_id}/credits/pending-consumption"),
        other_tenant.http.get("/customers/external/user-1/credits/pending-consumption"),
        other_tenant.http.post(f"/customers/{customer_id}/credits/holds", json=grant_body),
    ]

    assert [response.status_code for response in responses] == [404] * len(responses)
    assert all(response.json()["code"] == "not_found" for response in responses)


def test_other_organization_currency_key_rejected(tenant, other_tenant):
    make_customer(tenant)
    make_currency(other_tenant, key="gold")

    response = post_grant(tenant, "external/user-1", {"creditCurrencyKey": "gold", "amount": 5})

    assert response.status_code == 400
    assert "gold" in response.json()["error"]


def test_pending_consumption_with_paid_sdk(store, tenant):
    client = tenant.paid()
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    occurred = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    consume(store, tenant, customer_id, currency_id, "1.5", signal_id="sig_one", occurred_at=occurred)
    consume(store, tenant, customer_id, currency_id, "2", signal_id="sig_two", occurred_at=occurred + timedelta(hours=1))

    by_external_id = client.customers.list_customer_pending_credit_consumption_by_external_id("user-1")
    by_id = client.customers.list_customer_pending_credit_consumption(customer_id, limit=1, offset=1)

    assert [row.credits_decimal for row in by_external_id.data] == ["1.5", "2"]
    assert [row.credits for row in by_external_id.data] == [1, 2]
    first = by_external_id.data[0]
    assert first.event_name == "chat_message"
    assert first.occurred_at == occurred
    assert first.credit_currency.key == "chat_credits"
    assert by_external_id.pagination.total == 2
    assert [row.credits_decimal for row in by_id.data] == ["2"]
    assert by_id.pagination.has_more is False

    client.customers.grant_customer_credits(customer_id, credit_currency_key="chat_credits", amount=2)

    remaining = client.customers.list_customer_pending_credit_consumption(customer_id)
    assert [row.credits_decimal for row in remaining.data] == ["1.5"]
    assert remaining.data[0].model_extra["amountDecimal"] == "2"


def test_transactions_with_paid_sdk(store, tenant):
    client = tenant.paid()
    customer_id = make_customer(tenant)
    other_customer_id = make_customer(tenant, "user-2")
    currency_id = make_currency(tenant)
    make_currency(tenant, key="image_credits", name="Image Credits")
    client.customers.grant_customer_credits(customer_id, credit_currency_key="chat_credits", amount=10)
    client.customers.grant_customer_credits(other_customer_id, credit_currency_key="image_credits", amount=3)
    consume(store, tenant, customer_id, currency_id, "0.75", signal_id="sig_a", order_id="ord_1")

    listed = client.credits.list_credit_transactions()
    spends = client.credits.list_credit_transactions(type="spend")
    for_customer = client.credits.list_credit_transactions(external_customer_id="user-1")
    for_currency = client.credits.list_credit_transactions(credit_currency_key="image_credits")
    by_currency_id = client.credits.list_credit_transactions(credits_currency_id=currency_id, customer_id=customer_id)
    for_order = client.credits.list_credit_transactions(order_id="ord_1")
    pending_grants = client.credits.list_credit_transactions(type="pendingGrant")
    today = datetime.now(UTC).date().isoformat()
    dated = client.credits.list_credit_transactions(created_at_from=today, created_at_to=today)
    earlier = client.credits.list_credit_transactions(created_at_to="2001-01-01")

    assert [item.type for item in listed.data] == ["spend", "grant", "grant"]
    assert listed.pagination.total == 3
    [spend] = spends.data
    assert spend.amount == "-0.75"
    assert spend.signal_id == "sig_a"
    assert spend.event_name == "chat_message"
    assert spend.order_id == "ord_1"
    assert spend.origin_code == "manual"
    assert spend.customer.external_id == "user-1"
    assert spend.credit_currency.key == "chat_credits"
    assert [item.amount for item in for_customer.data] == ["-0.75", "10"]
    assert [item.amount for item in for_currency.data] == ["3"]
    assert len(by_currency_id.data) == 2
    assert [item.id for item in for_order.data] == [spend.id]
    assert pending_grants.data == []
    assert dated.pagination.total == 3
    assert earlier.pagination.total == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [("type=refund", "type"), ("createdAtFrom=yesterday", "createdAtFrom"), ("limit=0", "limit")],
)
def test_transactions_reject_bad_filters(tenant, query, field):
    response = tenant.http.get(f"/credits/transactions?{query}")

    assert response.status_code == 400
    assert field in response.json()["error"]


def test_transactions_external_id_skips_deleted_customer(tenant):
    make_currency(tenant)
    deleted_id = make_customer(tenant)
    assert post_grant(tenant, deleted_id, {"creditCurrencyKey": "chat_credits", "amount": 10}).status_code == 201
    assert tenant.http.delete(f"/customers/{deleted_id}").status_code == 200
    live_id = make_customer(tenant)
    assert post_grant(tenant, live_id, {"creditCurrencyKey": "chat_credits", "amount": 4}).status_code == 201

    resolved = tenant.http.get("/customers/external/user-1").json()
    by_external_id = tenant.http.get("/credits/transactions", params={"externalCustomerId": "user-1"}).json()
    by_deleted_id = tenant.http.get("/credits/transactions", params={"customerId": deleted_id}).json()
    both_filters = tenant.http.get(
        "/credits/transactions", params={"externalCustomerId": "user-1", "customerId": deleted_id}
    ).json()

    assert resolved["id"] == live_id
    assert [item["customer"]["id"] for item in by_external_id["data"]] == [live_id]
    assert [item["amount"] for item in by_external_id["data"]] == ["4"]
    assert by_external_id["pagination"]["total"] == 1
    # The deleted customer's ledger history stays readable by its customer id.
    assert [item["amount"] for item in by_deleted_id["data"]] == ["10"]
    assert both_filters["data"] == []


def test_transactions_external_id_without_live_customer(tenant):
    client = tenant.paid()
    make_currency(tenant)
    deleted_id = make_customer(tenant)
    assert post_grant(tenant, deleted_id, {"creditCurrencyKey": "chat_credits", "amount": 10}).status_code == 201
    assert tenant.http.delete(f"/customers/{deleted_id}").status_code == 200

    deleted_only = tenant.http.get("/credits/transactions", params={"externalCustomerId": "user-1"})
    unknown = tenant.http.get("/credits/transactions", params={"externalCustomerId": "nobody"})
    with_sdk = client.credits.list_credit_transactions(external_customer_id="user-1")

    assert deleted_only.status_code == 200
    assert deleted_only.json()["data"] == []
    assert deleted_only.json()["pagination"]["total"] == 0
    assert unknown.status_code == 200
    assert unknown.json()["data"] == []
    assert unknown.json()["pagination"]["total"] == 0
    assert with_sdk.data == []


def test_transactions_scoped_to_organization(tenant, other_tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})

    mine = tenant.http.get("/credits/transactions").json()
    theirs = other_tenant.http.get(f"/credits/transactions?customerId={customer_id}").json()

    assert mine["pagination"]["total"] == 1
    assert theirs["data"] == []


def test_customer_state_lists_credit_balances(store, tenant):
    client = tenant.paid()
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    client.customers.grant_customer_credits(customer_id, credit_currency_key="chat_credits", amount=7)
    consume(store, tenant, customer_id, currency_id, "2")

    state = client.customers.get_customer_state_by_external_id("user-1")

    [balance] = state.credits.balances
    assert balance.credits_currency_id == currency_id
    assert balance.currency_key == "chat_credits"
    assert balance.currency_name == "Chat Credits"
    assert balance.balance == 5
    assert client.customers.get_customer_state_by_id(customer_id).credits == state.credits


def test_hold_lifecycle_over_http(store, tenant):
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})

    placed = tenant.http.post(
        f"/customers/{customer_id}/credits/holds",
        json={"creditCurrencyKey": "chat_credits", "amount": 4, "ttlSeconds": 120},
    )
    denied = tenant.http.post(
        "/customers/external/user-1/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 2}
    )

    assert placed.status_code == 201
    assert placed.json()["allowed"] is True
    assert placed.json()["availableDecimal"] == "1"
    hold_id = placed.json()["holdId"]
    assert denied.status_code == 200
    assert denied.json()["allowed"] is False
    assert denied.json()["holdId"] is None
    assert denied.json()["available"] == 1

    shown = tenant.http.get(f"/credits/holds/{hold_id}").json()
    assert shown["status"] == "active"
    assert shown["reservedDecimal"] == "4"

    consume(store, tenant, customer_id, currency_id, "3", signal_id="sig_h", hold_id=hold_id)

    settled = tenant.http.get(f"/credits/holds/{hold_id}").json()
    assert settled["status"] == "settled"
    assert settled["settledSignalId"] == "sig_h"
    released = tenant.http.delete(f"/credits/holds/{hold_id}")
    assert released.status_code == 200
    assert released.json()["status"] == "settled"
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "2"


def test_placed_hold_returns_id(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})

    placed = tenant.http.post(
        f"/customers/{customer_id}/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 4}
    ).json()
    denied = tenant.http.post(
        f"/customers/{customer_id}/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 4}
    ).json()
    fetched = tenant.http.get(f"/credits/holds/{placed['id']}")

    assert placed["id"] is not None
    assert placed["holdId"] == placed["id"]
    assert fetched.status_code == 200
    assert fetched.json()["id"] == placed["id"]
    assert denied["allowed"] is False
    assert denied["id"] is None
    assert denied["holdId"] is None


def test_hold_release_frees_credits(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    hold_id = tenant.http.post(
        f"/customers/{customer_id}/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 5}
    ).json()["holdId"]

    released = tenant.http.delete(f"/credits/holds/{hold_id}")

    assert released.json()["status"] == "released"
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "5"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"creditCurrencyKey": "chat_credits", "amount": 1, "ttlSeconds": 0}, "ttlSeconds"),
        ({"creditCurrencyKey": "chat_credits", "amount": 1, "ttlSeconds": 86401}, "ttlSeconds"),
        ({"creditCurrencyKey": "chat_credits", "amount": 0}, "amount"),
        ({"creditCurrencyKey": "chat_credits", "amount": 0.0000000001}, "amount"),
        ({"creditCurrencyKey": "chat_credits", "amount": "1e-999999999"}, "amount"),
        ({"creditCurrencyKey": "missing", "amount": 1}, "creditCurrencyKey"),
        ({"creditCurrencyKey": "chat_credits", "amount": 1, "idempotencyKey": ""}, "idempotencyKey"),
        ({"creditCurrencyKey": "chat_credits", "amount": 1, "idempotencyKey": "k" * 256}, "idempotencyKey"),
        ({"creditCurrencyKey": "chat_credits", "amount": 1, "idempotencyKey": 42}, "idempotencyKey"),
    ],
)
def test_hold_rejects_bad_input(tenant, body, field):
    customer_id = make_customer(tenant)
    make_currency(tenant)

    response = tenant.http.post(f"/customers/{customer_id}/credits/holds", json=body)

    assert response.status_code == 400
    assert field in response.json()["error"]


def test_hold_needs_live_customer_currency(tenant, other_tenant):
    hold = {"creditCurrencyKey": "chat_credits", "amount": 1}
    make_currency(other_tenant)
    deleted_id = make_customer(tenant, "gone")
    assert tenant.http.delete(f"/customers/{deleted_id}").status_code == 200
    customer_id = make_customer(tenant)

    unknown_id = tenant.http.post("/customers/cus_missing/credits/holds", json=hold)
    unknown_external = tenant.http.post("/customers/external/nobody/credits/holds", json=hold)
    deleted = tenant.http.post("/customers/external/gone/credits/holds", json=hold)
    # The key exists only in the other organization.
    foreign_currency = tenant.http.post(f"/customers/{customer_id}/credits/holds", json=hold)
    currency_id = make_currency(tenant)
    assert tenant.http.put(f"/credits/currencies/{currency_id}", json={"status": "archived"}).status_code == 200
    archived = tenant.http.post("/customers/external/user-1/credits/holds", json=hold)

    assert (unknown_id.status_code, unknown_id.json()["error"]) == (404, "Customer with id 'cus_missing' not found")
    assert unknown_external.status_code == 404
    assert unknown_external.json()["error"] == "Customer with externalId 'nobody' not found"
    assert deleted.status_code == 404
    assert foreign_currency.status_code == 400
    assert foreign_currency.json()["fields"][0]["message"] == "no credit currency with this key"
    assert archived.status_code == 400
    assert archived.json()["fields"][0]["message"] == "the credit currency is archived"


def test_hold_without_account_is_denied(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    hold = {"creditCurrencyKey": "chat_credits", "amount": 1}

    # The first hold creates the customer's credit account, the second finds it.
    first = tenant.http.post(f"/customers/{customer_id}/credits/holds", json=hold)
    second = tenant.http.post("/customers/external/user-1/credits/holds", json=hold)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 1})
    third = tenant.http.post("/customers/external/user-1/credits/holds", json=hold)

    assert (first.status_code, first.json()["allowed"], first.json()["available"]) == (200, False, 0)
    assert (second.status_code, second.json()["allowed"]) == (200, False)
    assert (third.status_code, third.json()["allowed"], third.json()["available"]) == (201, True, 0)


def test_holds_record_low_and_depleted_events(store, tenant):
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    assert tenant.http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json={"threshold": "3"}).status_code == 200

    def place(amount: int) -> dict:
        response = tenant.http.post(
            "/customers/external/user-1/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": amount}
        )
        assert response.status_code == 201, response.text
        return response.json()

    place(1)  # 5 -> 4: above the threshold
    crossing = place(2)  # 4 -> 2: crosses 3
    place(1)  # 2 -> 1: already below
    emptying = place(1)  # 1 -> 0: depleted

    with store.transaction() as session:
        recorded = session.scalars(
            select(OutboxEvent).where(OutboxEvent.organization_id == tenant.organization_id).order_by(OutboxEvent.id)
        ).all()
        seen = [(event.event_type, event.payload) for event in recorded]
    low = [payload for event_type, payload in seen if event_type == events.CREDITS_LOW]
    depleted = [payload for event_type, payload in seen if event_type == events.CREDITS_DEPLETED]
    assert crossing["availableDecimal"] == "2"
    assert [(item["available"], item["threshold"], item["externalCustomerId"]) for item in low] == [("2", "3", "user-1")]
    assert [(item["cause"], item["holdId"]) for item in depleted] == [("hold", emptying["holdId"])]


def test_hold_of_other_organization_not_found(tenant, other_tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    hold_id = tenant.http.post(
        f"/customers/{customer_id}/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 1}
    ).json()["holdId"]

    assert other_tenant.http.get(f"/credits/holds/{hold_id}").status_code == 404
    assert other_tenant.http.delete(f"/credits/holds/{hold_id}").status_code == 404
    assert tenant.http.get(f"/credits/holds/{hold_id}").json()["status"] == "active"


def test_parallel_holds_share_no_credit(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 3})
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def request_hold() -> None:
        start.wait()
        response = tenant.http.post(
            f"/customers/{customer_id}/credits/holds", json={"creditCurrencyKey": "chat_credits", "amount": 1}
        )
        with lock:
            results.append(response.json()["allowed"])

    threads = [threading.Thread(target=request_hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results.count(True) == 3
    assert results.count(False) == 5
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    assert balance["availableDecimal"] == "0"
    assert balance["heldDecimal"] == "3"


def post_hold(tenant, path: str, body: dict):  # type: ignore[no-untyped-def]
    return tenant.http.post(f"/customers/{path}/credits/holds", json=body)


def held_balance(tenant, customer_id: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Return the customer's (availableDecimal, heldDecimal) in its only credit currency."""
    [balance] = tenant.http.get(f"/customers/{customer_id}/credits/balances").json()["data"]
    return balance["availableDecimal"], balance["heldDecimal"]


def test_hold_retry_with_key_reserves_once(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    body = {"creditCurrencyKey": "chat_credits", "amount": 2, "ttlSeconds": 120, "idempotencyKey": "call-1"}

    first = post_hold(tenant, customer_id, body)
    retried = post_hold(tenant, "external/user-1", body)

    assert first.status_code == 201, first.text
    assert retried.status_code == 201, retried.text
    assert retried.json()["allowed"] is True
    assert retried.json()["holdId"] == first.json()["holdId"]
    assert retried.json()["expiresAt"] == first.json()["expiresAt"]
    assert retried.json()["amountDecimal"] == "2"
    assert retried.json()["availableDecimal"] == "3"
    assert held_balance(tenant, customer_id) == ("3", "2")


@pytest.mark.parametrize("ending", ["released", "settled"])
def test_hold_key_replayed_after_hold_ended(store, tenant, ending):
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    body = {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "call-1"}
    first = post_hold(tenant, customer_id, body)
    hold_id = first.json()["holdId"]
    if ending == "released":
        assert tenant.http.delete(f"/credits/holds/{hold_id}").status_code == 200
    else:
        consume(store, tenant, customer_id, currency_id, "1", signal_id="sig_k", hold_id=hold_id)
    before = held_balance(tenant, customer_id)

    retried = post_hold(tenant, customer_id, body)

    assert retried.status_code == 201, retried.text
    assert retried.json()["allowed"] is True
    assert retried.json()["holdId"] == hold_id
    assert retried.json()["availableDecimal"] == before[0]
    assert tenant.http.get(f"/credits/holds/{hold_id}").json()["status"] == ending
    assert held_balance(tenant, customer_id) == before
    assert before == (("5", "0") if ending == "released" else ("4", "0"))


def test_hold_key_replayed_after_currency_archived(tenant):
    customer_id = make_customer(tenant)
    currency_id = make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    body = {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "call-1"}
    first = post_hold(tenant, customer_id, body)
    assert tenant.http.put(f"/credits/currencies/{currency_id}", json={"status": "archived"}).status_code == 200

    retried = post_hold(tenant, customer_id, body)
    new_key = post_hold(tenant, customer_id, body | {"idempotencyKey": "call-2"})

    assert retried.status_code == 201, retried.text
    assert retried.json()["holdId"] == first.json()["holdId"]
    assert new_key.status_code == 400
    assert new_key.json()["fields"][0]["message"] == "the credit currency is archived"


def test_expired_hold_reads_with_end_time(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    placed = post_hold(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 2, "ttlSeconds": 60})
    hold_id = placed.json()["holdId"]

    clock.freeze(clock.now() + timedelta(seconds=61))
    try:
        read_before_sweep = tenant.http.get(f"/credits/holds/{hold_id}").json()
        released = tenant.http.delete(f"/credits/holds/{hold_id}").json()
    finally:
        clock.freeze(None)

    # Read before any write swept it, and after the release request swept it: the same fields.
    assert (read_before_sweep["status"], read_before_sweep["endedAt"]) == ("expired", placed.json()["expiresAt"])
    assert (released["status"], released["endedAt"]) == ("expired", placed.json()["expiresAt"])


def test_hold_error_shows_json_values(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)

    response = post_hold(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": True})

    assert response.status_code == 400
    assert response.json()["error"].startswith("Invalid amount true:")
    assert response.json()["fields"][0]["value"] is True


# Raw bodies, so that each number reaches the server spelled as written here. The grant and
# hold bodies are read with an exact decimal parser, which keeps 1.5 a Decimal.
NUMBER_ERRORS = [
    ("holds", b'{"creditCurrencyKey": "chat_credits", "amount": 1, "ttlSeconds": 1.5}',
     "Invalid ttlSeconds 1.5: Input should be a valid integer"),
    ("holds", b'{"creditCurrencyKey": "chat_credits", "amount": 1, "ttlSeconds": 10.0}',
     "Invalid ttlSeconds 10.0: Input should be a valid integer"),
    ("holds", b'{"creditCurrencyKey": "chat_credits", "amount": 1, "ttlSeconds": 100000}',
     "Invalid ttlSeconds 100000: must be between 1 and 86400 seconds"),
    ("holds", b'{"creditCurrencyKey": "chat_credits", "amount": 1, "ttlSeconds": "5"}',
     "Invalid ttlSeconds '5': Input should be a valid integer"),
    ("holds", b'{"creditCurrencyKey": "chat_credits", "amount": -1.5}',
     "Invalid amount -1.5: must be greater than 0"),
    ("holds", b'{"creditCurrencyKey": "chat_credits", "amount": 1.5e-12}',
     "Invalid amount 1.5e-12: must have at most 9 decimal places"),
    ("grants", b'{"creditCurrencyKey": "chat_credits", "amount": "abc"}',
     "Invalid amount 'abc': Input should be a valid decimal"),
    ("grants", b'{"creditCurrencyKey": "chat_credits", "amount": 0.0000001}',
     "Invalid amount 1e-7: must have at most 6 decimal places"),
    ("grants", b'{"creditCurrencyKey": "chat_credits", "amount": 12345678901234567890123456789}',
     "Invalid amount 12345678901234567890123456789: must be at most 1000000000 credits"),
    ("grants", b'{"creditCurrencyKey": "chat_credits", "amount": 5, "priority": 1.5}',
     "Invalid priority 1.5: Input should be a valid integer"),
]


@pytest.mark.parametrize(("route", "body", "message"), NUMBER_ERRORS)
def test_error_shows_number_as_sent(tenant, route, body, message):
    customer_id = make_customer(tenant)
    make_currency(tenant)

    response = tenant.http.post(
        f"/customers/{customer_id}/credits/{route}", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == message
    assert tenant.http.get(f"/customers/{customer_id}/credits/balances").json() == {"data": []}


def test_error_shows_huge_exponent_as_json(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)

    # A text/plain body skips the server's JSON check, which rejects 1e400 as out of a float's
    # range, so the exact parser reads 1e400 as a Decimal and the amount check rejects it.
    response = tenant.http.post(
        f"/customers/{customer_id}/credits/holds",
        content=b'{"creditCurrencyKey": "chat_credits", "amount": 1e400}',
        headers={"Content-Type": "text/plain"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid amount 1e+400: must be at most 1000000000 credits"


def test_hold_key_reuse_rejected(tenant):
    customer_id = make_customer(tenant)
    other_id = make_customer(tenant, "user-2")
    make_currency(tenant)
    for granted in (customer_id, other_id):
        post_grant(tenant, granted, {"creditCurrencyKey": "chat_credits", "amount": 5})
    first = post_hold(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "k1"})
    assert first.status_code == 201, first.text

    other_amount = post_hold(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 3, "idempotencyKey": "k1"})
    other_customer = post_hold(tenant, other_id, {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "k1"})

    for response in (other_amount, other_customer):
        assert response.status_code == 400, response.text
        assert response.json()["fields"][0]["field"] == "idempotencyKey"
        assert first.json()["holdId"] in response.json()["error"]
    assert held_balance(tenant, customer_id) == ("3", "2")
    assert held_balance(tenant, other_id) == ("5", "0")


def test_hold_key_is_per_organization(tenant, other_tenant):
    hold_ids = []
    for organization in (tenant, other_tenant):
        customer_id = make_customer(organization)
        make_currency(organization)
        post_grant(organization, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
        body = {"creditCurrencyKey": "chat_credits", "amount": 1, "idempotencyKey": "same"}
        placed = post_hold(organization, customer_id, body)
        retried = post_hold(organization, customer_id, body)
        assert placed.status_code == 201, placed.text
        assert retried.json()["holdId"] == placed.json()["holdId"]
        assert held_balance(organization, customer_id) == ("4", "1")
        hold_ids.append(placed.json()["holdId"])

    assert hold_ids[0] != hold_ids[1]


def test_denied_hold_leaves_key_free(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 1})
    body = {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "call-1"}

    denied = post_hold(tenant, customer_id, body)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 4})
    allowed = post_hold(tenant, customer_id, body)
    replayed = post_hold(tenant, customer_id, body)

    assert denied.status_code == 200, denied.text
    assert denied.json()["allowed"] is False
    assert denied.json()["holdId"] is None
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["allowed"] is True
    assert replayed.status_code == 201, replayed.text
    assert replayed.json()["holdId"] == allowed.json()["holdId"]
    assert held_balance(tenant, customer_id) == ("3", "2")


def test_parallel_keyed_holds_hold_once(tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    responses: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def request_hold() -> None:
        start.wait()
        response = post_hold(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "once"})
        with lock:
            responses.append((response.status_code, response.json().get("holdId")))

    threads = [threading.Thread(target=request_hold) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in responses] == [201] * 8
    assert len({hold_id for _, hold_id in responses}) == 1
    assert held_balance(tenant, customer_id) == ("3", "2")


def test_hold_key_conflict_replays_winner(store, tenant, monkeypatch):
    # Makes the race deterministic: the request's key lookup misses a hold that another request
    # with the same key has already stored, so the unique index rejects this request's insert.
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    body = {"creditCurrencyKey": "chat_credits", "amount": 2, "idempotencyKey": "race"}
    winner = post_hold(tenant, customer_id, body)
    assert winner.status_code == 201, winner.text
    find_by_key = queries.find_hold_by_idempotency_key
    lookups: list[str] = []

    def miss_first_lookup(session, organization_id, key):  # type: ignore[no-untyped-def]
        lookups.append(key)
        return None if len(lookups) == 1 else find_by_key(session, organization_id, key)

    monkeypatch.setattr(queries, "find_hold_by_idempotency_key", miss_first_lookup)

    result = hold_routes._write_hold(
        store, tenant.organization_id, HoldCreate.model_validate(body), customer_id=customer_id, external_id=None
    )

    assert lookups == ["race", "race"]
    assert result.allowed is True
    assert result.hold is not None
    assert result.hold.id == winner.json()["holdId"]
    assert held_balance(tenant, customer_id) == ("3", "2")


def hold_statements(store, tenant, customer_id: str, body: dict) -> list[str]:  # type: ignore[no-untyped-def]
    """Place a hold directly and return the statements it sent."""
    statements: list[str] = []
    # The server's background jobs share the engine, so only this thread's statements count.
    this_thread = threading.get_ident()

    def record(connection, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if threading.get_ident() == this_thread:
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        result = hold_routes._write_hold(
            store, tenant.organization_id, HoldCreate.model_validate(body), customer_id=customer_id, external_id=None
        )
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert result.allowed is True
    return statements


def test_unkeyed_hold_skips_key_lookup(store, tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})

    without_key = hold_statements(store, tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 1})
    with_key = hold_statements(
        store, tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 1, "idempotencyKey": "k1"}
    )

    assert len(with_key) == len(without_key) + 1


def test_hold_loads_grants_and_holds_together(store, tenant):
    customer_id = make_customer(tenant)
    make_currency(tenant)
    post_grant(tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 5})
    hold_statements(store, tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 1})

    statements = hold_statements(store, tenant, customer_id, {"creditCurrencyKey": "chat_credits", "amount": 1})

    # The lock with the customer and currency lookup, the account's grants and holds, the insert
    # (SQLite's BEGIN IMMEDIATE aside).
    assert len([statement for statement in statements if not statement.startswith("BEGIN")]) == 3
    assert sum("credit_holds" in statement and "credit_grants" in statement for statement in statements) == 1


def test_credit_routes_accept_trailing_slash(tenant):
    customer_id = make_customer(tenant)

    assert tenant.http.get(f"/customers/{customer_id}/credits/balances/").status_code == 200
    assert tenant.http.get("/credits/transactions/").status_code == 200


def test_openapi_documents_holds(tenant):
    document = tenant.http.get(tenant.server.root + "/openapi.json").json()

    operation = document["paths"]["/api/v2/customers/{customer_id}/credits/holds"]["post"]
    assert "holdId" in operation["description"]
    placed_schema = document["components"]["schemas"]["HoldPlacedOut"]
    assert {"id", "holdId"} <= set(placed_schema["properties"])
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "creditCurrencyKey" in body_schema["properties"]


def test_openapi_lists_grant_replay_status(tenant):
    document = tenant.http.get(tenant.http.base_url.copy_with(path="/openapi.json")).json()

    for path in ("/api/v2/customers/{customer_id}/credits/grants", "/api/v2/customers/external/{external_id}/credits/grants"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"200", "201"} <= set(responses), path
        assert responses["200"]["content"]["application/json"]["schema"] == responses["201"]["content"]["application/json"]["schema"]
