"""Every value-metric, value-model and value-receipt endpoint through the official paid-python SDK.

Each call must parse without a validation error; the assertions check what came back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from paid.core.api_error import ApiError as PaidApiError
from paid.types import (
    ValueMetricFormula,
    ValueMetricFormulaVariable,
    ValueMetricMonetaryConversion,
    ValueMetricSignalBinding,
    ValueMetricUnit,
    ValueMetricVariableEdit,
)

from tallystick.server import clock
from tests.test_value_receipts import (
    APRIL,
    MARCH,
    MARCH_CENTS,
    NO_RETRY,
    guide_setup,
    guide_value_model,
    send_march_signals,
)


def create_minutes_metric(client, **extra):  # type: ignore[no-untyped-def]
    """Minutes saved per chat message, worth 100 cents per minute ($60/hour)."""
    return client.value_metrics.create_value_metric(
        name="Minutes saved",
        unit=ValueMetricUnit(type="duration", duration_unit="minutes"),
        formula=ValueMetricFormula(
            expression="messages * minutes_per_message",
            variables=[
                ValueMetricFormulaVariable(id="messages", label="Messages"),
                ValueMetricFormulaVariable(id="minutes_per_message", label="Minutes per message", type="number"),
            ],
        ),
        signal=ValueMetricSignalBinding(event_name="chat_message", defaults={"messages": 1, "minutes_per_message": 4}),
        monetary_conversion=ValueMetricMonetaryConversion(value_per_unit=100, label="Value of a minute"),
        category="time",
        description="Time your team did not spend answering chats.",
        **extra,
    )


def test_value_metric_endpoints(tenant):
    client = guide_setup(tenant)

    ack = create_minutes_metric(client)
    assert (ack.slug, ack.name, ack.version) == ("minutes_saved", "Minutes saved", 1)

    listed = client.value_metrics.list_value_metrics()
    assert [metric.slug for metric in listed.data] == ["minutes_saved"]
    assert listed.pagination.total == 1
    summary = listed.data[0]
    assert summary.unit.type == "duration"
    assert summary.unit.duration_unit == "minutes"
    assert summary.monetary_conversion.value_per_unit == 100
    assert summary.monetary_conversion.expression == "unit_value * rate"

    detail = client.value_metrics.get_value_metric("minutes_saved")
    assert detail.formula.expression == "messages * minutes_per_message"
    assert [variable.id for variable in detail.formula.variables] == ["messages", "minutes_per_message"]
    [binding] = detail.signals
    assert binding.event_name == "chat_message"
    assert binding.defaults == {"messages": 1, "minutes_per_message": 4}
    assert detail.category == "time"

    edited = client.value_metrics.update_value_metric(
        "minutes_saved",
        name="Time saved",
        variables={"minutes_per_message": ValueMetricVariableEdit(value=5, label="Minutes saved per message")},
        expected_active_version=1,
    )
    assert (edited.slug, edited.name, edited.version) == ("minutes_saved", "Time saved", 2)
    detail = client.value_metrics.get_value_metric("minutes_saved")
    assert detail.signals[0].defaults["minutes_per_message"] == 5
    assert detail.formula.variables[1].label == "Minutes saved per message"

    archived = client.value_metrics.archive_value_metric("minutes_saved")
    assert archived.version == 3
    assert client.value_metrics.list_value_metrics().data == []
    with_archived = client.value_metrics.list_value_metrics(include_archived=True)
    assert with_archived.data[0].archived_at is not None

    restored = client.value_metrics.update_value_metric("minutes_saved", archived_at=None)
    assert restored.version == 4
    assert client.value_metrics.get_value_metric("minutes_saved").archived_at is None


def test_value_metric_values_feed_receipts(tenant):
    client = guide_setup(tenant)
    send_march_signals(client)
    create_minutes_metric(client)

    receipt = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    # 3 chat messages x 4 minutes x 100 cents per minute.
    assert client.value_receipts.get_value_receipt_by_id(receipt.id).total_delivered_value == 1200


def test_value_metric_errors(tenant):
    client = guide_setup(tenant)
    create_minutes_metric(client)

    with pytest.raises(PaidApiError) as raised:
        create_minutes_metric(client, expected_active_version=7, request_options=NO_RETRY)
    assert raised.value.status_code == 409

    with pytest.raises(PaidApiError) as raised:
        create_minutes_metric(client)
    assert raised.value.status_code == 400
    assert raised.value.body["fields"][0]["field"] == "slug"

    with pytest.raises(PaidApiError) as raised:
        client.value_metrics.create_value_metric(
            name="Tickets",
            unit=ValueMetricUnit(type="custom", unit="tickets", unit_display="tickets resolved"),
            formula=ValueMetricFormula(expression="1", variables=[]),
            signal=ValueMetricSignalBinding(event_name="ticket_resolved"),
        )
    assert raised.value.status_code == 404
    assert "ticket_resolved" in raised.value.body["error"]

    with pytest.raises(PaidApiError) as raised:
        client.value_metrics.create_value_metric(
            name="Broken",
            unit=ValueMetricUnit(type="duration", duration_unit="minutes"),
            formula=ValueMetricFormula(expression="__import__('os').system('id')", variables=[]),
            signal=ValueMetricSignalBinding(event_name="chat_message"),
        )
    assert raised.value.status_code == 400
    assert raised.value.body["fields"][0]["field"] == "formula.expression"

    with pytest.raises(PaidApiError) as raised:
        client.value_metrics.create_value_metric(
            name="Unbound",
            unit=ValueMetricUnit(type="duration", duration_unit="minutes"),
            formula=ValueMetricFormula(
                expression="minutes", variables=[ValueMetricFormulaVariable(id="minutes", label="Minutes")]
            ),
            signal=ValueMetricSignalBinding(event_name="chat_message"),
        )
    assert raised.value.status_code == 400
    assert "minutes" in raised.value.body["error"]

    with pytest.raises(PaidApiError) as raised:
        client.value_metrics.update_value_metric(
            "minutes_saved", variables={"nope": ValueMetricVariableEdit(value=1)}
        )
    assert raised.value.status_code == 400
    assert raised.value.body["fields"][0]["field"] == "variables.nope"

    with pytest.raises(PaidApiError) as raised:
        client.value_metrics.get_value_metric("missing")
    assert raised.value.status_code == 404

    # Nothing above changed the model.
    assert client.value_models.get_current_value_model().version == 1


def test_value_model_endpoints(tenant):
    client = tenant.paid()
    with pytest.raises(PaidApiError) as raised:
        client.value_models.get_current_value_model()
    assert raised.value.status_code == 404

    first = client.value_models.update_value_model(content=guide_value_model())
    assert first.version == 1
    assert [value_type.slug for value_type in first.content.value_types] == ["time_saved", "money_saved"]
    chat_time = first.content.formulas[0]
    assert chat_time.expression == "actions * time_per_action"
    assert [variable.id for variable in chat_time.variables] == ["actions", "time_per_action"]

    second = client.value_models.update_value_model(
        content=guide_value_model(hourly_rate_cents=9000),
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert second.version == 2
    assert second.effective_from == datetime(2026, 1, 1, tzinfo=UTC)

    # The same upload again, as a client retrying after a lost response sends it.
    repeated = client.value_models.update_value_model(
        content=guide_value_model(hourly_rate_cents=9000),
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert (repeated.id, repeated.version) == (second.id, 2)

    current = client.value_models.get_current_value_model()
    assert (current.id, current.version) == (second.id, 2)
    versions = client.value_models.list_value_model_versions()
    assert [(v.version, v.status) for v in versions.data] == [(2, "active"), (1, "archived")]
    assert versions.data[1].archived_at is not None
    assert versions.pagination.total == 2
    old = client.value_models.get_value_model_version(1)
    assert old.id == first.id
    assert old.content.signals[1].defaults["hourly_rate"] == 6000

    backfill = client.value_models.refresh_value_model_backfill()
    assert (backfill.value_model_id, backfill.version) == (second.id, 2)

    with pytest.raises(PaidApiError) as raised:
        client.value_models.get_value_model_version(9)
    assert raised.value.status_code == 404
    assert tenant.http.get("/value-models/versions/32589158477190044731").status_code == 400
    assert tenant.http.get("/value-models/versions/0").status_code == 400


def test_value_receipt_endpoints(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    receipts = client.value_receipts

    created = receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    detail = receipts.get_value_receipt_by_id(created.id)
    assert (detail.status, detail.is_published, detail.allow_embed) == ("draft", False, False)
    assert detail.start_date == MARCH
    assert detail.end_date == APRIL

    synced = receipts.with_raw_response.sync_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    assert synced.data.id == created.id
    feb = datetime(2026, 2, 1, tzinfo=UTC)
    new = receipts.with_raw_response.sync_value_receipt(customer_id=detail.customer_id, start_date=feb, end_date=MARCH)
    assert new.data.id != created.id
    again = receipts.with_raw_response.sync_value_receipt(customer_id=detail.customer_id, start_date=feb, end_date=MARCH)
    assert again.data.id == new.data.id
    assert receipts.get_value_receipt_by_id(new.data.id).total_delivered_value == 0

    refreshed = receipts.refresh_value_receipt(created.id)
    assert refreshed.generated_at is not None

    expires = datetime(2027, 1, 1, tzinfo=UTC)
    published = receipts.publish_value_receipt(created.id, publish_expires_at=expires)
    assert published.is_published is True
    assert published.publish_expires_at == expires
    assert published.published_at is not None
    unpublished = receipts.unpublish_value_receipt(created.id)
    assert unpublished.is_published is False

    assert receipts.seal_value_receipt(created.id).success is True
    assert receipts.get_value_receipt_by_id(created.id).status == "posted"
    synced_sealed = receipts.sync_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    assert (synced_sealed.id, synced_sealed.status) == (created.id, "posted")

    listed = receipts.list_value_receipts()
    assert listed.total == 2
    assert {item.id for item in listed.data} == {created.id, new.data.id}
    assert receipts.list_value_receipts(external_customer_id="ada", limit=1).total == 2
    assert len(receipts.list_value_receipts(limit=1).data) == 1
    assert receipts.list_value_receipts(external_customer_id="nobody").total == 0

    assert receipts.archive_value_receipt(new.data.id).success is True
    assert [item.id for item in receipts.list_value_receipts().data] == [created.id]
    assert receipts.list_value_receipts(archived="true").total == 2
    with pytest.raises(PaidApiError) as raised:
        receipts.publish_value_receipt(new.data.id, request_options=NO_RETRY)
    assert raised.value.status_code == 409
    assert receipts.unarchive_value_receipt(new.data.id).success is True
    assert receipts.list_value_receipts().total == 2


def test_receipt_list_skips_deleted_customer(tenant):
    client = guide_setup(tenant)
    receipts = client.value_receipts
    old = receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    deleted_id = receipts.get_value_receipt_by_id(old.id).customer_id
    client.customers.delete_customer_by_id(deleted_id)

    deleted_only = receipts.list_value_receipts(external_customer_id="ada")

    client.customers.create_customer(name="Ada Byron", external_id="ada")
    new = receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    by_external_id = receipts.list_value_receipts(external_customer_id="ada")
    by_deleted_id = receipts.list_value_receipts(customer_id=deleted_id)

    assert deleted_only.data == []
    assert deleted_only.total == 0
    assert [item.id for item in by_external_id.data] == [new.id]
    assert by_external_id.total == 1
    # The deleted customer's receipts stay readable by its customer id.
    assert [item.id for item in by_deleted_id.data] == [old.id]


def test_sync_answers_201_then_200(tenant):
    guide_setup(tenant)
    body = {"externalCustomerId": "ada", "startDate": "2026-03-01T00:00:00Z", "endDate": "2026-04-01T00:00:00Z"}
    first = tenant.http.post("/value-receipts/sync", json=body)
    second = tenant.http.post("/value-receipts/sync/", json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"startDate": "2026-03-01T00:00:00Z", "endDate": "2026-04-01T00:00:00Z"}, "customerId"),
        (
            {"externalCustomerId": "ada", "customerId": "cus_x", "startDate": "2026-03-01", "endDate": "2026-04-01"},
            "customerId",
        ),
        ({"externalCustomerId": "ada", "startDate": "2026-04-01T00:00:00Z", "endDate": "2026-03-01T00:00:00Z"}, "endDate"),
        ({"externalCustomerId": "ada", "startDate": "2026-03-01T00:00:00Z", "endDate": "2999-01-01T00:00:00Z"}, "endDate"),
        ({"externalCustomerId": "ada", "startDate": "not a date", "endDate": "2026-04-01T00:00:00Z"}, "startDate"),
        (
            {
                "externalCustomerId": "ada",
                "startDate": "2026-03-01T00:00:00Z",
                "endDate": "2026-04-01T00:00:00Z",
                "product": {"productId": "chatbot", "currency": "EUR"},
            },
            "product.currency",
        ),
    ],
)
def test_receipt_request_errors(tenant, body, field):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    response = tenant.http.post("/value-receipts/", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["fields"][0]["field"] == field
    assert tenant.http.get("/value-receipts/").json()["total"] == 0


def test_unknown_ids_answer_404(tenant):
    guide_setup(tenant)
    body = {"startDate": "2026-03-01T00:00:00Z", "endDate": "2026-04-01T00:00:00Z"}
    assert tenant.http.post("/value-receipts/", json={**body, "externalCustomerId": "nobody"}).status_code == 404
    assert tenant.http.post("/value-receipts/", json={**body, "externalCustomerId": "ada", "orderId": "ord_x"}).status_code == 404
    assert tenant.http.post("/value-receipts/", json={**body, "externalCustomerId": "ada", "product": {"productId": "x"}}).status_code == 404
    for action in ("refresh", "seal", "publish", "unpublish", "archive", "unarchive", "links"):
        assert tenant.http.post(f"/value-receipts/vrec_missing/{action}", json={}).status_code == 404
    assert tenant.http.get("/value-receipts/vrec_missing").status_code == 404


def test_other_organization_sees_nothing(tenant, other_tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    receipt = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)

    other = other_tenant.paid()
    with pytest.raises(PaidApiError) as raised:
        other.value_receipts.get_value_receipt_by_id(receipt.id)
    assert raised.value.status_code == 404
    for action in ("seal", "archive", "publish"):
        assert other_tenant.http.post(f"/value-receipts/{receipt.id}/{action}", json={}).status_code == 404
    assert other.value_receipts.list_value_receipts().total == 0
    assert other.value_metrics.list_value_metrics().data == []
    assert other_tenant.http.get("/value-models/").status_code == 404
    assert client.value_receipts.get_value_receipt_by_id(receipt.id).status == "draft"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("formulas", 0, "expression"), "actions * nope", "content.formulas[0].expression"),
        (("formulas", 0, "expression"), "actions.__class__", "content.formulas[0].expression"),
        (("formulas", 1, "calculation"), "magic", "content.formulas[1].calculation"),
        (("signals", 0, "formulaId"), "missing", "content.signals[0].formulaId"),
        (("signals", 1, "defaults", "hourly_rate"), "sixty", "content.signals[1].defaults.hourly_rate"),
        (("signals", 1, "defaults", "time_saved"), "4 fortnights", "content.signals[1].defaults.time_saved"),
        (
            ("valueTypes", 0, "calculationTimeline", 0, "calculation", "unit", "durationUnit"),
            "weeks",
            "content.valueTypes[0].calculationTimeline[0].calculation.unit.durationUnit",
        ),
    ],
)
def test_value_model_content_errors(tenant, path, value, field):
    content = guide_value_model().dict(by_alias=True, exclude_none=True)
    target = content
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    content["valueTypes"][0]["calculationTimeline"][0]["effectiveFrom"] = "2020-01-01T00:00:00Z"
    content["valueTypes"][1]["calculationTimeline"][0]["effectiveFrom"] = "2020-01-01T00:00:00Z"
    response = tenant.http.put("/value-models/", json={"content": content})
    assert response.status_code == 400, response.text
    assert response.json()["fields"][0]["field"] == field
    assert tenant.http.get("/value-models/").status_code == 404


def test_fixed_value_and_data_field_rejected(tenant):
    content = guide_value_model().dict(by_alias=True, exclude_none=True)
    for item in content["valueTypes"]:
        item["calculationTimeline"][0]["effectiveFrom"] = "2020-01-01T00:00:00Z"
    content["signals"][2]["defaults"] = {"amount": 5}
    response = tenant.http.put("/value-models/", json={"content": content})
    assert response.status_code == 400
    assert "either a fixed value or a data field" in response.json()["error"]


def test_public_receipt_page(tenant, server):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    receipt = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    page_url = receipt.public_url

    private = tenant.http.get(page_url)
    assert private.status_code == 403
    assert "private" in private.text

    client.value_receipts.publish_value_receipt(receipt.id)
    page = tenant.http.get(page_url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "Ada Lovelace" in text
    assert "Mar 1, 2026 to Mar 31, 2026" in text
    assert "15.5 minutes" in text
    assert "$37.50" in text
    assert "1 has no known value" in text
    assert "Hourly rate: $60.00" in text
    assert "taken from each signal&#39;s time_saved field" in text

    assert tenant.http.get(server.root + "/receipts/not-a-token").status_code == 404


def test_signed_link_opens_private_receipt_until_expiry(tenant):
    client = guide_setup(tenant)
    receipt = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)

    response = tenant.http.post(f"/value-receipts/{receipt.id}/links", json={"expiresInSeconds": 600})
    assert response.status_code == 200, response.text
    link = response.json()
    assert tenant.http.get(link["url"]).status_code == 200

    tampered = link["url"][:-3] + ("aaa" if not link["url"].endswith("aaa") else "bbb")
    assert tenant.http.get(tampered).status_code == 403
    other = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    token = link["url"].split("?access=")[1]
    assert tenant.http.get(f"{other.public_url}?access={token}").status_code == 403

    clock.freeze(datetime.now(UTC) + timedelta(seconds=601))
    try:
        assert tenant.http.get(link["url"]).status_code == 403
    finally:
        clock.freeze(None)

    too_long = tenant.http.post(f"/value-receipts/{receipt.id}/links", json={"expiresInSeconds": 99 * 86400})
    assert too_long.status_code == 400


def test_published_receipt_closes_at_expiry(tenant):
    client = guide_setup(tenant)
    receipt = client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    expires = datetime.now(UTC) + timedelta(hours=1)
    client.value_receipts.publish_value_receipt(receipt.id, publish_expires_at=expires)
    assert tenant.http.get(receipt.public_url).status_code == 200

    clock.freeze(expires + timedelta(seconds=1))
    try:
        assert tenant.http.get(receipt.public_url).status_code == 403
    finally:
        clock.freeze(None)

    past = tenant.http.post(f"/value-receipts/{receipt.id}/publish", json={"publishExpiresAt": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400


def test_receipt_total_survives_round_trip_through_list(tenant):
    client = guide_setup(tenant)
    client.value_models.update_value_model(content=guide_value_model())
    send_march_signals(client)
    client.value_receipts.create_value_receipt(external_customer_id="ada", start_date=MARCH, end_date=APRIL)
    [summary] = client.value_receipts.list_value_receipts().data
    assert summary.total_delivered_value == MARCH_CENTS
    assert summary.customer_name == "Ada Lovelace"


def test_value_model_long_event_name_without_label(tenant):
    event_name = "e" * 255
    content = {"currency": "USD", "valueTypes": [], "formulas": [], "signals": [{"eventName": event_name}]}

    response = tenant.http.put("/value-models/", json={"content": content})

    assert response.status_code == 200, response.text
    [binding] = response.json()["content"]["signals"]
    assert (binding["eventName"], binding["label"]) == (event_name, "e" * 200)


def test_value_model_deep_formula_is_400(tenant):
    content = {
        "currency": "USD",
        "valueTypes": [
            {
                "slug": "deep",
                "name": "Deep",
                "calculationTimeline": [
                    {
                        "effectiveFrom": "2020-01-01T00:00:00Z",
                        "calculation": {"unit": {"type": "count"}, "formulaIds": ["deep"], "signalEventNames": ["deep_evt"]},
                    }
                ],
            }
        ],
        "formulas": [
            {"id": "deep", "valueTypeSlug": "deep", "variables": [{"id": "n", "label": "N"}], "expression": "-" * 1000 + "n"}
        ],
        "signals": [{"eventName": "deep_evt", "formulaId": "deep", "variableMapping": {"n": "n"}}],
    }

    response = tenant.http.put("/value-models/", json={"content": content})

    assert response.status_code == 400, response.text
    assert "nests deeper than 100 levels" in response.json()["error"]
