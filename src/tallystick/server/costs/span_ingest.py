"""Turning the spans of one OTLP export into cost records and signals.

Only two kinds of span are stored: LLM calls (one cost record each) and paid-python's
`signal` spans (one signal each, through signal ingestion). Every other span, such as
`paid.trace.parent_span`, is accepted and dropped. The whole export is handled in the caller's
transaction, in phases:

1. read each span: LLM usage, or signal fields; a span with bad values is rejected alone;
2. resolve customers (created like signals create them) and products (never created);
3. price the calls and insert the records with ``ON CONFLICT DO NOTHING`` on (organization,
   trace id, span id), so a resent export adds nothing;
4. ingest signal spans, idempotent per span;
5. attribute costs to signals, new and old, by trace and by paid_scope_id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.costs import attribution, repository
from tallystick.server.costs.normalization import (
    UsageError,
    UsageRecord,
    is_llm_span,
    metadata_attributes,
    normalize_span_usage,
)
from tallystick.server.costs.otlp_decoding import SpanView
from tallystick.server.costs.pricing import price_usage
from tallystick.server.costs.records import cost_row
from tallystick.server.costs.signal_costs import attach_costs_to_signals
from tallystick.server.observability import SPANS_PRICED, SPANS_UNPRICED, count_after_commit
from tallystick.server.schemas import check_path_segment
from tallystick.server.signals import service as signals
from tallystick.server.signals.schemas import SignalInput

log = logging.getLogger(__name__)

# Span names of paid-python's signal(): "signal", renamed by its span processor.
SIGNAL_SPAN_NAMES = frozenset({"signal", "paid.trace.signal"})
# The latest span time stored, in nanoseconds since the epoch: the largest signed 64-bit value.
MAX_UNIX_NANO = 2**63 - 1
# Maximum length of ids and names kept from span attributes, as the columns that store them.
_MAX_ID_LENGTH = 255
# paid_scope_id is an int64 attribute.
_INT64_MAX = 2**63 - 1


class RetryableIngestError(Exception):
    """A failure of the server's, not of the spans: the same export may succeed when resent."""


@dataclass
class SpanIngestResult:
    """Outcome of one export's spans: counts of stored, duplicate and rejected items."""

    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    costs_stored: int = 0
    costs_duplicate: int = 0
    signals_stored: int = 0
    signals_duplicate: int = 0
    costs_attributed: int = 0

    def reject(self, message: str) -> None:
        self.rejected += 1
        self.errors.append(message)


@dataclass
class _LlmSpan:
    span: SpanView
    usage: UsageRecord
    external_customer_id: str | None
    external_product_id: str | None
    paid_scope_id: int | None


@dataclass
class _SignalSpan:
    span: SpanView
    event_name: str
    external_customer_id: str
    external_product_id: str | None
    data: dict[str, Any] | None


def ingest_spans(
    session: Session, organization_id: str, spans: list[SpanView], *, received_at: datetime | None = None
) -> SpanIngestResult:
    """Store the cost records and signals that `spans` describe. Flushes only."""
    received_at = received_at or clock.now()
    result = SpanIngestResult()
    llm_spans, signal_spans = _classify(spans, result)

    external_customers = {item.external_customer_id for item in llm_spans if item.external_customer_id}
    external_customers |= {item.external_customer_id for item in signal_spans}
    customers = repository.customer_ids_by_external_id(
        session, organization_id, external_customers, create=True
    )
    products = repository.product_ids_by_external_id(
        session, organization_id, {item.external_product_id for item in llm_spans if item.external_product_id}
    )

    inserted = _store_costs(session, organization_id, llm_spans, customers, products, received_at, result)
    signal_ids = _store_signals(session, organization_id, signal_spans, received_at, result)

    new_cost_keys = attribution.cost_keys(
        attribution.CostKeyFields(row.trace_id, row.customer_id, row.paid_scope_id) for row in inserted
    )
    result.costs_attributed = attach_costs_to_signals(
        session, organization_id, signal_ids, extra_cost_keys=new_cost_keys
    )

    log.info(
        "otlp.spans_ingested",
        extra={
            "organization_id": organization_id,
            "spans": len(spans),
            "costs_stored": result.costs_stored,
            "costs_duplicate": result.costs_duplicate,
            "signals_stored": result.signals_stored,
            "rejected": result.rejected,
        },
    )
    return result


def _classify(spans: list[SpanView], result: SpanIngestResult) -> tuple[list[_LlmSpan], list[_SignalSpan]]:
    llm_spans: list[_LlmSpan] = []
    signal_spans: list[_SignalSpan] = []
    for span in spans:
        attributes = span.attributes
        is_signal = span.name in SIGNAL_SPAN_NAMES and "event_name" in attributes
        if not is_signal and not is_llm_span(attributes):
            continue
        if span.start_time_unix_nano > MAX_UNIX_NANO or span.end_time_unix_nano > MAX_UNIX_NANO:
            result.reject(f"span {span.span_id} of trace {span.trace_id}: {_times_problem(span)}")
            continue
        if is_signal:
            signal_span = _read_signal_span(span, result)
            if signal_span is not None:
                signal_spans.append(signal_span)
            continue
        external_customer_id = _text_id(attributes.get("external_customer_id"))
        try:
            usage = normalize_span_usage(attributes, span.scope_name, span.scope_version)
            paid_scope_id = _scope_id(attributes.get("paid_scope_id"))
        except UsageError as error:
            result.reject(f"span {span.span_id} of trace {span.trace_id}: {error}")
            continue
        problem = _customer_id_problem(external_customer_id)
        if problem is not None:
            result.reject(f"span {span.span_id} of trace {span.trace_id}: {problem}")
            continue
        llm_spans.append(
            _LlmSpan(
                span=span,
                usage=usage,
                external_customer_id=external_customer_id,
                external_product_id=_text_id(attributes.get("external_agent_id")),
                paid_scope_id=paid_scope_id,
            )
        )
    return _drop_wrapping_llm_spans(spans, llm_spans), signal_spans


def _drop_wrapping_llm_spans(spans: list[SpanView], llm_spans: list[_LlmSpan]) -> list[_LlmSpan]:
    """Drop the LLM spans that have another LLM span below them in the same export.

    When two instrumentations trace one model call, such as a framework's LLM span around the
    provider SDK's span, both carry the call's usage. The innermost span is the call itself,
    so only it is billed. Spans of one call usually end together and share an export.

    NOTE: a wrapping span exported in a later request than its inner span is still billed too.
    """
    if len(llm_spans) < 2:
        return llm_spans
    parents = {(span.trace_id, span.span_id): span.parent_span_id for span in spans}
    llm_keys = {(item.span.trace_id, item.span.span_id) for item in llm_spans}
    wrapping: set[tuple[str, str]] = set()
    for item in llm_spans:
        trace_id = item.span.trace_id
        parent_id = item.span.parent_span_id
        seen: set[str] = set()
        # Walks up through non-LLM spans too, such as a framework's chain span in between.
        while parent_id is not None and parent_id not in seen:
            seen.add(parent_id)
            if (trace_id, parent_id) in llm_keys:
                wrapping.add((trace_id, parent_id))
            parent_id = parents.get((trace_id, parent_id))
    if wrapping:
        log.info("otlp.wrapping_llm_spans_dropped", extra={"spans": len(wrapping)})
    return [item for item in llm_spans if (item.span.trace_id, item.span.span_id) not in wrapping]


def _read_signal_span(span: SpanView, result: SpanIngestResult) -> _SignalSpan | None:
    attributes = span.attributes
    where = f"signal span {span.span_id} of trace {span.trace_id}"
    event_name = attributes.get("event_name")
    if not isinstance(event_name, str) or not event_name.strip() or len(event_name) > _MAX_ID_LENGTH:
        result.reject(f"{where}: event_name must be a non-empty string of at most {_MAX_ID_LENGTH} characters")
        return None
    external_customer_id = _text_id(attributes.get("external_customer_id"))
    if external_customer_id is None:
        result.reject(
            f"{where}: external_customer_id is missing; send signals inside paid_tracing(external_customer_id=...)"
        )
        return None
    problem = _customer_id_problem(external_customer_id)
    if problem is not None:
        result.reject(f"{where}: {problem}")
        return None

    data: dict[str, Any] | None = None
    raw_data = attributes.get("data")
    if raw_data is not None:
        try:
            data = orjson.loads(raw_data) if isinstance(raw_data, str) else raw_data
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            result.reject(f"{where}: data must be a JSON object encoded as a string")
            return None
    return _SignalSpan(
        span=span,
        event_name=event_name.strip(),
        external_customer_id=external_customer_id,
        external_product_id=_text_id(attributes.get("external_agent_id")),
        data=data,
    )


def _store_costs(
    session: Session,
    organization_id: str,
    llm_spans: list[_LlmSpan],
    customers: dict[str, str],
    products: dict[str, str],
    received_at: datetime,
    result: SpanIngestResult,
) -> list[repository.InsertedCost]:
    if not llm_spans:
        return []
    overrides = repository.load_overrides(session, organization_id)
    rows = []
    for item in llm_spans:
        span = item.span
        started_at = _instant(span.start_time_unix_nano) or received_at
        price = price_usage(item.usage, started_at, overrides)
        rows.append(
            cost_row(
                organization_id=organization_id,
                source="span",
                started_at=started_at,
                usage=item.usage,
                price=price,
                trace_id=span.trace_id,
                span_id=span.span_id,
                parent_span_id=span.parent_span_id,
                span_name=span.name[:255],
                scope_name=span.scope_name[:255] or None,
                scope_version=span.scope_version[:64] or None,
                customer_id=customers.get(item.external_customer_id or ""),
                external_customer_id=item.external_customer_id,
                product_id=products.get(item.external_product_id or ""),
                external_product_id=item.external_product_id,
                paid_scope_id=item.paid_scope_id,
                start_time_unix_nano=span.start_time_unix_nano or None,
                end_time_unix_nano=span.end_time_unix_nano or None,
                metadata=metadata_attributes(span.attributes),
                attributes=span.attributes,
            )
        )
    inserted = repository.insert_cost_rows(session, rows)
    new_ids = {cost.id for cost in inserted}
    priced = sum(row["id"] in new_ids and row["cost_status"] == "priced" for row in rows)
    count_after_commit(session, SPANS_PRICED, priced)
    count_after_commit(session, SPANS_UNPRICED, len(inserted) - priced)
    result.costs_stored += len(inserted)
    result.costs_duplicate += len(rows) - len(inserted)
    return inserted


def _store_signals(
    session: Session,
    organization_id: str,
    signal_spans: list[_SignalSpan],
    received_at: datetime,
    result: SpanIngestResult,
) -> list[str]:
    """Ingest the signal spans as one batch; return the ids of the signals stored now.

    One batch, not one call per span, so that credit accounts are locked in the batch's sorted
    order. Costs are attributed afterwards together with the export's cost records.
    """
    if not signal_spans:
        return []
    inputs = [
        SignalInput(
            event_name=item.event_name,
            external_customer_id=item.external_customer_id,
            external_product_id=item.external_product_id,
            timestamp=_instant(item.span.start_time_unix_nano),
            data=item.data,
            # One signal per span, however often the export is resent.
            idempotency_key=f"otlp-span:{item.span.trace_id}:{item.span.span_id}",
        )
        for item in signal_spans
    ]
    outcomes = signals.ingest_signals(
        session,
        organization_id,
        inputs,
        received_at=received_at,
        trace_ids=[item.span.trace_id for item in signal_spans],
        attach_costs=False,
    )

    stored: list[str] = []
    for item, outcome in zip(signal_spans, outcomes, strict=True):
        span = item.span
        if outcome.status == "failed" and outcome.internal:
            # Rolling back the whole export lets the exporter resend it; a partial success
            # would tell it not to.
            raise RetryableIngestError(f"signal span {span.span_id} could not be stored")
        if outcome.status == "failed":
            message = outcome.error.message if outcome.error is not None else "rejected"
            result.reject(f"signal span {span.span_id} of trace {span.trace_id}: {message}")
        elif outcome.status == "duplicate":
            result.signals_duplicate += 1
        else:
            result.signals_stored += 1
            if outcome.signal_id is not None:
                stored.append(outcome.signal_id)
    return stored


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _times_problem(span: SpanView) -> str:
    """Say which of the span's times is past MAX_UNIX_NANO.

    OTLP sends them as unsigned 64-bit nanoseconds, and the columns are signed 64-bit.
    """
    name, value = ("startTimeUnixNano", span.start_time_unix_nano)
    if value <= MAX_UNIX_NANO:
        name, value = ("endTimeUnixNano", span.end_time_unix_nano)
    return f"{name} {value} is out of range: at most {MAX_UNIX_NANO} (in the year 2262)"


def _instant(unix_nano: int) -> datetime | None:
    """Convert OTLP nanoseconds since the epoch to a UTC datetime (microsecond precision)."""
    if not unix_nano:
        return None
    try:
        return _EPOCH + timedelta(microseconds=unix_nano // 1000)
    except OverflowError:
        return None


def _customer_id_problem(external_customer_id: str | None) -> str | None:
    """Say why a customer could not be addressed by this external id, or return None."""
    try:
        check_path_segment(external_customer_id)
    except ValueError as error:
        return f"external_customer_id {error}"
    return None


def _text_id(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > _MAX_ID_LENGTH:
        return None
    return value


def _scope_id(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"paid_scope_id must be an integer, not {value!r}") from None
    if not -_INT64_MAX <= number <= _INT64_MAX:
        raise UsageError(f"paid_scope_id must fit in 64 bits, got {number}")
    return number
