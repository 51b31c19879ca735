"""GET /traces and GET /costs/aggregates: filters, shapes and sums."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tests.otlp_factories import openai_chat_attributes, send_spans, span

M = Decimal("0.000001")
DAY_ONE = int(datetime(2026, 6, 1, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
DAY_TWO = int(datetime(2026, 6, 2, 12, tzinfo=UTC).timestamp()) * 1_000_000_000
# gpt-4o-mini (genai-prices 0.2.5): 1000 input at $0.15 and 100 output at $0.60 per MTok.
SMALL_CALL = 1000 * Decimal("0.15") * M + 100 * Decimal("0.6") * M


def _call(customer, start, **metadata):  # type: ignore[no-untyped-def]
    attributes = openai_chat_attributes(prompt=1000, completion=100, customer=customer, product=None)
    attributes.update({f"metadata.{key}": value for key, value in metadata.items()})
    return span(attributes, start_nano=start)


def test_traces_listing_shape_and_filters(tenant):
    send_spans(
        tenant,
        _call("alice", DAY_ONE, plan="pro"),
        _call("alice", DAY_TWO, plan="starter"),
        _call("bob", DAY_TWO, plan="pro"),
        span(openai_chat_attributes(model="gpt-99-unknown", customer="bob", product=None), start_nano=DAY_TWO),
    )

    everything = tenant.http.get("/traces").json()
    alice = tenant.http.get("/traces", params={"externalCustomerId": "alice"}).json()
    pro = tenant.http.get("/traces", params={"metadata": '{"plan": "pro"}'}).json()
    day_two = tenant.http.get("/traces", params={"startTime": "2026-06-02", "endTime": "2026-06-02"}).json()
    unpriced = tenant.http.get("/traces", params={"status": "unpriced"}).json()
    paged = tenant.http.get("/traces", params={"limit": 1, "offset": 1}).json()

    assert everything["meta"]["total"] == 4
    first = everything["traces"][0]
    assert set(first) >= {"name", "vendor", "model", "cost", "startTimeUnixNano", "endTimeUnixNano",
                          "attributes", "customerId", "externalCustomerId", "productId", "externalProductId"}
    assert alice["meta"]["total"] == 2
    assert {item["externalCustomerId"] for item in pro["traces"]} == {"alice", "bob"}
    assert pro["meta"]["total"] == 2
    assert day_two["meta"]["total"] == 3
    assert unpriced["meta"]["total"] == 1
    assert unpriced["traces"][0]["cost"]["amount"] is None
    assert paged["meta"] == {"limit": 1, "offset": 1, "count": 1, "total": 4, "hasMore": True}
    priced = next(item for item in alice["traces"] if item["startTimeUnixNano"] == str(DAY_ONE))
    assert Decimal(priced["cost"]["amountDecimal"]) == SMALL_CALL
    assert priced["vendor"] == "openai"


def test_cost_filters_skip_deleted_customer(tenant):
    send_spans(tenant, _call("alice", DAY_ONE))
    deleted_id = tenant.http.get("/customers/external/alice").json()["id"]
    assert tenant.http.delete(f"/customers/{deleted_id}").status_code == 200

    deleted_traces = tenant.http.get("/traces", params={"externalCustomerId": "alice"}).json()
    deleted_aggregates = tenant.http.get(
        "/costs/aggregates", params={"groupBy": "customer", "externalCustomerId": "alice"}
    ).json()

    send_spans(tenant, _call("alice", DAY_TWO), _call("alice", DAY_TWO))
    live_id = tenant.http.get("/customers/external/alice").json()["id"]
    traces = tenant.http.get("/traces", params={"externalCustomerId": "alice"}).json()
    aggregates = tenant.http.get(
        "/costs/aggregates", params={"groupBy": "customer", "externalCustomerId": "alice"}
    ).json()
    by_deleted_id = tenant.http.get("/traces", params={"customerId": deleted_id}).json()

    assert deleted_traces["traces"] == []
    assert deleted_traces["meta"]["total"] == 0
    assert deleted_aggregates["data"] == []
    assert live_id != deleted_id
    assert [item["customerId"] for item in traces["traces"]] == [live_id, live_id]
    assert traces["meta"]["total"] == 2
    assert [item["customerId"] for item in aggregates["data"]] == [live_id]
    assert aggregates["data"][0]["costRecords"] == 2
    assert Decimal(aggregates["data"][0]["cost"]["amount"]) == 2 * SMALL_CALL
    # The deleted customer's costs stay readable by its customer id.
    assert [item["startTimeUnixNano"] for item in by_deleted_id["traces"]] == [str(DAY_ONE)]


def test_traces_filter_validation(tenant):
    assert tenant.http.get("/traces", params={"metadata": "[1]"}).status_code == 400
    assert tenant.http.get("/traces", params={"limit": 5000}).status_code == 400
    assert tenant.http.get("/traces", params={"status": "free"}).status_code == 400


def test_traces_are_per_organization(tenant, other_tenant):
    send_spans(tenant, _call("alice", DAY_ONE))

    assert other_tenant.http.get("/traces").json()["meta"]["total"] == 0


def test_aggregates_per_customer_and_day(tenant):
    send_spans(
        tenant,
        _call("alice", DAY_ONE),
        _call("alice", DAY_ONE),
        _call("alice", DAY_TWO),
        _call("bob", DAY_TWO),
        span(openai_chat_attributes(model="gpt-99-unknown", customer="bob", product=None), start_nano=DAY_TWO),
    )

    response = tenant.http.get("/costs/aggregates", params={"groupBy": "customer,day"})

    assert response.status_code == 200, response.text
    rows = {(item["externalCustomerId"], item["day"]): item for item in response.json()["data"]}
    assert set(rows) == {("alice", "2026-06-01"), ("alice", "2026-06-02"), ("bob", "2026-06-02")}
    assert Decimal(rows["alice", "2026-06-01"]["cost"]["amount"]) == 2 * SMALL_CALL
    assert rows["alice", "2026-06-01"]["costRecords"] == 2
    assert rows["bob", "2026-06-02"]["unpricedCostRecords"] == 1
    assert Decimal(rows["bob", "2026-06-02"]["cost"]["amount"]) == SMALL_CALL
    assert Decimal(rows["bob", "2026-06-02"]["margin"]["amount"]) == -SMALL_CALL


def test_aggregates_group_by_validation(tenant):
    response = tenant.http.get("/costs/aggregates", params={"groupBy": "planet"})

    assert response.status_code == 400
    assert response.json()["fields"][0]["field"] == "groupBy"
