"""Units, typed parameters, built-in calculations and the rounding rules of delivered value.

Conventions, which every value model follows:

- Money is in minor units of the model currency (cents for USD): money fields in signal data
  are integer cents, fixed money parameters are cents (fractions allowed, for rates), and a
  monetary value type's results are cents.
- A duration parameter has a unit (seconds, minutes, hours or days). A duration field in
  signal data carries its unit in a sibling field named ``<field>_unit``. The value is
  converted to the parameter's unit, and a missing or unknown unit makes the value unknown.
- A percentage is a fraction: 0.02 is 2 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from tallystick.server.models.value import VALUE_MONEY_PLACES, VALUE_QUANTITY_PLACES
from tallystick.server.value.formulas import UnknownValue

DURATION_UNITS = ("seconds", "minutes", "hours", "days")
_SECONDS_PER_UNIT = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}

# Unit kinds of value types. The wire spells money "monetary"; "money" is accepted as input.
UNIT_KINDS = ("monetary", "duration", "count", "percentage", "custom")
PARAMETER_TYPES = ("number", "money", "duration", "boolean", "string")

# Largest magnitude of one signal's value, in its unit or in minor units. Sums of stored values
# must fit a signed 64-bit integer of 1e-9 units (about 9.2e9 units), so one signal may not
# come close to that.
MAX_SIGNAL_QUANTITY = Decimal(10) ** 8
MAX_SIGNAL_MONEY = Decimal(10) ** 11


def round_signal_quantity(value: Decimal) -> Decimal:
    """Round one signal's quantity to the nine places it is stored with, half to even.

    This is the only rounding of quantities: totals are exact sums of the stored values.
    """
    return value.quantize(Decimal(1).scaleb(-VALUE_QUANTITY_PLACES), rounding=ROUND_HALF_EVEN)


def round_signal_money(value: Decimal) -> Decimal:
    """Round one signal's monetary value to 1e-6 minor units, half to even, for storage."""
    return value.quantize(Decimal(1).scaleb(-VALUE_MONEY_PLACES), rounding=ROUND_HALF_EVEN)


def round_line_money(value: Decimal) -> int:
    """Round a receipt line's monetary total to whole minor units, half to even.

    Lines are rounded once each, and a receipt's total is the sum of its rounded lines, so
    the figures printed on a receipt add up.
    """
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def decimal_text(value: Decimal) -> str:
    """Write a decimal without exponent and trailing zeros, such as 1.500 -> "1.5", 4E+2 -> "400"."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def convert_duration(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    if from_unit == to_unit:
        return value
    return value * _SECONDS_PER_UNIT[from_unit] / _SECONDS_PER_UNIT[to_unit]


def to_decimal(raw: Any) -> Decimal | None:
    """Read a JSON number, or a string holding a decimal number, exactly; None otherwise.

    Booleans are not numbers here, and neither are NaN and infinities.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        # repr gives the shortest text that reads back as the same float, so 0.1 stays 0.1.
        return Decimal(repr(raw))
    if isinstance(raw, str):
        try:
            value = Decimal(raw.strip())
        except InvalidOperation:
            return None
        return value if value.is_finite() else None
    return None


def parse_duration_text(raw: str) -> tuple[Decimal, str] | None:
    """Read a duration written as "<number> <unit>", such as "4 minutes"; None otherwise."""
    parts = raw.split()
    if len(parts) != 2 or parts[1] not in DURATION_UNITS:
        return None
    number = to_decimal(parts[0])
    return None if number is None else (number, parts[1])


@dataclass(frozen=True)
class Parameter:
    """A typed formula variable; `unit` is the time unit of a duration, in which it is used."""

    id: str
    label: str
    type: str = "number"
    unit: str | None = None


def read_data_value(data: dict[str, Any] | None, path: str) -> tuple[bool, Any]:
    """Return (found, value) for `path` in signal data: a top-level key, else dotted keys."""
    if not isinstance(data, dict):
        return False, None
    if path in data:
        return True, data[path]
    current: Any = data
    for key in path.split("."):
        if not isinstance(current, dict) or key not in current:
            return False, None
        current = current[key]
    return True, current


def value_from_data(parameter: Parameter, data: dict[str, Any] | None, path: str) -> Any:
    """Read `parameter` from the signal data field `path`, converted to its type and unit.

    Raises:
        UnknownValue: the field (or a duration's unit field) is missing or malformed.
    """
    found, raw = read_data_value(data, path)
    if not found or raw is None:
        raise UnknownValue("missing_field", f"signal data has no field {path!r} for {parameter.id!r}")

    if parameter.type == "boolean":
        if not isinstance(raw, bool):
            raise _malformed(path, raw, "must be true or false")
        return raw
    if parameter.type == "string":
        if not isinstance(raw, str):
            raise _malformed(path, raw, "must be a string")
        return raw

    number = to_decimal(raw)
    if number is None:
        raise _malformed(path, raw, "must be a number")
    if parameter.type == "money":
        if number != number.to_integral_value():
            raise _malformed(path, raw, "must be whole minor units, such as 1250 for $12.50")
        return number
    if parameter.type == "duration":
        unit_path = f"{path}_unit"
        found, unit = read_data_value(data, unit_path)
        if not found or unit is None:
            raise UnknownValue(
                "missing_field",
                f"signal data has no field {unit_path!r} giving the unit of {path!r} "
                f"(one of {', '.join(DURATION_UNITS)})",
            )
        if unit not in DURATION_UNITS:
            raise _malformed(unit_path, unit, f"must be one of {', '.join(DURATION_UNITS)}")
        return convert_duration(number, unit, parameter.unit or "minutes")
    return number


def _malformed(path: str, raw: Any, rule: str) -> UnknownValue:
    text = repr(raw)
    if len(text) > 60:
        text = text[:57] + "..."
    return UnknownValue("malformed_field", f"signal data field {path!r} is {text} but {rule}")


def fixed_value(parameter: Parameter, raw: Any) -> Any:
    """Convert a fixed value from the value model (a default or an override) to the type.

    Raises:
        ValueError: the value does not fit the parameter's type. The message gives the rule.
    """
    if parameter.type == "boolean":
        if isinstance(raw, bool):
            return raw
        if raw in ("true", "false"):
            return raw == "true"
        raise ValueError("must be true or false")
    if parameter.type == "string":
        if isinstance(raw, str):
            return raw
        raise ValueError("must be a string")
    if parameter.type == "duration" and isinstance(raw, str) and not _is_number_text(raw):
        parsed = parse_duration_text(raw)
        if parsed is None:
            raise ValueError(
                f"must be a number of {parameter.unit or 'minutes'}, or a number and a unit such as '4 minutes'"
            )
        number, unit = parsed
        return convert_duration(number, unit, parameter.unit or "minutes")
    number = to_decimal(raw)
    if number is None:
        raise ValueError("must be a number")
    return number


def _is_number_text(raw: str) -> bool:
    return to_decimal(raw) is not None


# Built-in calculations


@dataclass(frozen=True)
class BuiltinCalculation:
    """A named calculation method: its expression and the parameters it needs.

    `parameters` gives each variable's type; a duration's unit is filled in per value type.
    """

    name: str
    description: str
    expression: str
    parameters: tuple[tuple[str, str, str, str | None], ...]
    # Unit kinds of the value types it applies to; empty means any.
    unit_kinds: tuple[str, ...] = field(default=())


BUILTIN_CALCULATIONS = {
    calculation.name: calculation
    for calculation in (
        BuiltinCalculation(
            name="time_saved",
            description="Time saved: actions x time saved per action, in the value type's duration unit.",
            expression="actions * time_per_action",
            # (id, label, type, duration unit); None means the value type's duration unit.
            parameters=(
                ("actions", "Actions", "number", None),
                ("time_per_action", "Time saved per action", "duration", None),
            ),
            unit_kinds=("duration",),
        ),
        BuiltinCalculation(
            name="money_saved",
            description="Money saved: time saved in hours x hourly rate in minor units.",
            expression="time_saved * hourly_rate",
            parameters=(
                ("time_saved", "Time saved", "duration", "hours"),
                ("hourly_rate", "Hourly rate", "money", None),
            ),
            unit_kinds=("monetary",),
        ),
        BuiltinCalculation(
            name="direct_amount",
            description="An amount taken as it is, usually from a signal data field.",
            expression="amount",
            parameters=(("amount", "Amount", "", None),),
        ),
    )
}


def builtin_parameters(calculation: BuiltinCalculation, unit_kind: str, duration_unit: str | None) -> list[Parameter]:
    """Return the parameters of a built-in calculation for a value type of this unit."""
    parameters = []
    for parameter_id, label, parameter_type, unit in calculation.parameters:
        if not parameter_type:
            # direct_amount: the amount has the value type's own type.
            parameter_type = {"monetary": "money", "duration": "duration"}.get(unit_kind, "number")
        if parameter_type == "duration":
            unit = unit or duration_unit or "minutes"
        parameters.append(Parameter(id=parameter_id, label=label, type=parameter_type, unit=unit))
    return parameters
