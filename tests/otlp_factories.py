"""Builders of OTLP trace exports and readers of the cost records they produce."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from sqlalchemy import func, select

# 2026-06-01T12:00:00Z in nanoseconds since the epoch.
DEFAULT_START_NANO = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000_000


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def span(
    attributes: dict[str, Any],
    *,
    name: str = "paid.trace.ChatCompletion",
    scope: str = "openinference.instrumentation.openai",
    scope_version: str = "0.1.66",
    trace_id: str | None = None,
    span_id: str | None = None,
    parent_span_id: str | None = None,
    start_nano: int = DEFAULT_START_NANO,
) -> dict[str, Any]:
    """Describe one span; `export` turns a list of them into a request."""
    return {
        "attributes": attributes,
        "name": name,
        "scope": scope,
        "scope_version": scope_version,
        "trace_id": trace_id or new_trace_id(),
        "span_id": span_id or new_span_id(),
        "parent_span_id": parent_span_id,
        "start_nano": start_nano,
    }


def export(*spans: dict[str, Any]) -> ExportTraceServiceRequest:
    """Build an export with one resource and one scope block per distinct scope."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="tests"))
    )
    scopes: dict[tuple[str, str], Any] = {}
    for item in spans:
        key = (item["scope"], item["scope_version"])
        if key not in scopes:
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = item["scope"]
            scope_spans.scope.version = item["scope_version"]
            scopes[key] = scope_spans
        proto_span = scopes[key].spans.add()
        proto_span.trace_id = bytes.fromhex(item["trace_id"])
        proto_span.span_id = bytes.fromhex(item["span_id"])
        if item["parent_span_id"]:
            proto_span.parent_span_id = bytes.fromhex(item["parent_span_id"])
        proto_span.name = item["name"]
        proto_span.kind = 3  # CLIENT
        proto_span.start_time_unix_nano = item["start_nano"]
        proto_span.end_time_unix_nano = item["start_nano"] + 1_500_000_000
        for key, value in item["attributes"].items():
            proto_span.attributes.append(KeyValue(key=key, value=any_value(value)))
    return request


def post_export(
    root: str,
    api_key: str,
    body: bytes,
    *,
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = {"Authorization": f"Bearer {api_key}", "Content-Type": content_type}
    all_headers.update(headers or {})
    return httpx.post(root + "/v1/traces", content=body, headers=all_headers, timeout=30)


def send_spans(tenant: Any, *spans: dict[str, Any]) -> httpx.Response:
    """Export `spans` as protobuf to the tenant's server; assert the export was accepted."""
    response = post_export(tenant.server.root, tenant.api_key, export(*spans).SerializeToString())
    assert response.status_code == 200, response.text
    return response


def openai_chat_attributes(
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    prompt: int = 2000,
    completion: int = 300,
    cached: int = 0,
    customer: str | None = "user-1",
    product: str | None = "chatbot",
    scope_id: int | None = None,
) -> dict[str, Any]:
    """Attributes of openinference-instrumentation-openai 0.1.66 on a chat completion span."""
    attributes: dict[str, Any] = {
        "llm.system": "openai",
        "llm.model_name": model,
        "llm.token_count.prompt": prompt,
        "llm.token_count.completion": completion,
        "llm.token_count.total": prompt + completion,
        "llm.token_count.prompt_details.cache_read": cached,
        "openinference.span.kind": "LLM",
        "paid.sdk.version": "python-1.12.0",
    }
    if customer is not None:
        attributes["external_customer_id"] = customer
    if product is not None:
        attributes["external_agent_id"] = product
    if scope_id is not None:
        attributes["paid_scope_id"] = scope_id
    return attributes


def cost_rows(store: Any, organization_id: str) -> list[Any]:
    from tallystick.server.models.cost import CostRecord

    with store.read_sessions() as session:
        return list(
            session.scalars(
                select(CostRecord)
                .where(CostRecord.organization_id == organization_id)
                .order_by(CostRecord.started_at, CostRecord.id)
            )
        )


def cost_total(store: Any, organization_id: str) -> Decimal:
    """Return the SQL sum of the organization's priced cost amounts."""
    from tallystick.server.models.cost import CostRecord

    with store.read_sessions() as session:
        total = session.scalar(
            select(func.coalesce(func.sum(CostRecord.cost_amount), 0)).where(
                CostRecord.organization_id == organization_id
            )
        )
    return Decimal(total)
