"""Wire models of costs: bulk cost ingest, price overrides, cost aggregates and trace listing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator

from tallystick.server.costs.money_schemas import MoneyOut
from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel
from tallystick.server.signals.schemas import CustomerRef, ProductRef, parse_timestamp

# Maximum number of cost records in one POST /costs/bulk request.
MAX_COSTS_PER_REQUEST = 1000
MAX_NAME_LENGTH = 255
# Maximum token count accepted in one usage field, as for spans.
MAX_TOKENS = 10**12


def _usd(value: str) -> str:
    if value.upper() != "USD":
        raise ValueError("must be USD; costs in other currencies are not supported yet")
    return "USD"


class TokenUsageIn(RequestModel):
    """Token counts of one call. `inputTokens` excludes cached tokens (Anthropic style)."""

    input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    output_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    cache_read_input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    cache_creation_input_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    reasoning_output_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)


class MoneyIn(RequestModel):
    """An amount in major units (dollars) with its ISO 4217 currency; only USD is accepted."""

    amount: Decimal = Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    currency: str = Field(min_length=3, max_length=3)

    @field_validator("currency")
    @classmethod
    def _usd_only(cls, value: str) -> str:
        return _usd(value)


class _CostBase(RequestModel):
    timestamp: str | None = Field(
        default=None, description="When the cost was incurred, RFC 3339; default: receipt time."
    )
    customer: CustomerRef
    product: ProductRef | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="Not in paid-python's model (send it as an extra field): a repeat is a duplicate.",
    )

    @field_validator("timestamp")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            parse_timestamp(value)
        return value


class CostAmountIn(_CostBase):
    """A cost the app computed itself: `amount` in major units of `currency`."""

    type: Literal["cost"] = "cost"
    amount: Decimal = Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    currency: str = Field(min_length=3, max_length=3)
    vendor: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    model: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)

    @field_validator("currency")
    @classmethod
    def _usd_only(cls, value: str) -> str:
        return _usd(value)


class CostUsageIn(_CostBase):
    """Token usage for the server to price from `vendor` and `model`, or from `costOverride`."""

    type: Literal["usage"] = "usage"
    vendor: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    model: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    usage: TokenUsageIn
    cost_override: MoneyIn | None = None


class BulkCostsIn(RequestModel):
    # Elements are validated one by one, to name the bad record's index in the error.
    costs: list[Any] = Field(
        description=f"Cost records (type cost or usage), at most {MAX_COSTS_PER_REQUEST} per request."
    )


class CostIngestOut(ResponseModel):
    ingested: int = Field(description="Cost records stored by this request.")
    duplicates: int = Field(description="Records already stored under the same idempotency key.")


class PriceOverrideIn(RequestModel):
    """Prices for one model, in USD: per million tokens, and per image, audio second or request."""

    provider: str | None = Field(
        default=None,
        max_length=64,
        description="Provider the override applies to, such as openai; omit for any provider.",
    )
    model: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    input_per_million_tokens: Decimal = Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    output_per_million_tokens: Decimal = Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    cache_read_per_million_tokens: Decimal | None = Field(
        default=None, ge=0, le=Decimal(1_000_000), allow_inf_nan=False,
        description="Price of cache reads; omit to bill them at the input price.",
    )
    cache_write_per_million_tokens: Decimal | None = Field(
        default=None, ge=0, le=Decimal(1_000_000), allow_inf_nan=False,
        description="Price of cache writes; omit to bill them at the input price.",
    )
    per_image: Decimal | None = Field(default=None, ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    per_audio_second: Decimal | None = Field(default=None, ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    per_request: Decimal | None = Field(default=None, ge=0, le=Decimal(1_000_000), allow_inf_nan=False)
    description: str | None = Field(default=None, max_length=500)

    # A field validator, not a model validator, so that each price with too many places is
    # reported under its own field, all of them at once.
    @field_validator(
        "input_per_million_tokens",
        "output_per_million_tokens",
        "cache_read_per_million_tokens",
        "cache_write_per_million_tokens",
        "per_image",
        "per_audio_second",
        "per_request",
    )
    @classmethod
    def _twelve_places(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value != value.quantize(Decimal("1e-12")):
            raise ValueError("must have at most 12 decimal places")
        return value


class PriceOverrideOut(ResponseModel):
    id: str
    provider: str | None
    model: str
    input_per_million_tokens: str
    output_per_million_tokens: str
    cache_read_per_million_tokens: str | None
    cache_write_per_million_tokens: str | None
    per_image: str | None
    per_audio_second: str | None
    per_request: str | None
    description: str | None
    currency: str = "USD"
    created_at: datetime
    updated_at: datetime


class PriceOverrideListOut(ResponseModel):
    data: list[PriceOverrideOut]


class CostAggregateOut(ResponseModel):
    """Costs, revenue and margin of one group of signals and costs."""

    day: str | None = None
    customer_id: str | None = None
    external_customer_id: str | None = None
    product_id: str | None = None
    external_product_id: str | None = None
    signals: int
    cost_records: int
    unpriced_cost_records: int
    cost: MoneyOut
    revenue: MoneyOut
    margin: MoneyOut


class CostAggregateListOut(ResponseModel):
    data: list[CostAggregateOut]
    pagination: PaginationOut


class TraceCostOut(ResponseModel):
    amount: float | None = Field(description="USD, as a JSON number (the v1 wire type); null when unpriced.")
    currency: str = "USD"
    amount_decimal: str | None = Field(description="The exact amount as a decimal string.")
    status: str


class TraceOut(ResponseModel):
    """One LLM call of a trace, in the shape of the hosted v1 GET /traces items."""

    id: str
    name: str | None
    vendor: str | None
    model: str | None
    cost: TraceCostOut
    start_time_unix_nano: str | None
    end_time_unix_nano: str | None
    attributes: dict[str, Any] | None
    customer_id: str | None
    external_customer_id: str | None
    product_id: str | None
    external_product_id: str | None
    trace_id: str | None
    span_id: str | None
    signal_id: str | None
    usage: dict[str, int]


class TraceMetaOut(ResponseModel):
    limit: int
    offset: int
    count: int
    total: int
    has_more: bool


class TraceListOut(ResponseModel):
    traces: list[TraceOut]
    meta: TraceMetaOut
