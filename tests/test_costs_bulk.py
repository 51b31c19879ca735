"""POST /costs/bulk through paid-python and raw HTTP, and the price override endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from paid.types import Cost_Cost, Cost_Usage, CustomerByExternalId, ProductByExternalId, TokenUsage

from tallystick.server.field_hints import MAX_HINT_KEYS

from tests.guide import create_guide_catalog
from tests.otlp_factories import cost_rows, cost_total, send_spans, span

M = Decimal("0.000001")
WHEN = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _create_product(tenant, external_id="chatbot"):  # type: ignore[no-untyped-def]
    response = tenant.http.post("/products/", json={"name": "ChatBot", "externalId": external_id})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_sdk_cost_and_usage_records(tenant, store):
    product_id = _create_product(tenant)
    client = tenant.paid()

    result = client.costs.create_costs(
        costs=[
            Cost_Cost(customer=CustomerByExternalId(external_customer_id="u1"), amount=0.01, currency="USD",
                      timestamp=WHEN),
            Cost_Usage(
                customer=CustomerByExternalId(external_customer_id="u1"),
                product=ProductByExternalId(external_product_id="chatbot"),
                vendor="anthropic",
                model="claude-3-5-haiku-20241022",
                timestamp=WHEN,
                usage=TokenUsage(input_tokens=50, output_tokens=400, cache_read_input_tokens=30,
                                 cache_creation_input_tokens=10),
            ),
        ]
    )

    assert result.ingested == 2
    assert result.duplicates == 0
    amount, usage = cost_rows(store, tenant.organization_id)[0:2]
    records = {row.cost_source: row for row in cost_rows(store, tenant.organization_id)}
    assert records["client"].cost_amount == Decimal("0.01")
    priced = records["price_table"]
    # claude-3-5-haiku (genai-prices 0.2.5): $0.80 input, $0.08 cache read, $1 cache write, $4 output per MTok.
    assert priced.cost_amount == 50 * Decimal("0.8") * M + 30 * Decimal("0.08") * M + 10 * M + 400 * 4 * M
    assert priced.input_tokens == 90
    assert priced.product_id == product_id
    assert amount.customer_id == usage.customer_id


def test_replayed_bulk_request_changes_no_totals(tenant, store):
    client = tenant.paid()
    costs = [
        Cost_Cost(customer=CustomerByExternalId(external_customer_id="u1"), amount=0.25, currency="USD",
                  timestamp=WHEN),
        Cost_Usage(customer=CustomerByExternalId(external_customer_id="u1"), vendor="openai", model="gpt-4o-mini",
                   timestamp=WHEN, usage=TokenUsage(input_tokens=1000, output_tokens=100)),
    ]
    client.costs.create_costs(costs=costs)
    total = cost_total(store, tenant.organization_id)

    again = client.costs.create_costs(costs=costs)

    assert again.ingested == 0
    assert again.duplicates == 2
    assert cost_total(store, tenant.organization_id) == total
    assert total == Decimal("0.25") + 1000 * Decimal("0.15") * M + 100 * Decimal("0.6") * M


def test_idempotency_key_field_and_header(tenant, store):
    record = {"type": "cost", "customer": {"externalCustomerId": "u1"}, "amount": 1, "currency": "USD"}

    first = tenant.http.post("/costs/bulk", json={"costs": [record | {"idempotencyKey": "k1"}]})
    second = tenant.http.post("/costs/bulk", json={"costs": [record | {"idempotencyKey": "k1"}]})
    by_header = [tenant.http.post("/costs/bulk", json={"costs": [record]}, headers={"Idempotency-Key": "req-1"})
                 for _ in range(2)]
    unkeyed = [tenant.http.post("/costs/bulk", json={"costs": [record]}) for _ in range(2)]

    assert first.json() == {"ingested": 1, "duplicates": 0}
    assert second.json() == {"ingested": 0, "duplicates": 1}
    assert [response.json()["ingested"] for response in by_header] == [1, 0]
    # Without a key or a timestamp, each request is a new cost.
    assert [response.json()["ingested"] for response in unkeyed] == [1, 1]
    assert cost_total(store, tenant.organization_id) == Decimal(4)


def test_one_bad_record_stores_nothing(tenant, store):
    response = tenant.http.post(
        "/costs/bulk",
        json={
            "costs": [
                {"type": "cost", "customer": {"externalCustomerId": "u1"}, "amount": 1, "currency": "USD"},
                {"type": "cost", "customer": {"externalCustomerId": "u1"}, "amount": -1, "currency": "USD"},
                {"type": "usage", "customer": {"externalCustomerId": "u1"}, "vendor": "openai",
                 "model": "gpt-4o", "usage": {"inputTokens": "lots"}},
            ]
        },
    )

    assert response.status_code == 400
    body = response.json()
    fields = [item["field"] for item in body["fields"]]
    assert "costs[1].amount" in fields
    assert "costs[2].usage.inputTokens" in fields
    assert cost_rows(store, tenant.organization_id) == []


def test_unknown_model_without_override_is_400(tenant, store):
    record = {"type": "usage", "customer": {"externalCustomerId": "u1"}, "vendor": "acme",
              "model": "acme-large", "usage": {"inputTokens": 10, "outputTokens": 5}}

    rejected = tenant.http.post("/costs/bulk", json={"costs": [record]})
    accepted = tenant.http.post(
        "/costs/bulk", json={"costs": [record | {"costOverride": {"amount": 0.5, "currency": "USD"}}]}
    )

    assert rejected.status_code == 400
    assert rejected.json()["fields"][0]["field"] == "costs[0].model"
    assert "costOverride" in rejected.json()["error"]
    assert accepted.json() == {"ingested": 1, "duplicates": 0}
    (record_row,) = cost_rows(store, tenant.organization_id)
    assert record_row.cost_amount == Decimal("0.5")
    assert record_row.input_tokens == 10


def test_record_product_key_sets_product(tenant, store):
    catalog = create_guide_catalog(tenant.paid())
    usage = {"type": "usage", "customer": {"externalCustomerId": "acme"}, "vendor": "openai",
             "model": "gpt-4.1-mini", "usage": {"inputTokens": 100, "outputTokens": 300}}
    with_product = {**usage, "product": {"externalProductId": "chatbot"}}
    # Signals name their product under attribution, but a cost record does not read that key.
    with_attribution = {**usage, "attribution": {"externalProductId": "chatbot"}}

    response = tenant.http.post("/costs/bulk", json={"costs": [with_product, with_attribution]})

    assert response.status_code == 200, response.text
    assert response.json()["ingested"] == 2
    products = sorted(str(row.product_id) for row in cost_rows(store, tenant.organization_id))
    assert products == sorted([catalog.product_id, "None"])


def test_unknown_product_and_customer_are_400(tenant, store):
    response = tenant.http.post(
        "/costs/bulk",
        json={"costs": [
            {"type": "cost", "customer": {"customerId": "cus_nope"}, "amount": 1, "currency": "USD"},
            {"type": "cost", "customer": {"externalCustomerId": "new-user"}, "product": {"externalProductId": "nope"},
             "amount": 1, "currency": "USD"},
        ]},
    )

    assert response.status_code == 400
    fields = [item["field"] for item in response.json()["fields"]]
    assert fields == ["costs[0].customer.customerId", "costs[1].product.externalProductId"]
    messages = [item["message"] for item in response.json()["fields"]]
    assert messages[0].startswith("customer not found.")
    assert messages[1] == "product not found. Cost records never create products, so create it first"
    # All or nothing: the customer that record 1 names was not created either.
    assert tenant.http.get("/customers/external/new-user").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"costs": [{"type": "cost", "customer": {"externalCustomerId": "u"}, "amount": 1, "currency": "EUR"}]},
         "costs[0].currency"),
        ({"costs": [{"type": "refund", "customer": {"externalCustomerId": "u"}}]}, "costs[0].type"),
        ({"costs": [{"type": "cost", "customer": {}, "amount": 1, "currency": "USD"}]}, "costs[0].customer"),
        ({"costs": [{"type": "cost", "customer": {"externalCustomerId": "u"}, "amount": 1, "currency": "USD",
                     "timestamp": "yesterday"}]}, "costs[0].timestamp"),
        ({"costs": "x"}, "costs"),
    ],
)
def test_invalid_records_name_the_field(tenant, body, field):
    response = tenant.http.post("/costs/bulk", json=body)

    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == field


def test_price_override_api_prices_unknown_model(tenant, store):
    saved = tenant.http.put(
        "/costs/price-overrides",
        json={"model": "acme-large", "inputPerMillionTokens": "2", "outputPerMillionTokens": "8",
              "cacheReadPerMillionTokens": "0.5", "description": "negotiated"},
    )
    assert saved.status_code == 200, saved.text
    replaced = tenant.http.put(
        "/costs/price-overrides",
        json={"model": "ACME-large", "inputPerMillionTokens": "3", "outputPerMillionTokens": "9"},
    )

    send_spans(tenant, span({"gen_ai.system": "acme", "gen_ai.operation.name": "chat",
                             "gen_ai.response.model": "acme-large", "gen_ai.usage.input_tokens": 1000,
                             "gen_ai.usage.output_tokens": 100}, scope="custom"))

    assert replaced.json()["id"] == saved.json()["id"]
    listed = tenant.http.get("/costs/price-overrides").json()["data"]
    assert [item["inputPerMillionTokens"] for item in listed] == ["3"]
    assert listed == [replaced.json()]
    (record,) = cost_rows(store, tenant.organization_id)
    assert record.cost_source == "override"
    assert record.cost_amount == 1000 * 3 * M + 100 * 9 * M

    deleted = tenant.http.delete(f"/costs/price-overrides/{saved.json()['id']}")
    assert deleted.status_code == 200
    assert tenant.http.get("/costs/price-overrides").json()["data"] == []


def test_price_override_validation(tenant):
    response = tenant.http.put(
        "/costs/price-overrides", json={"model": "m", "inputPerMillionTokens": "-1", "outputPerMillionTokens": "1"}
    )
    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "inputPerMillionTokens"
    missing = tenant.http.delete("/costs/price-overrides/cpo_missing")
    assert missing.status_code == 404


def test_price_places_reported_per_field(tenant):
    too_precise = "0.0000000000001"

    response = tenant.http.put(
        "/costs/price-overrides",
        json={"model": "m", "inputPerMillionTokens": too_precise, "outputPerMillionTokens": too_precise},
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert [item["field"] for item in body["fields"]] == ["inputPerMillionTokens", "outputPerMillionTokens"]
    assert [item["message"] for item in body["fields"]] == ["must have at most 12 decimal places"] * 2
    assert [item["value"] for item in body["fields"]] == [too_precise] * 2
    assert body["error"] == (
        f"Invalid inputPerMillionTokens '{too_precise}': must have at most 12 decimal places"
        " (and 1 more problem)"
    )
    assert tenant.http.get("/costs/price-overrides").json()["data"] == []


def test_missing_price_hint_skips_valid_fields(tenant):
    # inputPerMillionTokens is close to outputPerMillionTokens, but it is a field of its own.
    response = tenant.http.put(
        "/costs/price-overrides", json={"model": "m", "inputPerMillionTokens": "1"}
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["error"] == "Invalid outputPerMillionTokens: Field required"
    assert body["fields"] == [{"field": "outputPerMillionTokens", "message": "Field required", "value": None}]
    assert tenant.http.get("/costs/price-overrides").json()["data"] == []


def test_misspelled_price_key_is_hinted(tenant):
    response = tenant.http.put(
        "/costs/price-overrides",
        json={"model": "m", "inputPerMillionTokens": "1", "outputPerMilionTokens": "2"},
    )

    assert response.status_code == 400
    body = response.json()
    hint = "(the body has 'outputPerMilionTokens'; did you mean 'outputPerMillionTokens'?)"
    assert body["error"] == f"Invalid outputPerMillionTokens: Field required {hint}"
    assert body["fields"][0]["field"] == "outputPerMillionTokens"
    assert tenant.http.get("/costs/price-overrides").json()["data"] == []


def test_hint_skipped_for_huge_object(tenant):
    junk = {f"junk{number}": number for number in range(MAX_HINT_KEYS)}
    body = {"model": "m", "inputPerMillionTokens": "1", "outputPerMilionTokens": "2", **junk}

    response = tenant.http.put("/costs/price-overrides", json=body)

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid outputPerMillionTokens: Field required"
    assert tenant.http.get("/costs/price-overrides").json()["data"] == []


def test_overrides_are_per_organization(tenant, other_tenant):
    tenant.http.put("/costs/price-overrides", json={"model": "m", "inputPerMillionTokens": "1",
                                                    "outputPerMillionTokens": "1"})
    override_id = tenant.http.get("/costs/price-overrides").json()["data"][0]["id"]

    assert other_tenant.http.get("/costs/price-overrides").json()["data"] == []
    assert other_tenant.http.delete(f"/costs/price-overrides/{override_id}").status_code == 404


def test_cost_row_keys_serialize_with_orjson() -> None:
    import orjson

    from tallystick.server.costs import records

    # A str subclass as a key makes orjson fail, and the bulk insert then takes the much
    # slower standard json module.
    assert [key for key in records._DEFAULTS if type(key) is not str] == []
    assert orjson.loads(orjson.dumps([records._DEFAULTS]))[0]["metadata"] is None
