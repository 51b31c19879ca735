"""Rating: how many credits a signal costs under a prepaid-credits pricing line.

Only the pricing types that spend prepaid credits are rated here:

- UsagePrepaidCredits: credits = creditCost x quantity.
- UsageBracketedPrepaidCredits: the quantity is looked up in `creditUnitBrackets`, each
  ``{upTo, creditUnits, creditUnitsPerUnit}``. Brackets are ordered by `upTo` (inclusive upper
  bound; null means unbounded and sorts last).
  * Flat brackets (no `creditUnitsPerUnit`): the signal costs the `creditUnits` of the first
    bracket whose `upTo` is at least the quantity. A quantity above every bound uses the last
    bracket.
  * Graduated brackets (every bracket has `creditUnitsPerUnit`): each bracket covers the
    quantities above the previous bound up to its own, and the signal costs the sum over
    brackets of (units inside the bracket) x creditUnitsPerUnit; `creditUnits` is then ignored,
    as paid-python 1.12 documents ("instead of the flat creditUnits per signal"). Units above
    the last bound are charged at the last bracket's rate.
  * Mixing flat and graduated brackets in one line is rejected, as the Paid API rejects it.

The quantity is 1 unless the line maps one from signal data with ``pricingInput: {kind:
"signalQuantity", path}``. `path` is a dotted key path into `data`, with or without a leading
``$.`` (``$.usage.tokens`` and ``usage.tokens`` are the same), defaulting to ``quantity``. A mapped
quantity that is absent or null counts as 1, as the hosted platform documents for omitted
quantities; one that is not a finite number >= 0 fails the signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from tallystick.server.models.types import CREDIT_PLACES

PREPAID_CREDIT_TYPES = ("UsagePrepaidCredits", "UsageBracketedPrepaidCredits")

_CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_PLACES)
_DEFAULT_QUANTITY_PATH = "quantity"


def round_credits(amount: Decimal) -> Decimal:
    """Round a credit amount to 9 decimal places, halves away from zero (ROUND_HALF_UP).

    Rating computes creditCost x quantity and bracket sums exactly and rounds once, here, just
    before the amount reaches the ledger; 9 places is what the credit columns store.
    """
    return amount.quantize(_CREDIT_QUANTUM, rounding=ROUND_HALF_UP)


class RatingError(Exception):
    """A signal cannot be rated: its quantity is invalid, or the pricing line is malformed.

    Args:
        code: stable snake_case reason, such as validation_error or pricing_invalid.
        message: what is wrong, as a sentence without the field name.
        field: the offending path inside the signal, such as ``data.quantity``, if any.
        value: the offending value at `field`.
    """

    def __init__(self, code: str, message: str, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.value = value


@dataclass(frozen=True)
class PricingLine:
    """A prepaid-credits pricing line that applies to a signal: a product's, or a plan's override."""

    product_id: str
    product_attribute_id: str
    plan_attribute_id: str | None
    event_name: str
    pricing_type: str
    currency_id: str | None
    credit_cost: Decimal | None
    # The pricing object as the client configured it (camelCase keys).
    pricing: dict[str, Any]

    @property
    def line_id(self) -> str:
        return self.plan_attribute_id or self.product_attribute_id


def credits_for(line: PricingLine, data: dict[str, Any] | None) -> Decimal:
    """Return the credits one signal with `data` costs under `line`, rounded once.

    Raises:
        RatingError: the mapped quantity is invalid, or the line cannot be rated.
    """
    quantity = signal_quantity(line, data)

    if line.pricing_type == "UsagePrepaidCredits":
        if line.credit_cost is None:
            raise RatingError("pricing_invalid", f"Pricing line {line.line_id} has no creditCost")
        return round_credits(line.credit_cost * quantity)

    if line.pricing_type == "UsageBracketedPrepaidCredits":
        return round_credits(_bracketed_credits(line, quantity))

    raise RatingError(
        "pricing_invalid", f"Pricing line {line.line_id} has type {line.pricing_type}, which does not spend credits"
    )


def signal_quantity(line: PricingLine, data: dict[str, Any] | None) -> Decimal:
    """Return the quantity the line reads from `data`, or 1 when it maps none."""
    path = _quantity_path(line)
    if path is None:
        return Decimal(1)

    value: Any = data
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return Decimal(1)
        value = value[part]
    if value is None:
        return Decimal(1)

    field = "data." + ".".join(path)
    quantity = to_decimal(value)
    if quantity is None:
        raise RatingError("validation_error", "must be a finite number", field, value)
    if quantity < 0:
        raise RatingError("validation_error", "must not be negative", field, value)
    return quantity


def _quantity_path(line: PricingLine) -> list[str] | None:
    mapping = line.pricing.get("pricingInput")
    if not isinstance(mapping, dict):
        # Bracketed lines always rate a quantity; the Paid API requires their mapping.
        if line.pricing_type == "UsageBracketedPrepaidCredits":
            return [_DEFAULT_QUANTITY_PATH]
        return None
    if mapping.get("kind") != "signalQuantity":
        return None
    path = mapping.get("path") or _DEFAULT_QUANTITY_PATH
    if path.startswith("$."):
        path = path[2:]
    return [part for part in path.split(".") if part]


def to_decimal(value: Any) -> Decimal | None:
    """Convert a JSON number, or a string holding one, to an exact finite Decimal."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # repr() is the shortest text that reads back as the same float: 0.1 stays 0.1.
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


@dataclass(frozen=True)
class _Bracket:
    up_to: Decimal | None
    credit_units: Decimal
    credit_units_per_unit: Decimal | None


def _bracketed_credits(line: PricingLine, quantity: Decimal) -> Decimal:
    brackets = _brackets(line)
    graduated = [bracket.credit_units_per_unit is not None for bracket in brackets]
    if any(graduated) and not all(graduated):
        raise RatingError(
            "pricing_invalid",
            f"Pricing line {line.line_id} mixes flat and graduated credit brackets; "
            "give creditUnitsPerUnit on every bracket or on none",
        )

    if not all(graduated):
        for bracket in brackets:
            if bracket.up_to is None or quantity <= bracket.up_to:
                return bracket.credit_units
        return brackets[-1].credit_units

    total = Decimal(0)
    lower = Decimal(0)
    for bracket in brackets:
        upper = quantity if bracket.up_to is None else min(quantity, bracket.up_to)
        if upper > lower:
            total += (upper - lower) * bracket.credit_units_per_unit  # type: ignore[operator]
        if bracket.up_to is None or quantity <= bracket.up_to:
            return total
        lower = bracket.up_to
    # The quantity is above the last bound: the rest is charged at the last bracket's rate.
    total += (quantity - lower) * brackets[-1].credit_units_per_unit  # type: ignore[operator]
    return total


def _brackets(line: PricingLine) -> list[_Bracket]:
    raw = line.pricing.get("creditUnitBrackets")
    if not isinstance(raw, list) or not raw:
        raise RatingError("pricing_invalid", f"Pricing line {line.line_id} has no creditUnitBrackets")

    brackets = []
    for item in raw:
        up_to = to_decimal(item.get("upTo")) if isinstance(item, dict) else None
        units = to_decimal(item.get("creditUnits")) if isinstance(item, dict) else None
        per_unit_raw = item.get("creditUnitsPerUnit") if isinstance(item, dict) else None
        per_unit = to_decimal(per_unit_raw) if per_unit_raw is not None else None
        if units is None or (per_unit_raw is not None and per_unit is None):
            raise RatingError(
                "pricing_invalid", f"Pricing line {line.line_id} has a malformed credit bracket {item!r}"
            )
        brackets.append(_Bracket(up_to, units, per_unit))
    return sorted(brackets, key=lambda bracket: (bracket.up_to is None, bracket.up_to or 0))
