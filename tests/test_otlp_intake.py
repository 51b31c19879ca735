"""OTLP/HTTP intake at /v1/traces: encodings, compression, auth, OTLP responses and deduplication."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from decimal import Decimal

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.otlp_factories import (
    cost_rows,
    cost_total,
    export,
    new_span_id,
    new_trace_id,
    openai_chat_attributes,
    post_export,
    send_spans,
    span,
)

# gpt-4o-mini in genai-prices 0.2.5: $0.15 input, $0.075 cached input, $0.60 output per MTok.
# 2000 prompt tokens of which 1536 cached, 300 completion tokens:
# 464 * 0.15e-6 + 1536 * 0.075e-6 + 300 * 0.6e-6 = 0.0003648
GPT_4O_MINI_CALL_COST = Decimal("0.0003648")


def _json_export(*spans: dict) -> bytes:
    """Render an export as OTLP/JSON by hand: hex ids, camelCase keys, int64 as strings."""
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": []}]}
    for item in spans:
        attributes = []
        for key, value in item["attributes"].items():
            if isinstance(value, bool):
                attributes.append({"key": key, "value": {"boolValue": value}})
            elif isinstance(value, int):
                attributes.append({"key": key, "value": {"intValue": str(value)}})
            else:
                attributes.append({"key": key, "value": {"stringValue": str(value)}})
        body["resourceSpans"][0]["scopeSpans"].append(
            {
                "scope": {"name": item["scope"], "version": item["scope_version"]},
                "spans": [
                    {
                        "traceId": item["trace_id"],
                        "spanId": item["span_id"],
                        "name": item["name"],
                        "kind": 3,
                        "startTimeUnixNano": str(item["start_nano"]),
                        "endTimeUnixNano": str(item["start_nano"] + 1),
                        "attributes": attributes,
                    }
                ],
            }
        )
    return json.dumps(body).encode()


def test_protobuf_export_stores_priced_cost(tenant, store):
    llm_span = span(openai_chat_attributes(cached=1536))

    response = send_spans(tenant, llm_span)

    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")
    (record,) = cost_rows(store, tenant.organization_id)
    assert record.trace_id == llm_span["trace_id"]
    assert record.span_id == llm_span["span_id"]
    assert record.cost_status == "priced"
    assert record.cost_amount == GPT_4O_MINI_CALL_COST
    assert record.input_tokens == 2000
    assert record.cache_read_tokens == 1536
    assert record.output_tokens == 300
    assert record.provider == "openai"
    assert record.price_model_id == "gpt-4o-mini"
    assert record.external_customer_id == "user-1"
    assert record.customer_id is not None


def test_json_export_with_hex_ids(tenant, store):
    llm_span = span(openai_chat_attributes(cached=1536))

    response = post_export(
        tenant.server.root, tenant.api_key, _json_export(llm_span), content_type="application/json"
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    (record,) = cost_rows(store, tenant.organization_id)
    assert record.trace_id == llm_span["trace_id"]
    assert record.span_id == llm_span["span_id"]
    assert record.cost_amount == GPT_4O_MINI_CALL_COST


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_export(tenant, store, encoding):
    body = export(span(openai_chat_attributes())).SerializeToString()
    compressed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)

    response = post_export(
        tenant.server.root, tenant.api_key, compressed, headers={"Content-Encoding": encoding}
    )

    assert response.status_code == 200, response.text
    assert len(cost_rows(store, tenant.organization_id)) == 1


def test_resent_export_changes_no_totals(tenant, store):
    body = export(
        span(openai_chat_attributes(cached=1536)), span(openai_chat_attributes(prompt=10, completion=5))
    ).SerializeToString()
    assert post_export(tenant.server.root, tenant.api_key, body).status_code == 200
    total = cost_total(store, tenant.organization_id)

    again = post_export(tenant.server.root, tenant.api_key, body)

    assert again.status_code == 200
    assert len(cost_rows(store, tenant.organization_id)) == 2
    assert cost_total(store, tenant.organization_id) == total


def test_same_span_ids_in_two_organizations(tenant, other_tenant, store):
    llm_span = span(openai_chat_attributes())
    send_spans(tenant, llm_span)
    send_spans(other_tenant, llm_span)

    assert len(cost_rows(store, tenant.organization_id)) == 1
    assert len(cost_rows(store, other_tenant.organization_id)) == 1


def test_invalid_span_rejected_partially(tenant, store):
    good = span(openai_chat_attributes())
    bad_values = span(openai_chat_attributes(prompt=-5))
    request = export(good, bad_values)
    # A span id of 4 bytes is invalid in OTLP.
    request.resource_spans[0].scope_spans[0].spans.add(
        trace_id=bytes.fromhex(new_trace_id()), span_id=b"\x01\x02\x03\x04", name="short id"
    )

    response = post_export(tenant.server.root, tenant.api_key, request.SerializeToString())

    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "invalid span id" in answer.partial_success.error_message
    assert "must not be negative" in answer.partial_success.error_message
    (record,) = cost_rows(store, tenant.organization_id)
    assert record.span_id == good["span_id"]


def test_unaddressable_customer_ids_rejected(tenant, store):
    llm = span(openai_chat_attributes(customer=".."))
    signal = span({"event_name": "chat_message", "external_customer_id": "a/b"}, name="signal", scope="paid.python")

    response = post_export(tenant.server.root, tenant.api_key, export(llm, signal).SerializeToString())

    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "external_customer_id must not be '..'" in answer.partial_success.error_message
    assert "external_customer_id must not contain '/'" in answer.partial_success.error_message
    assert cost_rows(store, tenant.organization_id) == []
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


def test_span_time_past_int64_rejected(tenant, store):
    late = span(openai_chat_attributes(), start_nano=2**63)

    response = post_export(tenant.server.root, tenant.api_key, export(late).SerializeToString())

    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert f"startTimeUnixNano {2**63} is out of range" in answer.partial_success.error_message
    assert cost_rows(store, tenant.organization_id) == []


def test_long_model_name_is_cut_to_fit(tenant, store):
    long_model = "m" * 300

    response = send_spans(tenant, span(openai_chat_attributes(model=long_model)))

    assert response.status_code == 200
    (record,) = cost_rows(store, tenant.organization_id)
    assert record.model_reported == "m" * 252 + "..."
    assert record.cost_status == "unpriced"


def test_partial_success_in_json(tenant):
    bad = span(openai_chat_attributes(completion=-1))

    response = post_export(
        tenant.server.root, tenant.api_key, _json_export(bad), content_type="application/json"
    )

    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_non_llm_spans_are_accepted_and_ignored(tenant, store):
    parent = span({"external_customer_id": "user-1"}, name="paid.trace.parent_span", scope="paid.python")
    chain = span({"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 5, "llm.model_name": "gpt-4o"})

    response = send_spans(tenant, parent, chain)

    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert cost_rows(store, tenant.organization_id) == []


def test_empty_export_succeeds(tenant):
    response = post_export(tenant.server.root, tenant.api_key, b"")
    assert response.status_code == 200


def test_garbage_protobuf_is_400_status(tenant):
    response = post_export(tenant.server.root, tenant.api_key, b"\xff\xff\xff\xff not protobuf")

    assert response.status_code == 400
    status = status_pb2.Status.FromString(response.content)
    assert status.code == 3  # INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in status.message


def test_garbage_json_is_400(tenant):
    response = post_export(
        tenant.server.root, tenant.api_key, b"{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["message"]


def test_bad_gzip_is_400(tenant):
    response = post_export(
        tenant.server.root, tenant.api_key, b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400


def test_unknown_content_encoding_is_415(tenant):
    response = post_export(
        tenant.server.root, tenant.api_key, b"", headers={"Content-Encoding": "br"}
    )
    assert response.status_code == 415


def test_missing_key_is_401(server):
    response = httpx.post(
        server.root + "/v1/traces",
        content=export().SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 401
    assert status_pb2.Status.FromString(response.content).code == 16  # UNAUTHENTICATED


def test_unknown_key_is_401(server):
    response = post_export(server.root, "tsk_unknown", export().SerializeToString())
    assert response.status_code == 401


def test_unsupported_content_type_is_415(tenant):
    response = post_export(tenant.server.root, tenant.api_key, b"x", content_type="text/plain")
    assert response.status_code == 415


def _serve(app):  # type: ignore[no-untyped-def]
    """Run `app` on a free loopback port in a thread; return (root URL, uvicorn server)."""
    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture
def small_intake(store, database_url):  # type: ignore[no-untyped-def]
    """A second server on the same store with a 4 KiB body limit and one export at a time."""
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    settings = Settings(
        database_url=database_url, otlp_max_body_bytes=4096, otlp_max_concurrent_exports=1
    )
    root, server, thread = _serve(create_app(settings, store=store))
    yield root
    server.should_exit = True
    thread.join(timeout=10)


def test_body_over_limit_is_413(tenant, small_intake):
    big = span(openai_chat_attributes() | {"padding": "x" * 5000})

    response = post_export(small_intake, tenant.api_key, export(big).SerializeToString())

    assert response.status_code == 413


def test_decompressed_body_over_limit_is_413(tenant, small_intake):
    big = span(openai_chat_attributes() | {"padding": "x" * 20000})
    body = gzip.compress(export(big).SerializeToString())
    assert len(body) < 4096

    response = post_export(small_intake, tenant.api_key, body, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 413


def test_overload_is_503_with_retry_after(tenant, store, small_intake):
    body = export(span(openai_chat_attributes())).SerializeToString()
    host, port = small_intake.removeprefix("http://").split(":")
    # Hold one export in flight: send the headers and half of the body, then wait.
    held = socket.create_connection((host, int(port)))
    try:
        held.sendall(
            (
                f"POST /v1/traces HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {tenant.api_key}\r\n"
                f"Content-Type: application/x-protobuf\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        deadline = time.monotonic() + 10
        while True:
            response = post_export(small_intake, tenant.api_key, body)
            if response.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)

        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert status_pb2.Status.FromString(response.content).code == 14  # UNAVAILABLE

        held.sendall(body[len(body) // 2 :])
        assert b"200 OK" in held.recv(4096)
    finally:
        held.close()
    assert post_export(small_intake, tenant.api_key, body).status_code == 200


def test_wrapping_llm_span_not_billed_twice(tenant, store):
    trace_id = new_trace_id()
    framework_llm = span(
        {**openai_chat_attributes(), "openinference.span.kind": "LLM", "llm.system": "langchain"},
        name="paid.trace.ChatModel",
        scope="openinference.instrumentation.langchain",
        trace_id=trace_id,
    )
    chain = span(
        {"openinference.span.kind": "CHAIN", "external_customer_id": "user-1"},
        name="paid.trace.RunnableSequence",
        scope="openinference.instrumentation.langchain",
        trace_id=trace_id,
        parent_span_id=framework_llm["span_id"],
    )
    provider_llm = span(openai_chat_attributes(), trace_id=trace_id, parent_span_id=chain["span_id"])
    separate_call = span(openai_chat_attributes(prompt=100, completion=10), trace_id=trace_id)

    send_spans(tenant, provider_llm, chain, framework_llm, separate_call)

    rows = cost_rows(store, tenant.organization_id)
    assert sorted(row.span_id for row in rows) == sorted([provider_llm["span_id"], separate_call["span_id"]])
    assert sum(row.input_tokens for row in rows) == 2100
