"""POST /costs/bulk: cost records sent directly, all-or-nothing and idempotent.

Each record is either `cost` (an amount the app computed) or `usage` (token counts that are
priced here, or by the record's `costOverride`). One invalid record rejects the whole request
with a 400 that lists every problem, and nothing is stored.

A record is stored once per idempotency key. The key is the record's `idempotencyKey` when it
has one, else the request's `Idempotency-Key` header with the record's index. Without either,
a record that carries a `timestamp` is keyed by its content, so two records equal in every field
are one cost, and replaying a request changes nothing. A record with none of the three is
stored every time it is sent.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.costs import repository
from tallystick.server.costs.normalization import UsageRecord
from tallystick.server.costs.pricing import PRICE_TABLE, PriceResult, price_usage, round_cost
from tallystick.server.costs.records import cost_row
from tallystick.server.costs.schemas import MAX_COSTS_PER_REQUEST, CostAmountIn, CostUsageIn
from tallystick.server.errors import ApiError, validation_error_to_api_error
from tallystick.server.signals.schemas import parse_timestamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkResult:
    ingested: int
    duplicates: int


@dataclass
class _Parsed:
    index: int
    record: CostAmountIn | CostUsageIn
    raw: dict[str, Any]


def ingest_costs(
    session: Session,
    organization_id: str,
    raw_costs: list[Any],
    *,
    request_key: str | None = None,
    received_at: datetime | None = None,
) -> BulkResult:
    """Validate and store a bulk cost request. Flushes only.

    Raises:
        ApiError: 400 naming every invalid record field; nothing is stored.
    """
    received_at = received_at or clock.now()
    if len(raw_costs) > MAX_COSTS_PER_REQUEST:
        raise ApiError(
            400,
            "too_many_costs",
            f"Invalid costs: {len(raw_costs)} records, at most {MAX_COSTS_PER_REQUEST} per request",
        )

    parsed, problems = _parse_all(raw_costs)
    if problems:
        raise validation_error_to_api_error(problems)

    customers, products = _resolve_references(session, organization_id, parsed)
    overrides = repository.load_overrides(session, organization_id)
    rows = []
    for item in parsed:
        started_at = parse_timestamp(item.record.timestamp) if item.record.timestamp else received_at
        usage, price = _price(item, started_at, overrides)
        customer = item.record.customer
        product = item.record.product
        rows.append(
            cost_row(
                organization_id=organization_id,
                source="bulk",
                started_at=started_at,
                usage=usage,
                price=price,
                idempotency_key=_idempotency_key(item, request_key),
                customer_id=customer.customer_id or customers[customer.external_customer_id or ""],
                external_customer_id=customer.external_customer_id,
                product_id=_product_id(product, products),
                external_product_id=product.external_product_id if product else None,
                metadata=item.record.metadata,
            )
        )

    inserted = repository.insert_cost_rows(session, rows)
    result = BulkResult(ingested=len(inserted), duplicates=len(rows) - len(inserted))
    log.info(
        "costs.bulk_ingested",
        extra={
            "organization_id": organization_id,
            "ingested": result.ingested,
            "duplicates": result.duplicates,
        },
    )
    return result


def _parse_all(raw_costs: list[Any]) -> tuple[list[_Parsed], list[dict[str, Any]]]:
    parsed: list[_Parsed] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_costs):
        if not isinstance(raw, dict):
            problems.append(
                {"loc": ("costs", index), "msg": "must be an object", "input": raw, "type": "type"}
            )
            continue
        kind = raw.get("type")
        if kind is None:
            kind = "usage" if "usage" in raw else "cost"
        model: type[BaseModel]
        if kind == "cost":
            model = CostAmountIn
        elif kind == "usage":
            model = CostUsageIn
        else:
            problems.append(
                {"loc": ("costs", index, "type"), "msg": "must be cost or usage", "input": kind, "type": "enum"}
            )
            continue
        try:
            record = model.model_validate(raw)
        except ValidationError as error:
            for problem in error.errors():
                problems.append(dict(problem, loc=("costs", index, *problem["loc"])))
            continue
        parsed.append(_Parsed(index, record, raw))  # type: ignore[arg-type]
    return parsed, problems


def _resolve_references(
    session: Session, organization_id: str, parsed: list[_Parsed]
) -> tuple[dict[str, str], dict[str, str]]:
    """Check customer and product references; create customers named by external id.

    Every reference is checked before anything is created, and a failure raises, which rolls
    the request's transaction back.
    """
    problems: list[dict[str, Any]] = []
    customer_ids = {item.record.customer.customer_id for item in parsed if item.record.customer.customer_id}
    known_customers = repository.existing_customer_ids(session, organization_id, customer_ids)
    product_ids = {item.record.product.product_id for item in parsed if item.record.product and item.record.product.product_id}
    known_products = repository.existing_product_ids(session, organization_id, product_ids)
    external_products = repository.product_ids_by_external_id(
        session,
        organization_id,
        {
            item.record.product.external_product_id
            for item in parsed
            if item.record.product and item.record.product.external_product_id
        },
    )

    for item in parsed:
        customer_id = item.record.customer.customer_id
        if customer_id is not None and customer_id not in known_customers:
            problems.append(_reference_problem(item.index, "customer.customerId", customer_id, "Customer"))
        product = item.record.product
        if product is None:
            continue
        if product.product_id is not None and product.product_id not in known_products:
            problems.append(_reference_problem(item.index, "product.productId", product.product_id, "Product"))
        if product.external_product_id is not None and product.external_product_id not in external_products:
            problems.append(
                _reference_problem(item.index, "product.externalProductId", product.external_product_id, "Product")
            )
    if problems:
        error = validation_error_to_api_error(problems)
        error.code = "not_found"
        raise error

    customers = repository.customer_ids_by_external_id(
        session,
        organization_id,
        {item.record.customer.external_customer_id for item in parsed if item.record.customer.external_customer_id},
        create=True,
    )
    return customers, external_products


# The reason and next step for a cost record's reference that names no object, by kind.
_NOT_FOUND_REASONS = {
    "Customer": "customer not found. A cost record creates a customer only when it names it by "
    "externalCustomerId, so create this one first or send its externalCustomerId",
    "Product": "product not found. Cost records never create products, so create it first",
}


def _reference_problem(index: int, field: str, value: str, kind: str) -> dict[str, Any]:
    return {
        "loc": ("costs", index, *field.split(".")),
        "msg": _NOT_FOUND_REASONS[kind],
        "input": value,
        "type": "not_found",
    }


def _product_id(product: Any, external_products: dict[str, str]) -> str | None:
    if product is None:
        return None
    return product.product_id or external_products.get(product.external_product_id or "")


def _price(item: _Parsed, at: datetime, overrides: list[Any]) -> tuple[UsageRecord, PriceResult]:
    record = item.record
    if isinstance(record, CostAmountIn):
        usage = UsageRecord(emitter="bulk", vendor=record.vendor, model=record.model, operation=None, service_tier=None)
        price = PriceResult(
            amount=round_cost(record.amount),
            status="priced",
            source="client",
            reference="client amount",
            model=record.model,
        )
        return usage, price

    usage = usage_from_tokens(record)
    if record.cost_override is not None:
        price = PriceResult(
            amount=round_cost(record.cost_override.amount),
            status="priced",
            source="client",
            reference="costOverride",
            model=record.model,
        )
        return usage, price
    price = price_usage(usage, at, overrides)
    if price.status != "priced":
        raise validation_error_to_api_error(
            [
                {
                    "loc": ("costs", item.index, "model"),
                    "msg": (
                        f"cannot price vendor {record.vendor!r} model {record.model!r} with "
                        f"{PRICE_TABLE} ({price.reason}); send costOverride, or set a price override"
                    ),
                    "input": record.model,
                    "type": "unpriced",
                }
            ]
        )
    return usage, price


def usage_from_tokens(record: CostUsageIn) -> UsageRecord:
    """Build the usage of a `usage` record; its inputTokens exclude cache reads and writes.

    outputTokens is taken to include reasoning tokens (the OpenAI convention) unless the
    reasoning count is larger, which proves it was reported separately.
    """
    tokens = record.usage
    cache_read = tokens.cache_read_input_tokens or 0
    cache_write = tokens.cache_creation_input_tokens or 0
    reasoning = tokens.reasoning_output_tokens or 0
    output = tokens.output_tokens or 0
    if reasoning > output:
        output += reasoning
    return UsageRecord(
        emitter="bulk",
        vendor=record.vendor,
        model=record.model,
        operation=None,
        service_tier=None,
        input_tokens=(tokens.input_tokens or 0) + cache_read + cache_write,
        output_tokens=output,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        input_tokens_reported=tokens.input_tokens,
        input_tokens_mode="exclusive" if cache_read or cache_write else None,
        has_usage=True,
    )


def _idempotency_key(item: _Parsed, request_key: str | None) -> str | None:
    if item.record.idempotency_key:
        return f"bulk:{item.record.idempotency_key}"
    if request_key:
        return f"bulk-request:{request_key}:{item.index}"
    if item.record.timestamp:
        content = orjson.dumps(item.raw, option=orjson.OPT_SORT_KEYS)
        return f"bulk-content:{hashlib.sha256(content).hexdigest()}"
    return None
