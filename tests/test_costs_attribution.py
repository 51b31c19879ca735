"""Attribution of costs to signals: signal spans by trace, REST signals by paid_scope_id, costData."""

from __future__ import annotations

import json
from decimal import Decimal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.otlp_factories import cost_rows, new_trace_id, openai_chat_attributes, send_spans, span

M = Decimal("0.000001")
# gpt-4o-mini (genai-prices 0.2.5): $0.15 input, $0.075 cached input, $0.60 output per MTok.
CALL_COST = 464 * Decimal("0.15") * M + 1536 * Decimal("0.075") * M + 300 * Decimal("0.6") * M


def usd(amount: Decimal) -> str:
    """Render an amount as the API does: twelve decimal places."""
    return f"{amount:.12f}"


def _product(tenant):  # type: ignore[no-untyped-def]
    response = tenant.http.post("/products/", json={"name": "ChatBot", "externalId": "chatbot"})
    assert response.status_code == 201, response.text


def _signal_span(trace_id, *, cost_tracing=True, customer="user-1", data=None):  # type: ignore[no-untyped-def]
    payload = dict(data or {})
    if cost_tracing:
        payload["paid"] = {"enable_cost_tracing": True}
    return span(
        {
            "external_customer_id": customer,
            "external_agent_id": "chatbot",
            "paid_scope_id": 77,
            "event_name": "chat_message",
            "data": json.dumps(payload),
        },
        name="paid.trace.signal",
        scope="paid.python",
        scope_version="",
        trace_id=trace_id,
    )


def _llm_span(trace_id, **kwargs):  # type: ignore[no-untyped-def]
    return span(openai_chat_attributes(cached=1536, **kwargs), trace_id=trace_id)


def _signals(tenant):  # type: ignore[no-untyped-def]
    response = tenant.http.get("/signals/")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _send_rest_signal(tenant, data, customer="user-1", key=None):  # type: ignore[no-untyped-def]
    signal = {"eventName": "chat_message", "customer": {"externalCustomerId": customer},
              "attribution": {"externalProductId": "chatbot"}, "data": data}
    if key:
        signal["idempotencyKey"] = key
    response = tenant.http.post("/signals/bulk", json={"signals": [signal]})
    assert response.status_code == 200, response.text
    return response.json()


def test_signal_span_takes_costs_of_its_trace(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()

    send_spans(tenant, _llm_span(trace_id), _llm_span(trace_id), _signal_span(trace_id), _llm_span(new_trace_id()))

    (signal,) = _signals(tenant)
    assert signal["traceId"] == trace_id
    assert signal["cost"] == {"amount": usd(2 * CALL_COST), "currency": "USD", "status": "priced"}
    assert Decimal(signal["margin"]["amount"]) == -2 * CALL_COST
    linked = [row for row in cost_rows(store, tenant.organization_id) if row.signal_id == signal["id"]]
    assert len(linked) == 2


def test_costs_before_signal_span_are_linked(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()
    send_spans(tenant, _llm_span(trace_id))

    send_spans(tenant, _signal_span(trace_id))

    (signal,) = _signals(tenant)
    assert Decimal(signal["cost"]["amount"]) == CALL_COST


def test_costs_after_signal_span_are_linked(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()
    send_spans(tenant, _signal_span(trace_id))

    send_spans(tenant, _llm_span(trace_id), _llm_span(trace_id))

    (signal,) = _signals(tenant)
    assert Decimal(signal["cost"]["amount"]) == 2 * CALL_COST
    detail = tenant.http.get(f"/signals/{signal['id']}").json()
    assert detail["cost"]["status"] == "priced"


def test_signal_span_without_cost_tracing_takes_nothing(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()

    send_spans(tenant, _llm_span(trace_id), _signal_span(trace_id, cost_tracing=False))

    (signal,) = _signals(tenant)
    assert signal["cost"] == {"amount": usd(Decimal(0)), "currency": "USD", "status": "none"}
    assert all(row.signal_id is None for row in cost_rows(store, tenant.organization_id))


def test_second_signal_of_a_trace_takes_nothing(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()
    send_spans(tenant, _llm_span(trace_id), _signal_span(trace_id))

    send_spans(tenant, _signal_span(trace_id), _llm_span(trace_id))

    signals = sorted(_signals(tenant), key=lambda item: Decimal(item["cost"]["amount"]))
    assert [Decimal(item["cost"]["amount"]) for item in signals] == [Decimal(0), 2 * CALL_COST]


def test_resent_signal_span_is_one_signal(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()
    signal_span = _signal_span(trace_id)

    send_spans(tenant, signal_span, _llm_span(trace_id))
    send_spans(tenant, signal_span)

    (signal,) = _signals(tenant)
    assert Decimal(signal["cost"]["amount"]) == CALL_COST


def test_signal_span_without_customer_is_rejected(tenant, store):
    bad = _signal_span(new_trace_id())
    del bad["attributes"]["external_customer_id"]

    response = send_spans(tenant, bad)

    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "external_customer_id" in answer.partial_success.error_message
    assert _signals(tenant) == []


def test_rest_signal_takes_costs_of_its_scope(tenant, store):
    _product(tenant)
    send_spans(
        tenant,
        _llm_span(new_trace_id(), scope_id=4242),
        _llm_span(new_trace_id(), scope_id=4242),
        _llm_span(new_trace_id(), scope_id=4243),
        _llm_span(new_trace_id(), scope_id=4242, customer="someone-else"),
    )

    _send_rest_signal(tenant, {"paid": {"paid_scope_id": 4242}})

    (signal,) = _signals(tenant)
    assert Decimal(signal["cost"]["amount"]) == 2 * CALL_COST


def test_rest_signal_before_its_costs(tenant, store):
    _product(tenant)
    _send_rest_signal(tenant, {"paid": {"paid_scope_id": 99}})

    send_spans(tenant, _llm_span(new_trace_id(), scope_id=99))

    (signal,) = _signals(tenant)
    assert Decimal(signal["cost"]["amount"]) == CALL_COST


def test_cost_belongs_to_one_signal_only(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()
    send_spans(tenant, _llm_span(trace_id, scope_id=5), _signal_span(trace_id))

    _send_rest_signal(tenant, {"paid": {"paid_scope_id": 5}})

    amounts = sorted(Decimal(item["cost"]["amount"]) for item in _signals(tenant))
    assert amounts == [Decimal(0), CALL_COST]


def test_cost_data_amount_form(tenant, store):
    _product(tenant)

    _send_rest_signal(
        tenant,
        {"costData": {"vendor": "openai", "cost": {"amount": 0.002, "currency": "USD"},
                      "gen_ai.response.model": "gpt-4o"}},
    )

    (signal,) = _signals(tenant)
    assert signal["cost"] == {"amount": "0.002000000000", "currency": "USD", "status": "priced"}
    (record,) = cost_rows(store, tenant.organization_id)
    assert record.source == "signal"
    assert record.cost_source == "client"
    assert record.model == "gpt-4o"


def test_cost_data_usage_form_is_priced(tenant, store):
    _product(tenant)

    _send_rest_signal(
        tenant,
        {"costData": {"vendor": "openai", "attributes": {
            "gen_ai.response.model": "gpt-4.1-mini", "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cached_input_tokens": 600,
            "gen_ai.usage.cache_creation_input_tokens": 200}}},
    )

    (signal,) = _signals(tenant)
    # gpt-4.1-mini (genai-prices 0.2.5): $0.40 input, $0.10 cached input, $1.60 output per MTok.
    # Cached tokens exceed the input count, so input (100) excluded them: 900 input in all, of
    # which 600 cache reads; cache writes have no separate price and bill as input.
    expected = 300 * Decimal("0.4") * M + 600 * Decimal("0.1") * M + 300 * Decimal("1.6") * M
    assert Decimal(signal["cost"]["amount"]) == expected


def test_invalid_cost_data_fails_the_signal(tenant, store):
    _product(tenant)

    signal = {"eventName": "chat_message", "customer": {"externalCustomerId": "user-1"},
              "data": {"costData": {"vendor": "openai", "cost": {"amount": "x", "currency": "USD"}}}}

    response = tenant.http.post("/signals/bulk", json={"signals": [signal]})

    assert response.status_code == 400
    assert response.json()["failed"] == 1
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"][0]["code"] == "validation_error"
    assert response.json()["errors"][0]["field"] == "signals[0].data.costData.cost.amount"
    assert _signals(tenant) == []


def test_cost_data_reports_every_bad_field(tenant, store):
    _product(tenant)
    bad = {"eventName": "chat_message", "customer": {"externalCustomerId": "user-1"},
           "data": {"costData": {"vendor": "openai", "cost": {"amount": "x", "currency": "EUR"}}}}

    response = tenant.http.post("/signals/bulk", json={"signals": [bad]})

    currency = "signals[0].data.costData.cost.currency"
    amount = "signals[0].data.costData.cost.amount"
    expected_fields = [
        {"field": currency, "message": f"Invalid {currency} 'EUR': must be USD; costs in other currencies "
                                       "are not supported yet", "value": "EUR"},
        {"field": amount, "message": f"Invalid {amount} 'x': must be a number", "value": "x"},
    ]
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["error"] == expected_fields[0]["message"] + " (and 1 more problem)"
    assert body["fields"] == expected_fields
    assert body["errors"][0]["field"] == currency
    assert body["errors"][0]["fields"] == expected_fields
    assert _signals(tenant) == []


def test_cost_data_problems_in_mixed_batch(tenant, store):
    _product(tenant)
    good = {"eventName": "chat_message", "customer": {"externalCustomerId": "user-1"}}
    bad = {"eventName": "chat_message", "customer": {"externalCustomerId": "user-1"},
           "data": {"costData": {"vendor": 7, "cost": {"amount": -1, "currency": "USD"},
                                 "start_time": "yesterday"}}}

    response = tenant.http.post("/signals/bulk", json={"signals": [good, bad]})

    assert response.status_code == 200
    body = response.json()
    assert body["ingested"] == 1
    assert body["failed"] == 1
    (error,) = body["errors"]
    assert error["index"] == 1
    assert error["code"] == "validation_error"
    assert [item["field"] for item in error["fields"]] == [
        "signals[1].data.costData.vendor",
        "signals[1].data.costData.start_time",
        "signals[1].data.costData.cost.amount",
    ]
    assert [item["value"] for item in error["fields"]] == [7, "yesterday", -1]
    assert error["message"].endswith(" (and 2 more problems)")
    assert len(_signals(tenant)) == 1


def test_cost_data_dotted_key_value_shown(tenant, store):
    _product(tenant)
    bad = {"eventName": "chat_message", "customer": {"externalCustomerId": "user-1"},
           "data": {"costData": {"vendor": "openai", "cost": {"amount": 0.1, "currency": "USD"},
                                 "gen_ai.response.model": 5}}}

    response = tenant.http.post("/signals/bulk", json={"signals": [bad]})

    assert response.status_code == 400
    [problem] = response.json()["errors"][0]["fields"]
    assert problem["field"] == "signals[0].data.costData.gen_ai.response.model"
    assert problem["value"] == 5
    assert _signals(tenant) == []


def test_unpriced_cost_makes_status_partial(tenant, store):
    _product(tenant)
    trace_id = new_trace_id()

    send_spans(tenant, _llm_span(trace_id), _llm_span(trace_id, model="gpt-99-unknown"), _signal_span(trace_id))

    (signal,) = _signals(tenant)
    assert signal["cost"] == {"amount": usd(CALL_COST), "currency": "USD", "status": "partial"}


def test_concurrent_signal_and_costs_always_link(tenant, store):
    """Signal spans and their LLM spans sent at the same moment, in separate exports, still link."""
    from concurrent.futures import ThreadPoolExecutor

    _product(tenant)
    trace_ids = [new_trace_id() for _ in range(12)]
    jobs = []
    for trace_id in trace_ids:
        jobs.append([_signal_span(trace_id)])
        jobs.append([_llm_span(trace_id)])

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda spans: send_spans(tenant, *spans), jobs))

    assert all(response.status_code == 200 for response in responses)
    records = cost_rows(store, tenant.organization_id)
    assert len(records) == len(trace_ids)
    assert all(record.signal_id is not None for record in records)
    assert len({record.signal_id for record in records}) == len(trace_ids)
