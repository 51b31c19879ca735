"""HTTP routes of costs: bulk ingest, price overrides, cost aggregates and the trace listing."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import Depends, Header, Query

from tallystick.server.costs import bulk, overrides, reports
from tallystick.server.costs.schemas import (
    BulkCostsIn,
    CostAggregateListOut,
    CostIngestOut,
    PriceOverrideIn,
    PriceOverrideListOut,
    PriceOverrideOut,
    TraceListOut,
)
from tallystick.server.deps import CurrentPrincipal, DbSession, ReadSession, authenticate
from tallystick.server.errors import bad_request
from tallystick.server.filters import ExternalCustomerFilter, parse_choice_filter, parse_date_filter
from tallystick.server.models.cost import PriceOverride
from tallystick.server.pagination import Page, parse_offset
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, EmptyResponse

router = Router(tags=["costs"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)

# Maximum length of an Idempotency-Key header, in characters.
_MAX_REQUEST_KEY_LENGTH = 200


@router.post("/costs/bulk", response_model=CostIngestOut)
def create_costs(
    body: BulkCostsIn,
    principal: CurrentPrincipal,
    session: DbSession,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Makes a resent request a no-op: record i is keyed by this value and i.",
        ),
    ] = None,
) -> CostIngestOut:
    """Record AI costs sent directly: amounts (`type: cost`) or token usage to price (`type: usage`).

    All or nothing: one invalid record, an unknown product or customer id, or a usage record
    whose model has no price (and no `costOverride`) rejects the request with a 400 that lists
    every problem. A record is idempotent per its `idempotencyKey` (an extra field on the
    record). Without one, the `Idempotency-Key` header and the record's position key it, and
    without that a record with a `timestamp` is keyed by its content. Repeats count as
    `duplicates`.
    """
    if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_REQUEST_KEY_LENGTH:
        raise bad_request(
            "Idempotency-Key", f"must be 1 to {_MAX_REQUEST_KEY_LENGTH} characters", idempotency_key
        )
    result = bulk.ingest_costs(
        session, principal.organization_id, body.costs, request_key=idempotency_key
    )
    return CostIngestOut(ingested=result.ingested, duplicates=result.duplicates)


def _decimal_text(value: Decimal | None) -> str | None:
    # Without trailing zeros, so a price reads the same as sent whatever scale its column stores.
    return None if value is None else f"{value.normalize():f}"


def override_out(override: PriceOverride) -> PriceOverrideOut:
    return PriceOverrideOut(
        id=override.id,
        provider=override.provider,
        model=override.model,
        input_per_million_tokens=_decimal_text(override.input_per_mtok),
        output_per_million_tokens=_decimal_text(override.output_per_mtok),
        cache_read_per_million_tokens=_decimal_text(override.cache_read_per_mtok),
        cache_write_per_million_tokens=_decimal_text(override.cache_write_per_mtok),
        per_image=_decimal_text(override.per_image),
        per_audio_second=_decimal_text(override.per_audio_second),
        per_request=_decimal_text(override.per_request),
        description=override.description,
        created_at=override.created_at,
        updated_at=override.updated_at,
    )


@router.get("/costs/price-overrides", response_model=PriceOverrideListOut)
def list_price_overrides(principal: CurrentPrincipal, session: ReadSession) -> PriceOverrideListOut:
    """List the organization's per-model price overrides."""
    rows = overrides.list_overrides(session, principal.organization_id)
    return PriceOverrideListOut(data=[override_out(row) for row in rows])


@router.put("/costs/price-overrides", response_model=PriceOverrideOut)
def save_price_override(
    body: PriceOverrideIn, principal: CurrentPrincipal, session: DbSession
) -> PriceOverrideOut:
    """Set the prices of one model (optionally for one provider), creating or replacing them.

    Prices are USD per million tokens, plus optional prices per image, per audio second and per
    request. Calls priced afterwards use the override instead of the genai-prices table, and
    so can models the table lacks; stored cost records keep their amounts. The model matches
    case-insensitively, as sent or without a vendor prefix (`openai/`) or date suffix.
    """
    override, _ = overrides.save_override(session, principal.organization_id, body)
    return override_out(override)


@router.delete("/costs/price-overrides/{override_id}", response_model=EmptyResponse)
def delete_price_override(
    override_id: str, principal: CurrentPrincipal, session: DbSession
) -> EmptyResponse:
    """Delete a price override; later calls of its model are priced from the table again."""
    overrides.delete_override(session, principal.organization_id, override_id)
    return EmptyResponse()


@router.get("/costs/aggregates", response_model=CostAggregateListOut)
def cost_aggregates(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    group_by: Annotated[
        str,
        Query(
            alias="groupBy",
            description="Comma-separated dimensions: customer, product, day (UTC). Default: day.",
        ),
    ] = "day",
    start_time: Annotated[str | None, Query(alias="startTime", description="Inclusive lower bound.")] = None,
    end_time: Annotated[str | None, Query(alias="endTime", description="Inclusive upper bound.")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: ExternalCustomerFilter = None,
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    external_product_id: Annotated[str | None, Query(alias="externalProductId")] = None,
) -> CostAggregateListOut:
    """Sum AI costs, credit revenue and margin per customer, product and/or day.

    `cost` adds every priced cost record in the group (unpriced records are counted in
    `unpriced_cost_records`, never as zero). `revenue` is the money value of the credits that
    the group's signals consumed, and `margin` is revenue minus cost. Amounts are USD decimal
    strings. Days are UTC dates of the signal's and the cost's own timestamps.
    """
    dimensions = reports.parse_group_by(group_by)
    filters = reports.ReportFilters(
        start=parse_date_filter("startTime", start_time),
        end=parse_date_filter("endTime", end_time, end_of_day=True),
        customer_id=customer_id,
        external_customer_id=external_customer_id,
        product_id=product_id,
        external_product_id=external_product_id,
    )
    return reports.aggregates(session, principal.organization_id, dimensions, filters, page)


@router.get("/traces", response_model=TraceListOut)
def list_traces(
    principal: CurrentPrincipal,
    session: ReadSession,
    limit: Annotated[str | None, Query(description="Items per page, 1 to 1000 (default 100).")] = None,
    offset: Annotated[str | None, Query(description="Items to skip.")] = None,
    start_time: Annotated[str | None, Query(alias="startTime")] = None,
    end_time: Annotated[str | None, Query(alias="endTime")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: ExternalCustomerFilter = None,
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    external_product_id: Annotated[str | None, Query(alias="externalProductId")] = None,
    metadata: Annotated[
        str | None,
        Query(description='JSON object; every key must equal the call\'s metadata, e.g. {"plan":"pro"}.'),
    ] = None,
    status: Annotated[str | None, Query(description="priced or unpriced.")] = None,
) -> TraceListOut:
    """List LLM calls with their cost, newest first, in the shape of the hosted v1 `GET /traces`.

    Each item is one cost record from a trace span or a direct cost. It has the vendor, model,
    cost (`amount` as a JSON number for v1 clients, `amountDecimal` exact), start and end times
    in nanoseconds as strings, span attributes, and the customer and product.
    """
    return reports.list_traces(
        session,
        principal.organization_id,
        reports.TraceFilters(
            start=parse_date_filter("startTime", start_time),
            end=parse_date_filter("endTime", end_time, end_of_day=True),
            customer_id=customer_id,
            external_customer_id=external_customer_id,
            product_id=product_id,
            external_product_id=external_product_id,
            metadata=reports.parse_metadata_filter(metadata),
            status=parse_choice_filter("status", status, ("priced", "unpriced")),
        ),
        limit=reports.parse_limit(limit),
        offset=parse_offset(offset),
    )
