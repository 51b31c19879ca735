"""Delivered value end to end: the guide's chatbot and a document processor, on both databases.

Chat messages save 4 minutes each at $60/hour, both bound as fixed values. Each
document_processed signal carries its own time_saved (with time_saved_unit) and money_saved
in cents. The factories at the top are shared by the other value test modules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from paid.core.api_error import ApiError as PaidApiError
from paid.types import (
    CreateOrderLineRequest,
    CustomerByExternalId,
    ProductByExternalId,
    Signal,
    ValueModelContent,
    ValueModelContentFormulasItem,
    ValueModelContentSignalsItem,
    ValueModelContentValueTypesItem,
    ValueModelContentValueTypesItemCalculationTimelineItem,
    ValueModelContentValueTypesItemCalculationTimelineItemCalculation,
    ValueModelContentValueTypesItemCalculationTimelineItemCalculationUnitDurationUnit,
    ValueModelContentValueTypesItemCalculationTimelineItemCalculationUnitZero,
)
from sqlalchemy import select

from tallystick.server.models import SignalValue, SignalValueEvaluation
from tallystick.server.value import service
from tallystick.server.value.signal_values import ValueScope, active_definition, evaluate_stale_signals, lock_values
from tests.guide import create_guide_catalog

MARCH = datetime(2026, 3, 1, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)
NO_RETRY = {"max_retries": 0}


# Factories


def calculation(unit: Any, formula_ids: list[str], **extra: Any):  # type: ignore[no-untyped-def]
    return ValueModelContentValueTypesItemCalculationTimelineItem(
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        calculation=ValueModelContentValueTypesItemCalculationTimelineItemCalculation(
            unit=unit,
            formula_ids=formula_ids,
            signal_event_names=["chat_message", "document_processed"],
            segment_table_ids=[],
            override_ids=extra.pop("override_ids", []),
            **extra,
        ),
    )


def guide_value_model(*, hourly_rate_cents: int = 6000, minutes_per_message: int = 4) -> ValueModelContent:
    """Time saved and money saved, from fixed values (chat) and from signal data (documents)."""
    minutes = ValueModelContentValueTypesItemCalculationTimelineItemCalculationUnitDurationUnit(
        type="duration", duration_unit="minutes"
    )
    money = ValueModelContentValueTypesItemCalculationTimelineItemCalculationUnitZero(type="monetary")
    return ValueModelContent(
        currency="USD",
        value_types=[
            ValueModelContentValueTypesItem(
                slug="time_saved", name="Time saved", calculation_timeline=[calculation(minutes, ["chat_time", "document_time"])]
            ),
            ValueModelContentValueTypesItem(
                slug="money_saved", name="Money saved", calculation_timeline=[calculation(money, ["chat_money", "document_money"])]
            ),
        ],
        formulas=[
            builtin("chat_time", "time_saved", "time_saved", "actions * time_per_action"),
            builtin("document_time", "time_saved", "direct_amount", "amount"),
            builtin("chat_money", "money_saved", "money_saved", "time_saved * hourly_rate"),
            builtin("document_money", "money_saved", "direct_amount", "amount"),
        ],
        signals=[
            ValueModelContentSignalsItem(
                event_name="chat_message",
                label="Chat message",
                formula_id="chat_time",
                defaults={"actions": 1, "time_per_action": minutes_per_message},
            ),
            ValueModelContentSignalsItem(
                event_name="chat_message",
                label="Chat message",
                formula_id="chat_money",
                defaults={"time_saved": f"{minutes_per_message} minutes", "hourly_rate": hourly_rate_cents},
            ),
            ValueModelContentSignalsItem(
                event_name="document_processed",
                label="Document processed",
                formula_id="document_time",
                variable_mapping={"amount": "time_saved"},
            ),
            ValueModelContentSignalsItem(
                event_name="document_processed",
                label="Document processed",
                formula_id="document_money",
                variable_mapping={"amount": "money_saved"},
            ),
        ],
    )


def builtin(formula_id: str, slug: str, name: str, expression: str) -> ValueModelContentFormulasItem:
    """A formula using a built-in calculation; the SDK requires expression and variables."""
    return ValueModelContentFormulasItem(
        id=formula_id, value_type_slug=slug, label=formula_id, variables=[], expression=expression, calculation=name
    )


def chat_message(customer: str, day: int, **fields: Any) -> Signal:
    return Signal(
        event_name="chat_message",
        customer=CustomerByExternalId(external_customer_id=customer),
        attribution=ProductByExternalId(external_product_id="chatbot"),
        timestamp=datetime(2026, 3, day, 12, tzinfo=UTC),
        **fields,
    )


def document(customer: str, day: int, data: dict[str, Any]) -> Signal:
    return Signal(
        event_name="document_processed",
        customer=CustomerByExternalId(external_customer_id=customer),
        timestamp=datetime(2026, 3, day, 12, tzinfo=UTC),
        data=data,
    )


def send_march_signals(client: Any, customer: str = "ada") -> None:
    """3 chat messages, 2 good documents and 1 whose time unit is malformed, all in March."""
    response = client.signals.create_signals(
        signals=[
            chat_message(customer, 2),
            chat_message(customer, 3),
            chat_message(customer, 31),
            document(customer, 4, {"time_saved": 90, "time_saved_unit": "seconds", "money_saved": 1250}),
            document(customer, 5, {"time_saved": 2, "time_saved_unit": "minutes", "money_saved": 800}),
            document(customer, 6, {"time_saved": 3, "time_saved_unit": "fortnights", "money_saved": 500}),
        ]
    )
    assert (response.ingested, response.failed) == (6, 0)


def guide_setup(tenant: Any, customer: str = "ada") -> Any:
    client = tenant.paid()
    create_guide_catalog(client)
    client.customers.create_customer(name="Ada Lovelace", external_id=customer)
    client.customers.grant_customer_credits_by_external_id(customer, credit_currency_key="chat_credits", amount=500)
    return client


def receipt_detail(tenant: Any, receipt_id: str) -> dict[str, Any]:
    response = tenant.http.get(f"/value-receipts/{receipt_id}")
    assert response.status_code == 200, response.text
    return response.json()


def lines_by_slug(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {line["valueTypeSlug"]: line for line in detail["lines"]}


# Hand computation for the March signals at 4 minutes per message and $60/hour:
# time saved  = 3 x 4 min + 90 s (1.5 min) + 2 min = 15.5 min; the "fortnights" document is unknown
# money saved = 3 x (4/60 h x 6000 cents) + 1250 + 800 + 500 = 1200 + 2550 = 3750 cents
MARCH_MINUTES = "15.5"
MARCH_CENTS = 3750


def test_receipt_totals_equal_hand_computation(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)

    created = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    assert created.status == "draft"
    assert created.public_url.endswith(f"/receipts/{created.public_url_token}")

    receipt = client.value_receipts.get_value_receipt_by_id(created.id)
    assert receipt.total_delivered_value == MARCH_CENTS
    assert receipt.currency == "USD"
    assert receipt.customer_name == "Ada Lovelace"
    assert receipt.customer_external_id == "ada"

    lines = lines_by_slug(receipt_detail(tenant, created.id))
    time_saved, money_saved = lines["time_saved"], lines["money_saved"]
    assert time_saved["quantity"] == MARCH_MINUTES
    assert time_saved["unit"] == {"type": "duration", "durationUnit": "minutes"}
    assert time_saved["signalCount"] == 6
    assert time_saved["unknownCount"] == 1
    assert time_saved["unknownReasons"] == {"malformed_field": 1}
    assert time_saved["money"] is None
    assert money_saved["quantity"] == str(MARCH_CENTS)
    assert money_saved["money"] == MARCH_CENTS
    assert money_saved["unknownCount"] == 0


def test_malformed_unit_is_reported_not_guessed(tenant, store):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    client.value_models.refresh_value_model_backfill()

    with store.read_sessions() as session:
        rows = session.scalars(
            select(SignalValue).where(
                SignalValue.organization_id == tenant.organization_id, SignalValue.event_name == "document_processed"
            )
        ).all()
    unknown = [row for row in rows if row.status == "unknown"]
    assert len(unknown) == 1
    [row] = unknown
    assert row.value_type_slug == "time_saved"
    assert row.quantity is None
    assert row.reason_code == "malformed_field"
    assert "time_saved_unit" in row.reason
    assert "fortnights" in row.reason
    # The same signal's money_saved is known: one bad field spoils only its value type.
    [money] = [r for r in rows if r.signal_id == row.signal_id and r.value_type_slug == "money_saved"]
    assert money.status == "known"
    assert money.money == 500


def test_new_version_changes_drafts_not_sealed(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    draft = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    sealed = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    assert client.value_receipts.seal_value_receipt(sealed.id).success is True

    updated = client.value_models.update_value_model(content=guide_value_model(hourly_rate_cents=9000))
    assert updated.version == 2

    # 3 chat messages x 4/60 h x 9000 cents = 1800, plus the documents' 2550 cents.
    assert client.value_receipts.get_value_receipt_by_id(draft.id).total_delivered_value == 1800 + 2550
    assert client.value_receipts.get_value_receipt_by_id(sealed.id).total_delivered_value == MARCH_CENTS
    assert receipt_detail(tenant, sealed.id)["valueModelVersion"] == 1
    assert receipt_detail(tenant, draft.id)["valueModelVersion"] == 2

    with pytest.raises(PaidApiError) as raised:
        client.value_receipts.refresh_value_receipt(sealed.id, request_options=NO_RETRY)
    assert raised.value.status_code == 409
    assert client.value_receipts.get_value_receipt_by_id(sealed.id).status == "posted"


def test_backfill_evaluates_every_signal_again(tenant, store):
    client = guide_setup(tenant)
    send_march_signals(client)
    # Signals sent before any value model get values when the first version is uploaded.
    client.value_models.update_value_model(content=guide_value_model())

    with store.read_sessions() as session:
        evaluations = session.scalars(
            select(SignalValueEvaluation).where(SignalValueEvaluation.organization_id == tenant.organization_id)
        ).all()
    assert len(evaluations) == 6

    response = tenant.http.post("/value-models/backfill", json={})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 1
    assert body["signalsEvaluated"] == 6
    assert body["receiptsRefreshed"] == 0


def test_totals_read_only_match_stored(tenant, store):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)

    # Nothing evaluated the new signals yet: a read session evaluates them in memory.
    with store.read_sessions() as session:
        in_memory = service.delivered_value(session, tenant.organization_id, start=MARCH, end=APRIL)
    with store.transaction() as session:
        lock_values(session, tenant.organization_id)
        definition = active_definition(session, tenant.organization_id)
        assert evaluate_stale_signals(session, tenant.organization_id, definition, ValueScope()) == 6
    with store.read_sessions() as session:
        stored = service.delivered_value(session, tenant.organization_id, start=MARCH, end=APRIL)

    for summary in (in_memory, stored):
        totals = {total.slug: total for total in summary.totals}
        assert str(totals["time_saved"].quantity.normalize()) == MARCH_MINUTES
        assert totals["time_saved"].unknown_reasons == {"malformed_field": 1}
        assert totals["money_saved"].rounded_money == MARCH_CENTS
        assert summary.total_money == MARCH_CENTS
        assert summary.value_model_version == 1


def test_per_customer_override_changes_only_that_customer(tenant):
    client = guide_setup(tenant)
    client.customers.create_customer(name="Bob", external_id="bob")
    content = guide_value_model().dict(by_alias=True, exclude_none=True)
    content["valueTypes"][1]["calculationTimeline"][0]["calculation"]["overrideIds"] = ["bob_rate"]
    content["overrides"] = [
        {
            "id": "bob_rate",
            "label": "Bob's agreed rate",
            "scope": {"customerIds": ["bob"]},
            "valueTypeOverrides": {"money_saved": {"variables": {"hourly_rate": 12000}}},
        }
    ]
    response = tenant.http.put("/value-models/", json={"content": _jsonable(content)})
    assert response.status_code == 200, response.text
    send_march_signals(client, "ada")
    send_march_signals(client, "bob")

    ada = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    bob = client.value_receipts.create_value_receipt(external_customer_id="bob", start_date=MARCH, end_date=APRIL)
    assert client.value_receipts.get_value_receipt_by_id(ada.id).total_delivered_value == MARCH_CENTS
    # 3 x 4/60 h x 12000 cents = 2400, plus 2550 from the documents.
    assert client.value_receipts.get_value_receipt_by_id(bob.id).total_delivered_value == 2400 + 2550

    inputs = lines_by_slug(receipt_detail(tenant, bob.id))["money_saved"]["inputs"]
    chat = next(entry for entry in inputs if entry["eventName"] == "chat_message")
    rate = next(variable for variable in chat["variables"] if variable["id"] == "hourly_rate")
    assert rate == {
        "id": "hourly_rate",
        "label": "Hourly rate",
        "type": "money",
        "source": "override",
        "override": "bob_rate",
        "value": "12000",
    }


def test_receipt_scoped_to_product(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)

    # Only chat messages are attributed to the chatbot product.
    created = client.value_receipts.create_value_receipt(
        external_customer_id="ada", start_date=MARCH, end_date=APRIL, product={"product_id": "chatbot"}
    )
    detail = receipt_detail(tenant, created.id)
    assert detail["totalDeliveredValue"] == 1200
    assert lines_by_slug(detail)["time_saved"]["quantity"] == "12"
    assert detail["productId"] is not None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def test_totals_per_customer(tenant, store):
    client = guide_setup(tenant)
    client.customers.create_customer(name="Bob", external_id="bob")
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client, "ada")
    client.signals.create_signals(signals=[chat_message("bob", 9)])
    client.value_models.refresh_value_model_backfill()
    # One more signal after the backfill is stale and evaluated in memory.
    client.signals.create_signals(signals=[chat_message("bob", 10)])

    with store.read_sessions() as session:
        ada_id = client.customers.get_customer_by_external_id("ada").id
        bob_id = client.customers.get_customer_by_external_id("bob").id
        by_customer = service.delivered_value_by_customer(session, tenant.organization_id, start=MARCH, end=APRIL)

    assert set(by_customer) == {ada_id, bob_id}
    assert by_customer[ada_id].total_money == MARCH_CENTS
    assert by_customer[bob_id].total_money == 800
    bob_time = {total.slug: total for total in by_customer[bob_id].totals}["time_saved"]
    assert bob_time.quantity == 8
    assert bob_time.signal_count == 2


def test_percentage_is_averaged_and_count_summed(tenant):
    client = guide_setup(tenant)
    content = {
        "currency": "USD",
        "valueTypes": [
            {
                "slug": "accuracy",
                "name": "Answer accuracy",
                "calculationTimeline": [
                    {
                        "effectiveFrom": "2020-01-01T00:00:00Z",
                        "calculation": {"unit": {"type": "percentage"}, "formulaIds": ["accuracy"], "signalEventNames": ["chat_message"]},
                    }
                ],
            },
            {
                "slug": "tickets",
                "name": "Tickets deflected",
                "calculationTimeline": [
                    {
                        "effectiveFrom": "2020-01-01T00:00:00Z",
                        "calculation": {
                            "unit": {"type": "count", "unit": "tickets", "unit_display": "tickets deflected"},
                            "formulaIds": ["tickets"],
                            "signalEventNames": ["chat_message"],
                        },
                    }
                ],
            },
        ],
        "formulas": [
            {"id": "accuracy", "valueTypeSlug": "accuracy", "label": "Accuracy", "calculation": "direct_amount"},
            {"id": "tickets", "valueTypeSlug": "tickets", "label": "Tickets", "expression": "1 if deflected else 0",
             "variables": [{"id": "deflected", "label": "Deflected", "type": "boolean"}]},
        ],
        "signals": [
            {"eventName": "chat_message", "formulaId": "accuracy", "variableMapping": {"amount": "accuracy"}},
            {"eventName": "chat_message", "formulaId": "tickets", "variableMapping": {"deflected": "deflected"}},
        ],
    }
    assert tenant.http.put("/value-models/", json={"content": content}).status_code == 200
    client.signals.create_signals(
        signals=[
            chat_message("ada", 2, data={"accuracy": 0.9, "deflected": True}),
            chat_message("ada", 3, data={"accuracy": 0.8, "deflected": False}),
            chat_message("ada", 4, data={"accuracy": 0.95, "deflected": True}),
            chat_message("ada", 5, data={"deflected": "yes"}),
        ]
    )
    created = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    detail = receipt_detail(tenant, created.id)
    lines = lines_by_slug(detail)

    # (0.9 + 0.8 + 0.95) / 3; the fourth signal has no accuracy and does not count.
    assert lines["accuracy"]["aggregation"] == "mean"
    assert lines["accuracy"]["quantity"] == "0.883333333"
    assert lines["accuracy"]["unknownReasons"] == {"missing_field": 1}
    assert lines["tickets"]["aggregation"] == "sum"
    assert lines["tickets"]["quantity"] == "2"
    assert lines["tickets"]["unknownReasons"] == {"malformed_field": 1}
    assert detail["totalDeliveredValue"] == 0

    client.value_receipts.publish_value_receipt(created.id)
    page = tenant.http.get(created.public_url).text
    assert "88.33 %" in page
    assert "2 tickets deflected" in page


def test_receipt_scoped_to_order(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    ada = client.customers.get_customer_by_external_id("ada")
    product = client.products.get_product_by_external_id("chatbot")
    order = client.orders.create_order(
        customer_id=ada.id, name="ChatBot Pro", lines=[CreateOrderLineRequest(product_id=product.id)]
    )

    created = client.value_receipts.create_value_receipt(
        customer_id=ada.id, start_date=MARCH, end_date=APRIL, order_id=order.id
    )
    detail = receipt_detail(tenant, created.id)
    # The order covers the chatbot product, so only the 3 chat messages count.
    assert detail["orderId"] == order.id
    assert detail["totalDeliveredValue"] == 1200
    assert [summary.id for summary in client.value_receipts.list_value_receipts(order_id=order.id).data] == [created.id]

    bob = client.customers.create_customer(name="Bob", external_id="bob")
    response = tenant.http.post(
        "/value-receipts/",
        json={"customerId": bob.id, "orderId": order.id, "startDate": "2026-03-01", "endDate": "2026-04-01"},
    )
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "orderId"


def test_receipt_page_counts_unknown_values(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    created = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)

    link = tenant.http.post(f"/value-receipts/{created.id}/links", json={}).json()["url"]
    page = httpx.get(link)

    assert page.status_code == 200
    assert "1 has no known value and counts as zero" in " ".join(page.text.split())
