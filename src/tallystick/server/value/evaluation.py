"""Evaluation of one signal's delivered value under a compiled value model.

Each value type whose calculation (in effect at the signal's time) lists the signal's event
name yields one result. A known result has a quantity in the value type's unit, and money in
minor units when the value type is monetary or has a monetary conversion. An unknown result
has a stable reason code and a sentence. A missing or malformed field never rejects the
signal and never turns into a guessed number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tallystick.server.value.calculations import (
    MAX_SIGNAL_MONEY,
    MAX_SIGNAL_QUANTITY,
    Parameter,
    decimal_text,
    fixed_value,
    read_data_value,
    round_signal_money,
    round_signal_quantity,
    to_decimal,
    value_from_data,
)
from tallystick.server.value.definitions import (
    UNIT_VALUE,
    Binding,
    Calculation,
    Condition,
    FormulaDefinition,
    MonetaryConversion,
    Override,
    Result,
    SegmentTable,
    ValueModelDefinition,
    ValueType,
    bindings_for,
    formula_of,
)
from tallystick.server.value.formulas import Formula, UnknownValue, evaluate


@dataclass(frozen=True)
class SignalFacts:
    """The fields of a signal and its customer that evaluation reads."""

    signal_id: str
    customer_id: str
    customer_external_id: str | None
    product_id: str | None
    event_name: str
    occurred_at: datetime
    data: dict[str, Any] | None


@dataclass
class ValueResult:
    value_type_slug: str
    known: bool
    quantity: Decimal | None = None
    money: Decimal | None = None
    reason_code: str | None = None
    reason: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)


def evaluate_signal(definition: ValueModelDefinition, facts: SignalFacts) -> list[ValueResult]:
    """Return one result per value type that the signal feeds, in content order."""
    if facts.event_name not in definition.event_names:
        return []
    results = []
    for value_type in definition.value_types:
        calculation = value_type.calculation_at(facts.occurred_at)
        if calculation is None or facts.event_name not in calculation.event_names:
            continue
        overrides = applicable_overrides(definition, calculation, facts.customer_id, facts.customer_external_id)
        bindings = bindings_for(definition, calculation, facts.event_name, overrides)
        if not bindings:
            # Only an override of another customer binds this event.
            continue
        results.append(_evaluate_value_type(definition, value_type, calculation, bindings[0], overrides, facts))
    return results


def applicable_overrides(
    definition: ValueModelDefinition, calculation: Calculation, customer_id: str, external_id: str | None
) -> list[Override]:
    """Return the overrides a calculation lists whose scope names this customer, in listed order."""
    return [
        definition.overrides[override_id]
        for override_id in calculation.override_ids
        if definition.overrides[override_id].applies_to(customer_id, external_id)
    ]


def _evaluate_value_type(
    definition: ValueModelDefinition,
    value_type: ValueType,
    calculation: Calculation,
    binding: Binding,
    overrides: list[Override],
    facts: SignalFacts,
) -> ValueResult:
    formula = definition.formulas[formula_of(calculation, binding)]
    resolver = _Resolver(definition, value_type, calculation, binding, formula, overrides, facts)
    result = ValueResult(value_type_slug=value_type.slug, known=False, inputs=resolver.inputs)
    try:
        quantity = _number_result(
            _evaluate_with_conditions(formula.expression, formula.conditions, formula.default_result, resolver),
            "formula",
        )
        if abs(quantity) > MAX_SIGNAL_QUANTITY:
            raise UnknownValue("value_out_of_range", f"the value {quantity} is beyond the supported {MAX_SIGNAL_QUANTITY}")
        quantity = round_signal_quantity(quantity)

        money = None
        if calculation.unit.kind == "monetary":
            money = quantity
        elif calculation.monetary_conversion is not None:
            money = _convert(calculation.monetary_conversion, value_type.slug, quantity, overrides, facts, resolver.inputs)
        if money is not None:
            if abs(money) > MAX_SIGNAL_MONEY:
                raise UnknownValue("value_out_of_range", f"the monetary value {money} is beyond the supported {MAX_SIGNAL_MONEY}")
            money = round_signal_money(money)
    except UnknownValue as unknown:
        result.reason_code = unknown.code
        result.reason = unknown.reason[:500]
        return result

    result.known = True
    result.quantity = quantity
    result.money = money
    return result


class _Resolver:
    """Resolves formula variables for one signal, recording each value and where it came from."""

    def __init__(
        self,
        definition: ValueModelDefinition,
        value_type: ValueType,
        calculation: Calculation,
        binding: Binding,
        formula: FormulaDefinition,
        overrides: list[Override],
        facts: SignalFacts,
    ) -> None:
        self.definition = definition
        self.value_type = value_type
        self.calculation = calculation
        self.binding = binding
        self.formula = formula
        self.overrides = overrides
        self.facts = facts
        self.inputs: dict[str, Any] = {}
        self._values: dict[str, Any] = {}

    def __call__(self, name: str) -> Any:
        if name not in self._values:
            value, source = self._resolve(self.formula.parameters[name])
            self._values[name] = value
            self.inputs[name] = {"value": _jsonable(value), **source}
        return self._values[name]

    def _resolve(self, parameter: Parameter) -> tuple[Any, dict[str, Any]]:
        name = parameter.id
        for override in self.overrides:
            raw = override.value_type_variables.get(self.value_type.slug, {}).get(name)
            if raw is None:
                raw = override.signal_defaults.get(self.facts.event_name, {}).get(name)
            if raw is not None:
                return _fixed(parameter, raw), {"source": "override", "override": override.id}

        data_field = self.binding.mapping.get(name) or self.formula.derived_fields.get(name)
        if data_field is not None:
            return value_from_data(parameter, self.facts.data, data_field), {"source": "data", "field": data_field}

        if name in self.binding.defaults:
            return _fixed(parameter, self.binding.defaults[name]), {"source": "fixed"}

        for table_id in (*self.binding.segment_table_ids, *self.calculation.segment_table_ids):
            table = self.definition.segment_tables[table_id]
            row = _segment_row(table, self.facts.data)
            if row is not None and name in row:
                return row[name], {"source": "segment_table", "table": table_id}

        raise UnknownValue("unbound_variable", f"variable {name!r} has no value for this signal")


def _fixed(parameter: Parameter, raw: Any) -> Any:
    try:
        return fixed_value(parameter, raw)
    except ValueError as error:
        raise UnknownValue("invalid_parameter", f"the value {raw!r} of {parameter.id!r} {error}") from None


def _segment_row(table: SegmentTable, data: dict[str, Any] | None) -> dict[str, Decimal] | None:
    segment = {}
    for key in table.keys:
        found, raw = read_data_value(data, key)
        if found and raw is not None and not isinstance(raw, (dict, list)):
            segment[key] = raw if isinstance(raw, str) else _jsonable(raw)
    for values, variables in table.rows:
        if all(str(segment.get(key)) == str(expected) for key, expected in values.items()):
            return variables
    return table.default_row


def _evaluate_with_conditions(
    expression: Formula, conditions: tuple[Condition, ...], default: Result | None, resolve: Any
) -> Any:
    """Return the result of the first condition that holds, else the default, else the expression."""
    for condition in conditions:
        if _holds(condition, resolve):
            return _result_value(condition.result, resolve)
    if conditions and default is not None:
        return _result_value(default, resolve)
    return evaluate(expression, resolve)


def _result_value(result: Result, resolve: Any) -> Any:
    if result.constant is not None:
        return result.constant
    assert result.formula is not None
    return evaluate(result.formula, resolve)


def _holds(condition: Condition, resolve: Any) -> bool:
    subject = _condition_subject(condition.field, resolve)
    operator = condition.operator
    if operator == "eq_bool":
        return isinstance(subject, bool) and subject == condition.value
    if operator in ("eq_string", "contains"):
        if not isinstance(subject, str):
            raise UnknownValue("malformed_field", f"{condition.field!r} is {subject!r} but the condition compares strings")
        return subject == condition.value if operator == "eq_string" else condition.value in subject
    number = subject if isinstance(subject, Decimal) else to_decimal(subject)
    if number is None:
        raise UnknownValue("malformed_field", f"{condition.field!r} is {subject!r} but the condition compares numbers")
    return {
        "gte": number >= condition.value,
        "gt": number > condition.value,
        "lt": number < condition.value,
        "lte": number <= condition.value,
        "eq": number == condition.value,
        "neq": number != condition.value,
    }[operator]


def _condition_subject(field_name: str, resolve: Any) -> Any:
    """Return the value a condition tests: the variable of that name, else the data field."""
    if isinstance(resolve, _Resolver):
        if field_name in resolve.formula.parameters:
            return resolve(field_name)
        data = resolve.facts.data
    else:
        if field_name in resolve.names:
            return resolve(field_name)
        data = resolve.data
    found, raw = read_data_value(data, field_name)
    if not found or raw is None:
        raise UnknownValue("missing_field", f"signal data has no field {field_name!r} for a condition")
    return raw


class _ConversionNames:
    """Resolves the names of a monetary conversion: unit_value and its variables."""

    def __init__(self, values: dict[str, Decimal], data: dict[str, Any] | None) -> None:
        self.values = values
        self.names = set(values)
        self.data = data

    def __call__(self, name: str) -> Decimal:
        return self.values[name]


def _convert(
    conversion: MonetaryConversion,
    slug: str,
    quantity: Decimal,
    overrides: list[Override],
    facts: SignalFacts,
    inputs: dict[str, Any],
) -> Decimal:
    values = dict(conversion.defaults)
    sources = {name: "fixed" for name in values}
    for override in reversed(overrides):
        for name, number in override.conversion_variables.get(slug, {}).items():
            if name in values:
                values[name] = number
                sources[name] = f"override:{override.id}"
    values[UNIT_VALUE] = quantity
    inputs["monetaryConversion"] = {
        name: {"value": _jsonable(values[name]), "source": sources[name]} for name in conversion.defaults
    }
    names = _ConversionNames(values, facts.data)
    return _number_result(
        _evaluate_with_conditions(conversion.expression, conversion.conditions, None, names), "monetary conversion"
    )


def _number_result(value: Any, computation: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise UnknownValue("result_not_a_number", f"the {computation} returned {value!r}, which is not a number")
    value = Decimal(value)
    if not value.is_finite():
        raise UnknownValue("formula_error", f"the {computation} returned {value}")
    return value


def _jsonable(value: Any) -> Any:
    """Render a variable value for the stored inputs; decimals keep the nine stored places."""
    return decimal_text(round_signal_quantity(value)) if isinstance(value, Decimal) else value


def describe_calculation(
    definition: ValueModelDefinition,
    value_type: ValueType,
    moment: datetime,
    customer_id: str,
    customer_external_id: str | None,
) -> list[dict[str, Any]]:
    """Describe how a value type is calculated for a customer at `moment`, for receipts.

    Returns one entry per event name: the formula, and each variable with where its value
    comes from (a fixed value, a customer override, a signal data field or a segment table).
    """
    calculation = value_type.calculation_at(moment) or value_type.latest
    overrides = applicable_overrides(definition, calculation, customer_id, customer_external_id)
    described = []
    for event_name in sorted(calculation.event_names):
        bindings = bindings_for(definition, calculation, event_name, overrides)
        if not bindings:
            continue
        binding = bindings[0]
        formula = definition.formulas[formula_of(calculation, binding)]
        variables = [
            {
                "id": parameter.id,
                "label": parameter.label,
                "type": parameter.type,
                **({"unit": parameter.unit} if parameter.unit else {}),
                **_describe_source(definition, value_type, calculation, binding, formula, overrides, parameter),
            }
            for parameter in formula.parameters.values()
        ]
        entry: dict[str, Any] = {
            "eventName": event_name,
            "label": binding.label,
            "formula": formula.label,
            "expression": formula.expression.text,
            "variables": variables,
        }
        conversion = calculation.monetary_conversion
        if conversion is not None:
            values = dict(conversion.defaults)
            for override in reversed(overrides):
                values.update(
                    {
                        name: number
                        for name, number in override.conversion_variables.get(value_type.slug, {}).items()
                        if name in values
                    }
                )
            entry["monetaryConversion"] = {
                "expression": conversion.expression.text,
                "variables": [
                    {"id": name, "label": conversion.labels.get(name, name), "value": decimal_text(number)}
                    for name, number in values.items()
                ],
            }
        described.append(entry)
    return described


def _describe_source(
    definition: ValueModelDefinition,
    value_type: ValueType,
    calculation: Calculation,
    binding: Binding,
    formula: FormulaDefinition,
    overrides: list[Override],
    parameter: Parameter,
) -> dict[str, Any]:
    name = parameter.id
    for override in overrides:
        raw = override.value_type_variables.get(value_type.slug, {}).get(name)
        if raw is None:
            raw = override.signal_defaults.get(binding.event_name, {}).get(name)
        if raw is not None:
            return {"source": "override", "override": override.id, "value": _described_value(parameter, raw)}
    data_field = binding.mapping.get(name) or formula.derived_fields.get(name)
    if data_field is not None:
        described: dict[str, Any] = {"source": "data", "field": data_field}
        if parameter.type == "duration":
            described["unitField"] = f"{data_field}_unit"
        return described
    if name in binding.defaults:
        return {"source": "fixed", "value": _described_value(parameter, binding.defaults[name])}
    for table_id in (*binding.segment_table_ids, *calculation.segment_table_ids):
        table = definition.segment_tables[table_id]
        if any(name in variables for _, variables in table.rows) or name in (table.default_row or {}):
            return {"source": "segment_table", "table": table_id}
    return {"source": "none"}


def _described_value(parameter: Parameter, raw: Any) -> Any:
    try:
        return _jsonable(fixed_value(parameter, raw))
    except ValueError:
        return raw
