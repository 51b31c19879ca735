"""POST /signals/bulk, GET /signals/ and GET /signals/{id} over HTTP, on SQLite and PostgreSQL.

The factories at the top are shared by the other signal test modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from tallystick.server import clock
from tallystick.server.ids import new_id
from tallystick.server.ledger import service as ledger
from tallystick.server.models import (
    CreditCurrency,
    Customer,
    PendingConsumption,
    Product,
    ProductAttribute,
    Signal,
)

# Factories


@dataclass(frozen=True)
class Catalog:
    organization_id: str
    currency_id: str
    product_id: str
    line_id: str


def create_catalog(
    store: Any,
    organization_id: str,
    *,
    external_product_id: str = "chatbot",
    event_name: str = "chat_message",
    credit_cost: str | None = "1",
    pricing: dict[str, Any] | None = None,
    currency_id: str | None = None,
) -> Catalog:
    """Create a credit currency (unless given) and a product with one prepaid-credits line.

    `pricing` replaces the line's pricing object; its pricingType decides the line's type.
    """
    with store.transaction() as session:
        if currency_id is None:
            currency = CreditCurrency(
                id=new_id("credit_currency"), organization_id=organization_id, name="Chat Credits", key="chat_credits"
            )
            session.add(currency)
            session.flush()
            currency_id = currency.id
        product = Product(
            id=new_id("product"), organization_id=organization_id, external_id=external_product_id, name="ChatBot"
        )
        session.add(product)
        session.flush()
        if pricing is None:
            pricing = {
                "pricingType": "UsagePrepaidCredits",
                "eventName": event_name,
                "creditsCurrencyId": currency_id,
                "creditCost": float(credit_cost) if credit_cost is not None else None,
            }
        line = ProductAttribute(
            id=new_id("product_attribute"),
            organization_id=organization_id,
            product_id=product.id,
            name=event_name,
            pricing=pricing,
            pricing_type=pricing["pricingType"],
            event_name=event_name,
            credits_currency_id=currency_id,
            credit_cost=Decimal(credit_cost) if credit_cost is not None else None,
        )
        session.add(line)
        session.flush()
        return Catalog(organization_id, currency_id, product.id, line.id)


def customer_id_of(store: Any, organization_id: str, external_id: str) -> str | None:
    with store.read_sessions() as session:
        return session.scalar(
            select(Customer.id).where(
                Customer.organization_id == organization_id,
                Customer.external_id == external_id,
                Customer.deleted_at.is_(None),
            )
        )


def create_customer(store: Any, organization_id: str, external_id: str) -> str:
    with store.transaction() as session:
        customer = Customer(
            id=new_id("customer"), organization_id=organization_id, external_id=external_id, name=external_id
        )
        session.add(customer)
        session.flush()
        return customer.id


def grant_credits(store: Any, catalog: Catalog, customer_id: str, amount: str) -> None:
    with store.transaction() as session:
        ledger.grant(
            session,
            organization_id=catalog.organization_id,
            customer_id=customer_id,
            currency_id=catalog.currency_id,
            amount=Decimal(amount),
        )


def available_credits(store: Any, catalog: Catalog, customer_id: str) -> Decimal:
    with store.read_sessions() as session:
        return ledger.balance(session, catalog.organization_id, customer_id, catalog.currency_id, clock.now())


def pending_credits(store: Any, catalog: Catalog, customer_id: str) -> Decimal:
    with store.read_sessions() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(PendingConsumption.remaining), 0)).where(
                PendingConsumption.organization_id == catalog.organization_id,
                PendingConsumption.customer_id == customer_id,
            )
        )
        return Decimal(total)


def stored_signals(store: Any, organization_id: str) -> list[Signal]:
    with store.read_sessions() as session:
        return list(
            session.scalars(
                select(Signal).where(Signal.organization_id == organization_id).order_by(Signal.occurred_at)
            )
        )


def chat_message(external_customer_id: str = "user-1", **extra: Any) -> dict[str, Any]:
    signal: dict[str, Any] = {
        "eventName": "chat_message",
        "customer": {"externalCustomerId": external_customer_id},
        "attribution": {"externalProductId": "chatbot"},
    }
    signal.update(extra)
    return signal


def send(tenant: Any, *signals: dict[str, Any]) -> Any:
    return tenant.http.post("/signals/bulk", json={"signals": list(signals)})


# Ingestion and rating


def test_chat_message_consumes_one_credit(tenant, store):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")

    response = send(tenant, chat_message(data={"chars": 12}), chat_message())

    assert response.status_code == 200
    body = response.json()
    assert body == {"ingested": 2, "duplicates": 0, "failed": 0, "errors": [], "warnings": []}
    assert available_credits(store, catalog, customer_id) == Decimal(8)
    signals = stored_signals(store, tenant.organization_id)
    assert [signal.credits_consumed for signal in signals] == [Decimal(1), Decimal(1)]
    assert [signal.credits_pending for signal in signals] == [Decimal(0), Decimal(0)]
    assert {signal.credit_currency_id for signal in signals} == {catalog.currency_id}
    assert {signal.product_attribute_id for signal in signals} == {catalog.line_id}


def test_uncovered_credits_become_pending(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="2.5")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "3")

    assert send(tenant, chat_message(), chat_message()).json()["ingested"] == 2

    signals = stored_signals(store, tenant.organization_id)
    consumed = sorted(signal.credits_consumed for signal in signals)
    pending = sorted(signal.credits_pending for signal in signals)
    assert consumed == [Decimal("0.5"), Decimal("2.5")]
    assert pending == [Decimal(0), Decimal(2)]
    assert available_credits(store, catalog, customer_id) == Decimal(0)
    assert pending_credits(store, catalog, customer_id) == Decimal(2)


def test_unknown_external_customer_is_created(tenant, store):
    create_catalog(store, tenant.organization_id)

    response = send(tenant, chat_message("new-user"))

    assert response.json()["ingested"] == 1
    customer_id = customer_id_of(store, tenant.organization_id, "new-user")
    assert customer_id is not None
    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.customer_id == customer_id
    # No credits were granted, so the whole cost is pending.
    assert signal.credits_pending == Decimal(1)


def test_unknown_product_fails_and_creates_nothing(tenant, store):
    create_catalog(store, tenant.organization_id)
    bad = chat_message("someone", attribution={"externalProductId": "no-such-product"})

    response = send(tenant, bad)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "product_not_found"
    assert "signals[0].attribution.externalProductId" in body["error"]
    assert "'no-such-product'" in body["error"]
    assert body["fields"][0]["field"] == "signals[0].attribution.externalProductId"
    assert body["fields"][0]["value"] == "no-such-product"
    assert body["failed"] == 1
    assert customer_id_of(store, tenant.organization_id, "someone") is None
    with store.read_sessions() as session:
        products = select(func.count()).select_from(Product).where(Product.organization_id == tenant.organization_id)
        assert session.scalar(products) == 1


def test_unknown_customer_id_fails(tenant, store):
    create_catalog(store, tenant.organization_id)

    response = send(tenant, {"eventName": "chat_message", "customer": {"customerId": "cus_missing"}})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "customer_not_found"
    assert "signals[0].customer.customerId 'cus_missing'" in body["error"]


def test_one_bad_signal_keeps_the_others(tenant, store):
    create_catalog(store, tenant.organization_id)

    response = send(tenant, chat_message(), {"customer": {"externalCustomerId": "u2"}}, chat_message("u3"))

    assert response.status_code == 200
    body = response.json()
    assert body["ingested"] == 2
    assert body["failed"] == 1
    [error] = body["errors"]
    assert error["index"] == 1
    assert error["field"] == "signals[1].eventName"
    assert error["code"] == "validation_error"
    assert len(stored_signals(store, tenant.organization_id)) == 2


def test_signal_without_matching_line_consumes_nothing(tenant, store):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "5")

    response = send(tenant, chat_message(eventName="page_view"))

    assert response.json()["ingested"] == 1
    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.event_name == "page_view"
    assert signal.credits_consumed == Decimal(0)
    assert signal.credit_currency_id is None
    assert available_credits(store, catalog, customer_id) == Decimal(5)


def test_unattributed_signal_uses_single_matching_line(tenant, store):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "5")

    response = send(tenant, {"eventName": "chat_message", "customer": {"customerId": customer_id}})

    assert response.json()["ingested"] == 1
    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.product_id == catalog.product_id
    assert signal.credits_consumed == Decimal(1)


def test_unattributed_signal_with_two_lines_is_unrated(tenant, store):
    first = create_catalog(store, tenant.organization_id)
    create_catalog(store, tenant.organization_id, external_product_id="other", currency_id=first.currency_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, first, customer_id, "5")

    response = send(tenant, {"eventName": "chat_message", "customer": {"customerId": customer_id}})

    assert response.json()["ingested"] == 1
    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.product_id is None
    assert signal.credits_consumed == Decimal(0)
    assert available_credits(store, first, customer_id) == Decimal(5)


def test_mapped_quantity_multiplies_credit_cost(tenant, store):
    pricing = {
        "pricingType": "UsagePrepaidCredits",
        "eventName": "chat_message",
        "creditCost": 0.5,
        "pricingInput": {"kind": "signalQuantity", "path": "$.usage.tokens"},
    }
    catalog = create_catalog(store, tenant.organization_id, credit_cost="0.5", pricing=pricing)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "100")

    response = send(
        tenant,
        chat_message(data={"usage": {"tokens": 7}}),
        chat_message(data={"usage": {"tokens": "0.1"}}),
        chat_message(data={"other": 1}),
    )

    assert response.json()["ingested"] == 3
    consumed = [signal.credits_consumed for signal in stored_signals(store, tenant.organization_id)]
    assert sorted(consumed) == [Decimal("0.05"), Decimal("0.5"), Decimal("3.5")]
    assert available_credits(store, catalog, customer_id) == Decimal("95.95")


def test_bad_mapped_quantity_fails_signal(tenant, store):
    pricing = {
        "pricingType": "UsagePrepaidCredits",
        "eventName": "chat_message",
        "creditCost": 1,
        "pricingInput": {"kind": "signalQuantity", "path": "$.quantity"},
    }
    create_catalog(store, tenant.organization_id, pricing=pricing)

    response = send(
        tenant,
        chat_message(data={"quantity": "lots"}),
        chat_message(data={"quantity": -2}),
        chat_message(data={"quantity": True}),
        chat_message(data={"quantity": -2.5}),
    )

    assert response.status_code == 400
    body = response.json()
    assert [error["code"] for error in body["errors"]] == ["validation_error"] * 4
    assert body["errors"][0]["message"] == "Invalid signals[0].data.quantity 'lots': must be a finite number"
    assert body["errors"][1]["message"] == "Invalid signals[1].data.quantity -2: must not be negative"
    assert body["errors"][2]["field"] == "signals[2].data.quantity"
    assert body["errors"][2]["message"] == "Invalid signals[2].data.quantity true: must be a finite number"
    assert body["errors"][3]["message"] == "Invalid signals[3].data.quantity -2.5: must not be negative"
    assert stored_signals(store, tenant.organization_id) == []


def test_signal_validation_error_shows_json_values(tenant, store):
    create_catalog(store, tenant.organization_id)

    response = send(tenant, chat_message(eventName=False), chat_message(timestamp=1.5))

    assert response.status_code == 400
    messages = [error["message"] for error in response.json()["errors"]]
    assert messages == [
        "Invalid signals[0].eventName false: Input should be a valid string",
        "Invalid signals[1].timestamp 1.5: Input should be a valid string",
    ]
    assert stored_signals(store, tenant.organization_id) == []


def test_misspelled_signal_key_hinted(tenant, store):
    create_catalog(store, tenant.organization_id)
    misspelled = chat_message()
    misspelled["eventNme"] = misspelled.pop("eventName")

    response = send(tenant, misspelled)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "signals[0].eventName"
    assert error["message"] == (
        "Invalid signals[0].eventName: Field required (the body has 'eventNme'; did you mean 'eventName'?)"
    )
    assert stored_signals(store, tenant.organization_id) == []


def test_capitalized_signal_key_named(tenant, store):
    create_catalog(store, tenant.organization_id)
    misspelled = chat_message()
    misspelled["EventName"] = misspelled.pop("eventName")

    response = send(tenant, misspelled)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "signals[0].EventName"
    assert error["fields"][0]["value"] == "chat_message"
    assert stored_signals(store, tenant.organization_id) == []


def test_flat_brackets_charge_bracket_units(tenant, store):
    pricing = {
        "pricingType": "UsageBracketedPrepaidCredits",
        "eventName": "chat_message",
        "pricingInput": {"kind": "signalQuantity", "path": "$.pages"},
        "creditUnitBrackets": [
            {"upTo": None, "creditUnits": 10},
            {"upTo": 5, "creditUnits": 1},
            {"upTo": 20, "creditUnits": 3},
        ],
    }
    catalog = create_catalog(store, tenant.organization_id, credit_cost=None, pricing=pricing)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "100")

    pages = [1, 5, 6, 20, 21]
    response = send(tenant, *[chat_message(data={"pages": count}, idempotencyKey=f"p{count}") for count in pages])

    assert response.json()["ingested"] == 5
    signals = stored_signals(store, tenant.organization_id)
    by_key = {signal.idempotency_key: signal.credits_consumed for signal in signals}
    assert by_key == {"p1": 1, "p5": 1, "p6": 3, "p20": 3, "p21": 10}


def test_graduated_brackets_sum_per_band(tenant, store):
    pricing = {
        "pricingType": "UsageBracketedPrepaidCredits",
        "eventName": "chat_message",
        "pricingInput": {"kind": "signalQuantity"},
        "creditUnitBrackets": [
            {"upTo": 100, "creditUnits": 0, "creditUnitsPerUnit": 1},
            {"upTo": None, "creditUnits": 0, "creditUnitsPerUnit": 0.25},
        ],
    }
    catalog = create_catalog(store, tenant.organization_id, credit_cost=None, pricing=pricing)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "1000")

    response = send(
        tenant,
        chat_message(data={"quantity": 40}, idempotencyKey="q40"),
        chat_message(data={"quantity": 140}, idempotencyKey="q140"),
    )

    assert response.json()["ingested"] == 2
    signals = stored_signals(store, tenant.organization_id)
    by_key = {signal.idempotency_key: signal.credits_consumed for signal in signals}
    assert by_key == {"q40": Decimal(40), "q140": Decimal(110)}


def place_hold(store, tenant, catalog, customer_id: str, amount: Decimal) -> str:  # type: ignore[no-untyped-def]
    with store.transaction() as session:
        placed = ledger.place_hold(
            session,
            organization_id=tenant.organization_id,
            customer_id=customer_id,
            currency_id=catalog.currency_id,
            amount=amount,
        )
    return placed.hold.id


def test_hold_settled_by_signal(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="3")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    hold_id = place_hold(store, tenant, catalog, customer_id, Decimal(5))
    assert available_credits(store, catalog, customer_id) == Decimal(5)

    response = send(tenant, chat_message(holdId=hold_id))

    assert response.json()["ingested"] == 1
    # The hold paid the 3 credits and released the 2 it did not use.
    assert available_credits(store, catalog, customer_id) == Decimal(7)
    with store.read_sessions() as session:
        assert ledger.get_hold(session, tenant.organization_id, hold_id).status == "settled"


def test_ended_hold_gives_warning(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="3")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")
    hold_id = place_hold(store, tenant, catalog, customer_id, Decimal(5))
    assert send(tenant, chat_message(holdId=hold_id)).json()["warnings"] == []

    again = send(tenant, chat_message(holdId=hold_id))

    assert again.json()["ingested"] == 1
    [warning] = again.json()["warnings"]
    assert (warning["index"], warning["code"]) == (0, "hold_ended")
    assert hold_id in warning["message"]
    # The second signal's 3 credits came from the free credits.
    assert available_credits(store, catalog, customer_id) == Decimal(4)


def test_unknown_hold_fails_signal(tenant, store):
    create_catalog(store, tenant.organization_id)
    create_customer(store, tenant.organization_id, "user-1")

    response = send(tenant, chat_message(holdId="hold_missing"))

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "hold_not_found"
    assert "signals[0].holdId 'hold_missing'" in body["error"]


def test_data_paid_scope_id_is_stored(tenant, store):
    create_catalog(store, tenant.organization_id)

    send(tenant, chat_message(data={"paid": {"paid_scope_id": 2026321151}, "x": 1}))

    [signal] = stored_signals(store, tenant.organization_id)
    assert signal.paid_scope_id == 2026321151
    assert signal.data == {"paid": {"paid_scope_id": 2026321151}, "x": 1}


# Validation: 400s that name the field


def test_missing_event_name_is_400(tenant):
    response = send(tenant, {"customer": {"externalCustomerId": "u1"}})

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["error"].startswith("Invalid signals[0].eventName")
    assert body["errors"][0]["field"] == "signals[0].eventName"
    assert body == {**body, "ingested": 0, "duplicates": 0, "failed": 1}


def test_signal_lists_every_bad_field(tenant, store):
    response = send(tenant, {"customer": {"externalCustomerId": "u1"}, "idempotencyKey": 5})

    assert response.status_code == 400
    body = response.json()
    expected_fields = [
        {"field": "signals[0].eventName", "message": "Invalid signals[0].eventName: Field required", "value": None},
        {"field": "signals[0].idempotencyKey",
         "message": "Invalid signals[0].idempotencyKey 5: Input should be a valid string", "value": 5},
    ]
    assert body["code"] == "validation_error"
    assert body["error"] == "Invalid signals[0].eventName: Field required (and 1 more problem)"
    assert body["fields"] == expected_fields
    assert body["errors"][0]["fields"] == expected_fields
    assert tenant.http.get("/signals/").json()["data"] == []


def test_both_customer_ids_is_400(tenant):
    signal = {"eventName": "e", "customer": {"customerId": "cus_1", "externalCustomerId": "u1"}}

    response = send(tenant, signal)

    assert response.status_code == 400
    body = response.json()
    assert body["errors"][0]["field"] == "signals[0].customer"
    assert "exactly one of customerId or externalCustomerId" in body["error"]


def test_bad_timestamps_are_400(tenant):
    cases = {
        "yesterday": "must be an RFC 3339 date-time",
        "2026-01-31T23:00:00": "must include a timezone offset",
        "0001-01-01T00:00:00+05:00": "is out of range",
    }
    for value, reason in cases.items():
        response = send(tenant, chat_message(timestamp=value))
        assert response.status_code == 400, value
        body = response.json()
        assert body["errors"][0]["field"] == "signals[0].timestamp"
        assert reason in body["error"]
        assert repr(value) in body["error"]


def test_future_timestamp_is_400(tenant, store):
    create_catalog(store, tenant.organization_id)
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    late = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()

    accepted = send(tenant, chat_message(timestamp=soon))
    rejected = send(tenant, chat_message(timestamp=late))

    assert accepted.status_code == 200
    assert accepted.json()["ingested"] == 1
    assert rejected.status_code == 400
    body = rejected.json()
    assert body["code"] == "timestamp_in_future"
    assert body["errors"][0]["field"] == "signals[0].timestamp"
    assert "300 seconds" in body["error"]


def test_timestamp_defaults_to_receipt_time(tenant, store):
    create_catalog(store, tenant.organization_id)
    past = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)

    send(tenant, chat_message(timestamp="2026-02-01T01:00:00+02:00"), chat_message(idempotencyKey="now"))

    signals = stored_signals(store, tenant.organization_id)
    assert signals[0].occurred_at == past
    assert signals[1].occurred_at == signals[1].received_at
    assert signals[1].idempotency_key == "now"


def test_too_many_signals_is_400(tenant):
    response = send(tenant, *[{"eventName": "e"}] * 1001)

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "too_many_signals"
    assert "at most 1000" in body["error"]
    assert "1001" in body["error"]


def test_missing_signals_array_is_400(tenant):
    response = tenant.http.post("/signals/bulk", json={"signal": []})

    assert response.status_code == 400
    assert response.json()["error"].startswith("Invalid signals")


def test_empty_batch_counts_nothing(tenant):
    response = send(tenant)

    assert response.status_code == 200
    assert response.json() == {"ingested": 0, "duplicates": 0, "failed": 0, "errors": [], "warnings": []}


# Idempotency


def test_repeated_key_counts_as_duplicate(tenant, store):
    catalog = create_catalog(store, tenant.organization_id)
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "10")

    first = send(tenant, chat_message(idempotencyKey="k1"), chat_message(idempotencyKey="k1"))
    again = send(tenant, chat_message(idempotencyKey="k1"), chat_message(idempotencyKey="k2"))

    assert first.json() == {"ingested": 1, "duplicates": 1, "failed": 0, "errors": [], "warnings": []}
    assert again.json() == {"ingested": 1, "duplicates": 1, "failed": 0, "errors": [], "warnings": []}
    assert len(stored_signals(store, tenant.organization_id)) == 2
    assert available_credits(store, catalog, customer_id) == Decimal(8)


def test_organizations_reuse_key_independently(tenant, other_tenant, store):
    for organization in (tenant, other_tenant):
        create_catalog(store, organization.organization_id)

    first = send(tenant, chat_message(idempotencyKey="shared-key"))
    second = send(other_tenant, chat_message(idempotencyKey="shared-key"))
    repeat = send(other_tenant, chat_message(idempotencyKey="shared-key"))

    assert first.json()["ingested"] == 1
    assert second.json()["ingested"] == 1
    assert repeat.json()["duplicates"] == 1
    assert len(stored_signals(store, tenant.organization_id)) == 1
    assert len(stored_signals(store, other_tenant.organization_id)) == 1


def test_failed_signal_leaves_key_free(tenant, store):
    create_catalog(store, tenant.organization_id)

    bad = send(tenant, chat_message(idempotencyKey="k", attribution={"productId": "prod_missing"}))
    good = send(tenant, chat_message(idempotencyKey="k"))

    assert bad.status_code == 400
    assert good.json()["ingested"] == 1


# Listing


def _ingest_listing_fixture(tenant, store):  # type: ignore[no-untyped-def]
    catalog = create_catalog(store, tenant.organization_id)
    create_catalog(store, tenant.organization_id, external_product_id="other", currency_id=catalog.currency_id)
    times = [datetime(2026, 1, day, 12, 0, tzinfo=UTC) for day in (1, 2, 3, 4, 5)]
    signals = [
        chat_message("alice", timestamp=times[0].isoformat(), idempotencyKey="a1"),
        chat_message("bob", timestamp=times[1].isoformat(), idempotencyKey="b1"),
        chat_message("alice", timestamp=times[2].isoformat(), idempotencyKey="a2", eventName="page_view"),
        chat_message("alice", timestamp=times[3].isoformat(), idempotencyKey="a3",
                     attribution={"externalProductId": "other"}),
        chat_message("bob", timestamp=times[4].isoformat(), idempotencyKey="b2"),
    ]
    assert send(tenant, *signals).json()["ingested"] == 5
    return catalog


def _keys(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return [item["idempotencyKey"] for item in response.json()["data"]]


def test_list_newest_first_with_pagination(tenant, store):
    _ingest_listing_fixture(tenant, store)

    first = tenant.http.get("/signals/", params={"limit": 2})
    second = tenant.http.get("/signals", params={"limit": 2, "offset": 2})
    last = tenant.http.get("/signals/", params={"limit": 2, "offset": 4})

    assert _keys(first) == ["b2", "a3"]
    assert _keys(second) == ["a2", "b1"]
    assert _keys(last) == ["a1"]
    assert first.json()["pagination"] == {"limit": 2, "offset": 0, "total": 5, "hasMore": True}
    assert last.json()["pagination"] == {"limit": 2, "offset": 4, "total": 5, "hasMore": False}


def test_list_filters(tenant, store):
    catalog = _ingest_listing_fixture(tenant, store)
    alice = customer_id_of(store, tenant.organization_id, "alice")

    def keys(**params: str) -> list[str]:
        return _keys(tenant.http.get("/signals/", params=params))

    assert keys(signalName="page_view") == ["a2"]
    assert keys(externalCustomerId="alice") == ["a3", "a2", "a1"]
    assert keys(customerId=alice or "") == ["a3", "a2", "a1"]
    assert keys(productId=catalog.product_id) == ["b2", "a2", "b1", "a1"]
    assert keys(externalProductId="other") == ["a3"]
    assert keys(createdAtFrom="2026-01-02", createdAtTo="2026-01-03") == ["a2", "b1"]
    assert keys(createdAtFrom="2026-01-04T12:00:00Z") == ["b2", "a3"]
    assert keys(externalCustomerId="nobody") == []


def test_list_external_id_skips_deleted_customer(tenant, store):
    create_catalog(store, tenant.organization_id)
    assert send(tenant, chat_message("alice", idempotencyKey="old")).json()["ingested"] == 1
    deleted_id = customer_id_of(store, tenant.organization_id, "alice")
    assert tenant.http.delete(f"/customers/{deleted_id}").status_code == 200

    deleted_only = tenant.http.get("/signals/", params={"externalCustomerId": "alice"})

    assert send(tenant, chat_message("alice", idempotencyKey="new")).json()["ingested"] == 1
    live_id = customer_id_of(store, tenant.organization_id, "alice")
    by_external_id = tenant.http.get("/signals/", params={"externalCustomerId": "alice"})
    by_deleted_id = tenant.http.get("/signals/", params={"customerId": deleted_id})

    assert _keys(deleted_only) == []
    assert deleted_only.json()["pagination"]["total"] == 0
    assert live_id != deleted_id
    assert _keys(by_external_id) == ["new"]
    assert [item["customerId"] for item in by_external_id.json()["data"]] == [live_id]
    assert by_external_id.json()["pagination"]["total"] == 1
    # The deleted customer's signals stay readable by its customer id.
    assert _keys(by_deleted_id) == ["old"]


def test_list_bad_filter_is_400(tenant):
    response = tenant.http.get("/signals/", params={"createdAtFrom": "last week"})

    assert response.status_code == 400
    assert "createdAtFrom" in response.json()["error"]


def test_list_item_shape(tenant, store):
    catalog = create_catalog(store, tenant.organization_id, credit_cost="1.5")
    customer_id = create_customer(store, tenant.organization_id, "user-1")
    grant_credits(store, catalog, customer_id, "1")
    send(tenant, chat_message(data={"k": "v"}, timestamp="2026-01-01T00:00:00Z"))

    [item] = tenant.http.get("/signals/").json()["data"]

    assert item["id"].startswith("sig_")
    assert item["name"] == "chat_message"
    assert item["customerId"] == customer_id
    assert item["externalCustomerId"] == "user-1"
    assert item["productId"] == catalog.product_id
    assert item["externalProductId"] == "chatbot"
    assert item["traceId"] is None
    assert item["data"] == {"k": "v"}
    assert item["createdAt"] == "2026-01-01T00:00:00Z"
    assert item["creditsConsumed"] == "1"
    assert item["creditsPending"] == "0.5"
    assert item["creditCurrencyKey"] == "chat_credits"
    assert tenant.http.get(f"/signals/{item['id']}").json() == item


def test_get_signal_of_other_org_is_404(tenant, other_tenant, store):
    create_catalog(store, tenant.organization_id)
    send(tenant, chat_message())
    [item] = tenant.http.get("/signals/").json()["data"]

    response = other_tenant.http.get(f"/signals/{item['id']}")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert other_tenant.http.get("/signals/").json()["data"] == []


def test_unstorable_values_are_400(tenant, store):
    create_catalog(store, tenant.organization_id)
    cases = [
        (chat_message(data={"text": "a\x00b"}), "signals[0].data.text"),
        (chat_message(data={"list": [1, {"k\x00": 1}]}), "signals[0].data.list[1]"),
        (chat_message(eventName="chat\x00message"), "signals[0].eventName"),
        (chat_message(idempotencyKey="k\x00"), "signals[0].idempotencyKey"),
    ]
    for signal, field in cases:
        response = send(tenant, signal)
        assert response.status_code == 400, field
        assert response.json()["errors"][0]["field"] == field
        assert "NUL" in response.json()["error"]

    not_a_number = tenant.http.post(
        "/signals/bulk",
        content=b'{"signals": [{"eventName": "chat_message", "customer": {"externalCustomerId": "u"}, '
        b'"data": {"score": NaN}}]}',
        headers={"Content-Type": "application/json"},
    )
    assert not_a_number.status_code == 400
    assert "NaN" in not_a_number.json()["error"]
    assert stored_signals(store, tenant.organization_id) == []


def test_non_object_signal_fails_alone(tenant, store):
    create_catalog(store, tenant.organization_id)

    response = send(tenant, "not a signal", chat_message())  # type: ignore[arg-type]

    assert response.status_code == 200
    body = response.json()
    assert body["ingested"] == 1
    [error] = body["errors"]
    assert error["field"] == "signals[0]"
    assert error["message"] == "Invalid signals[0] 'not a signal': must be a JSON object"


def test_unpriced_event_name_gets_warning(tenant):
    from tests.guide import create_guide_catalog

    create_guide_catalog(tenant.paid())
    response = tenant.http.post(
        "/signals/bulk",
        json={
            "signals": [
                {"eventName": "chat_mesage", "customer": {"externalCustomerId": "w1"}, "attribution": {"externalProductId": "chatbot"}},
                {"eventName": "chat_message", "customer": {"externalCustomerId": "w1"}, "attribution": {"externalProductId": "chatbot"}},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["ingested"] == 2
    assert [warning["index"] for warning in body["warnings"]] == [0]
    assert body["warnings"][0]["code"] == "no_pricing_line"
    assert "'chat_mesage'" in body["warnings"][0]["message"]


def test_failed_signal_echoes_scalar_values_only(tenant, store):
    create_catalog(store, tenant.organization_id)

    long_name = send(tenant, chat_message("ada", eventName="x" * 300))
    a_list = send(tenant, [1, 2])
    a_string = send(tenant, "not a signal")

    assert long_name.status_code == 400
    assert long_name.json()["fields"][0]["field"] == "signals[0].eventName"
    assert long_name.json()["fields"][0]["value"] == "x" * 200
    assert a_list.status_code == 400
    assert a_list.json()["fields"][0]["value"] is None
    assert a_string.status_code == 400
    assert a_string.json()["fields"][0]["value"] == "not a signal"
