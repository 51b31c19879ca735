"""Building cost record rows from a usage record and its price, for every source of costs."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from tallystick.server import clock
from tallystick.server.costs.normalization import UsageRecord
from tallystick.server.costs.pricing import PriceResult, round_cost
from tallystick.server.ids import new_id
from tallystick.server.models.cost import CostRecord

# Every column of cost_records with the value a row gets when the caller does not set it.
# Bulk inserts need the same keys in every row. The keys are made plain str, because SQLAlchemy
# names the `metadata` column with a str subclass, which orjson rejects as a key. The bulk
# insert then fell back to the standard json module, at about a seventh of an export's CPU.
_DEFAULTS: dict[str, Any] = {str(column.name): None for column in CostRecord.__table__.columns}
_DEFAULTS.update(
    {
        "currency": "USD",
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "input_image_tokens": 0,
        "image_count": 0,
    }
)

# audio_seconds is stored with six places (microseconds).
_SECONDS_QUANTUM = Decimal("0.000001")
# Columns of names that spans report as free text, with their lengths. A longer name is cut, so
# the call's cost is still stored (PostgreSQL would reject the whole row).
_REPORTED_NAME_LENGTHS = {
    name: CostRecord.__table__.c[name].type.length
    for name in ("vendor", "provider", "model_reported", "model", "operation", "service_tier")
}


def cost_row(
    *,
    organization_id: str,
    source: str,
    started_at: datetime,
    usage: UsageRecord,
    price: PriceResult,
    **fields: Any,
) -> dict[str, Any]:
    """Return a full cost_records row for `usage` priced as `price`, plus `fields` as given."""
    row = dict(_DEFAULTS)
    audio_seconds = usage.audio_seconds
    if audio_seconds is not None:
        audio_seconds = audio_seconds.quantize(_SECONDS_QUANTUM, rounding=ROUND_HALF_EVEN)
    row.update(
        id=new_id("cost_record"),
        organization_id=organization_id,
        source=source,
        emitter=usage.emitter,
        started_at=started_at,
        vendor=usage.vendor,
        provider=price.provider,
        model_reported=usage.model,
        model=price.model or usage.model,
        operation=usage.operation,
        service_tier=usage.service_tier,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        input_audio_tokens=usage.input_audio_tokens,
        output_audio_tokens=usage.output_audio_tokens,
        input_image_tokens=usage.input_image_tokens,
        image_count=usage.image_count,
        audio_seconds=audio_seconds,
        input_tokens_reported=usage.input_tokens_reported,
        input_tokens_mode=usage.input_tokens_mode,
        cost_amount=price.amount,
        cost_status=price.status,
        cost_source=price.source,
        price_reference=price.reference,
        price_model_id=price.price_model_id,
        unpriced_reason=_truncate(price.reason, 500),
        reported_cost_amount=_stored_reported_cost(usage.reported_cost),
        reported_cost_attribute=usage.reported_cost_attribute,
        created_at=clock.now(),
    )
    for name, length in _REPORTED_NAME_LENGTHS.items():
        row[name] = _truncate(row[name], length)
    unknown = set(fields) - set(_DEFAULTS)
    if unknown:
        raise KeyError(f"not cost_records columns: {sorted(unknown)}")
    row.update(fields)
    return row


def _stored_reported_cost(amount: Decimal | None) -> Decimal | None:
    # A reported float such as 0.1 + 0.2 carries more places than the column. It is an
    # emitter's estimate kept for comparison, so rounding it is harmless.
    return round_cost(amount) if amount is not None else None


def _truncate(text: str | None, length: int) -> str | None:
    if text is None or len(text) <= length:
        return text
    return text[: length - 3] + "..."
