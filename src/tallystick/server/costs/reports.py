"""Reads of cost data: aggregates per customer, product and day, and the trace listing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Date, Select, case, cast, func, literal, select
from sqlalchemy.orm import Session

from tallystick.server.costs.margin import ZERO, credit_unit_values, usd_text
from tallystick.server.costs.schemas import (
    CostAggregateListOut,
    CostAggregateOut,
    MoneyOut,
    TraceCostOut,
    TraceListOut,
    TraceMetaOut,
    TraceOut,
)
from tallystick.server.customers.service import live_customer_id_by_external_id
from tallystick.server.errors import bad_request
from tallystick.server.models import Customer, LedgerEntry, Product
from tallystick.server.models.cost import CostRecord
from tallystick.server.models.signal import Signal
from tallystick.server.pagination import PageParams, pagination_body, parse_int_parameter

GROUP_DIMENSIONS = ("customer", "product", "day")
DEFAULT_TRACE_LIMIT = 100
MAX_TRACE_LIMIT = 1000


@dataclass(frozen=True)
class ReportFilters:
    start: datetime | None = None
    end: datetime | None = None
    customer_id: str | None = None
    external_customer_id: str | None = None
    product_id: str | None = None
    external_product_id: str | None = None


@dataclass(frozen=True)
class TraceFilters(ReportFilters):
    metadata: dict[str, Any] | None = None
    status: str | None = None


def parse_group_by(raw: str) -> tuple[str, ...]:
    dimensions = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [part for part in dimensions if part not in GROUP_DIMENSIONS]
    if unknown or not dimensions:
        raise bad_request("groupBy", f"must list one or more of {', '.join(GROUP_DIMENSIONS)}", raw)
    return dimensions


def parse_metadata_filter(raw: str | None) -> dict[str, Any] | None:
    """Parse the metadata filter: a JSON object, nested objects meaning dotted keys."""
    if raw is None or raw == "":
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("metadata", "must be a JSON object, such as {\"plan\":\"pro\"}", raw) from None
    if not isinstance(value, dict):
        raise bad_request("metadata", "must be a JSON object, such as {\"plan\":\"pro\"}", raw)
    flat: dict[str, Any] = {}
    _flatten(value, "", flat)
    for key, item in flat.items():
        if not isinstance(item, (str, int, float, bool)):
            raise bad_request("metadata", f"value of {key} must be a string, number or boolean", raw)
    return flat


def _flatten(value: dict[str, Any], prefix: str, into: dict[str, Any]) -> None:
    # paid_tracing(metadata=...) flattens nested dicts into dotted attribute names.
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            _flatten(item, f"{name}.", into)
        else:
            into[name] = item


def parse_limit(raw: str | None) -> int:
    return parse_int_parameter("limit", raw, DEFAULT_TRACE_LIMIT, 1, MAX_TRACE_LIMIT)


def _customer_condition(column: Any, organization_id: str, filters: ReportFilters) -> list[Any]:
    conditions = []
    if filters.customer_id is not None:
        conditions.append(column == filters.customer_id)
    if filters.external_customer_id is not None:
        customer_ids = live_customer_id_by_external_id(organization_id, filters.external_customer_id)
        conditions.append(column.in_(customer_ids))
    return conditions


def _product_condition(column: Any, organization_id: str, filters: ReportFilters) -> list[Any]:
    conditions = []
    if filters.product_id is not None:
        conditions.append(column == filters.product_id)
    if filters.external_product_id is not None:
        conditions.append(
            column.in_(
                select(Product.id).where(
                    Product.organization_id == organization_id,
                    Product.external_id == filters.external_product_id,
                )
            )
        )
    return conditions


def _day(session: Session, column: Any) -> Any:
    """Return the SQL expression of the UTC date of a timestamp column."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    # SQLite stores UTC timestamps as text; date() reads their date part.
    return func.date(column)


def _day_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (date, datetime)):
        return value.isoformat()[:10]
    return str(value)[:10]


@dataclass
class _Group:
    signals: int = 0
    cost_records: int = 0
    unpriced_cost_records: int = 0
    cost: Decimal = ZERO
    revenue: Decimal = ZERO


def aggregates(
    session: Session,
    organization_id: str,
    dimensions: tuple[str, ...],
    filters: ReportFilters,
    page: PageParams,
) -> CostAggregateListOut:
    """Group costs (by their own time) and signal revenue (by signal time) and merge the groups."""
    groups: dict[tuple[Any, ...], _Group] = {}
    _add_costs(session, organization_id, dimensions, filters, groups)
    _add_signals(session, organization_id, dimensions, filters, groups)

    keys = sorted(groups, key=lambda key: tuple("" if part is None else str(part) for part in key), reverse=True)
    total = len(keys)
    page_keys = keys[page.offset : page.offset + page.limit]
    names = _external_ids(session, organization_id, dimensions, page_keys)
    items = [_aggregate_out(dimensions, key, groups[key], names) for key in page_keys]
    return CostAggregateListOut.model_validate(
        {"data": items, "pagination": pagination_body(page, total)}
    )


def _group_columns(session: Session, dimensions: tuple[str, ...], customer: Any, product: Any, moment: Any) -> list[Any]:
    columns = []
    for dimension in dimensions:
        if dimension == "customer":
            columns.append(customer)
        elif dimension == "product":
            columns.append(product)
        else:
            columns.append(_day(session, moment))
    return columns


def _normalize_key(dimensions: tuple[str, ...], key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_day_text(part) if dimension == "day" else part for dimension, part in zip(dimensions, key, strict=True))


def _add_costs(
    session: Session,
    organization_id: str,
    dimensions: tuple[str, ...],
    filters: ReportFilters,
    groups: dict[tuple[Any, ...], _Group],
) -> None:
    columns = _group_columns(session, dimensions, CostRecord.customer_id, CostRecord.product_id, CostRecord.started_at)
    priced = CostRecord.cost_status == "priced"
    statement: Select[Any] = select(
        *columns,
        func.count(),
        func.sum(case((priced, 0), else_=1)),
        func.coalesce(func.sum(CostRecord.cost_amount), 0),
    ).where(CostRecord.organization_id == organization_id)
    statement = statement.where(*_time_conditions(CostRecord.started_at, filters))
    statement = statement.where(*_customer_condition(CostRecord.customer_id, organization_id, filters))
    statement = statement.where(*_product_condition(CostRecord.product_id, organization_id, filters))
    for row in session.execute(statement.group_by(*columns)):
        key = _normalize_key(dimensions, tuple(row[: len(dimensions)]))
        count, unpriced, amount = row[len(dimensions) :]
        group = groups.setdefault(key, _Group())
        group.cost_records += int(count)
        group.unpriced_cost_records += int(unpriced or 0)
        group.cost += Decimal(amount)


def _add_signals(
    session: Session,
    organization_id: str,
    dimensions: tuple[str, ...],
    filters: ReportFilters,
    groups: dict[tuple[Any, ...], _Group],
) -> None:
    columns = _group_columns(session, dimensions, Signal.customer_id, Signal.product_id, Signal.occurred_at)
    conditions = [
        Signal.organization_id == organization_id,
        *_time_conditions(Signal.occurred_at, filters),
        *_customer_condition(Signal.customer_id, organization_id, filters),
        *_product_condition(Signal.product_id, organization_id, filters),
    ]
    for row in session.execute(select(*columns, func.count()).where(*conditions).group_by(*columns)):
        key = _normalize_key(dimensions, tuple(row[: len(dimensions)]))
        groups.setdefault(key, _Group()).signals += int(row[len(dimensions)])

    drawn = session.execute(
        select(*columns, LedgerEntry.grant_id, func.sum(LedgerEntry.amount))
        .select_from(LedgerEntry)
        .join(Signal, Signal.id == LedgerEntry.signal_id)
        .where(*conditions, LedgerEntry.organization_id == organization_id, LedgerEntry.entry_type == "spend")
        .group_by(*columns, LedgerEntry.grant_id)
    ).all()
    values = credit_unit_values(session, organization_id, {row[len(dimensions)] for row in drawn})
    for row in drawn:
        key = _normalize_key(dimensions, tuple(row[: len(dimensions)]))
        grant_id, amount = row[len(dimensions) :]
        groups.setdefault(key, _Group()).revenue += -Decimal(amount) * values.get(grant_id, ZERO)


def _time_conditions(column: Any, filters: ReportFilters) -> list[Any]:
    conditions = []
    if filters.start is not None:
        conditions.append(column >= filters.start)
    if filters.end is not None:
        conditions.append(column <= filters.end)
    return conditions


def _external_ids(
    session: Session, organization_id: str, dimensions: tuple[str, ...], keys: list[tuple[Any, ...]]
) -> dict[str, str | None]:
    names: dict[str, str | None] = {}
    for dimension, model in (("customer", Customer), ("product", Product)):
        if dimension not in dimensions:
            continue
        position = dimensions.index(dimension)
        ids = {key[position] for key in keys if key[position] is not None}
        if ids:
            rows = session.execute(
                select(model.id, model.external_id).where(model.organization_id == organization_id, model.id.in_(ids))
            )
            names.update({row_id: external_id for row_id, external_id in rows})
    return names


def _money(amount: Decimal) -> MoneyOut:
    return MoneyOut(amount=usd_text(amount), currency="USD")


def _aggregate_out(
    dimensions: tuple[str, ...], key: tuple[Any, ...], group: _Group, names: dict[str, str | None]
) -> CostAggregateOut:
    values = dict(zip(dimensions, key, strict=True))
    customer_id = values.get("customer")
    product_id = values.get("product")
    return CostAggregateOut(
        day=values.get("day"),
        customer_id=customer_id,
        external_customer_id=names.get(customer_id) if customer_id else None,
        product_id=product_id,
        external_product_id=names.get(product_id) if product_id else None,
        signals=group.signals,
        cost_records=group.cost_records,
        unpriced_cost_records=group.unpriced_cost_records,
        cost=_money(group.cost),
        revenue=_money(group.revenue),
        margin=_money(group.revenue - group.cost),
    )


def list_traces(
    session: Session, organization_id: str, filters: TraceFilters, *, limit: int, offset: int
) -> TraceListOut:
    conditions = [
        CostRecord.organization_id == organization_id,
        *_time_conditions(CostRecord.started_at, filters),
        *_customer_condition(CostRecord.customer_id, organization_id, filters),
        *_product_condition(CostRecord.product_id, organization_id, filters),
        *_metadata_conditions(session, filters.metadata),
    ]
    if filters.status is not None:
        conditions.append(CostRecord.cost_status == filters.status)

    total = session.scalar(select(func.count()).select_from(CostRecord).where(*conditions)) or 0
    rows = session.execute(
        select(CostRecord, Customer.external_id, Product.external_id)
        .outerjoin(Customer, Customer.id == CostRecord.customer_id)
        .outerjoin(Product, Product.id == CostRecord.product_id)
        .where(*conditions)
        .order_by(CostRecord.started_at.desc(), CostRecord.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    traces = [_trace_out(record, customer_external, product_external) for record, customer_external, product_external in rows]
    meta = TraceMetaOut(
        limit=limit, offset=offset, count=len(traces), total=int(total), has_more=offset + len(traces) < total
    )
    return TraceListOut(traces=traces, meta=meta)


def _metadata_conditions(session: Session, metadata: dict[str, Any] | None) -> list[Any]:
    if not metadata:
        return []
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return [CostRecord.metadata_.op("@>")(literal(metadata, JSONB))]
    conditions = []
    for key, value in metadata.items():
        path = '$."' + key.replace('"', '\\"') + '"'
        expected = int(value) if isinstance(value, bool) else value
        conditions.append(func.json_extract(CostRecord.metadata_, path) == expected)
    return conditions


def _trace_out(record: CostRecord, customer_external: str | None, product_external: str | None) -> TraceOut:
    amount = record.cost_amount
    return TraceOut(
        id=record.id,
        name=record.span_name,
        vendor=record.provider or record.vendor,
        model=record.model,
        cost=TraceCostOut(
            amount=float(amount) if amount is not None else None,
            currency=record.currency,
            amount_decimal=f"{amount:f}" if amount is not None else None,
            status=record.cost_status,
        ),
        start_time_unix_nano=_nanos(record.start_time_unix_nano, record.started_at),
        end_time_unix_nano=str(record.end_time_unix_nano) if record.end_time_unix_nano else None,
        attributes=record.attributes,
        customer_id=record.customer_id,
        external_customer_id=customer_external or record.external_customer_id,
        product_id=record.product_id,
        external_product_id=product_external or record.external_product_id,
        trace_id=record.trace_id,
        span_id=record.span_id,
        signal_id=record.signal_id,
        usage={
            "inputTokens": record.input_tokens,
            "outputTokens": record.output_tokens,
            "cacheReadTokens": record.cache_read_tokens,
            "cacheWriteTokens": record.cache_write_tokens,
            "reasoningTokens": record.reasoning_tokens,
        },
    )


def _nanos(value: int | None, moment: datetime) -> str:
    if value:
        return str(value)
    seconds = int(moment.timestamp())
    return str(seconds * 1_000_000_000 + moment.microsecond * 1000)
