"""Compiled value model definitions: what evaluation reads, and how bindings are found.

`content.prepare_content` checks uploaded content and returns its stored form;
`compiler.compile_content` turns stored content into a `ValueModelDefinition`.

How a formula variable gets its value for one signal, first match wins:

1. a customer override: ``valueTypeOverrides[slug].variables``, then
   ``signalOverrides[eventName].defaults``, of an override whose scope names the customer and
   whose id the value type's calculation lists in ``overrideIds``;
2. a signal data field: ``variableMapping`` of the signal binding, or the variable's
   ``derivedFrom.sourceField``;
3. a fixed value: ``defaults`` of the signal binding;
4. a segment table row matched on signal data fields.

A variable may not have both a data field and a fixed value in one binding: a missing field
then makes the value unknown instead of silently falling back to the fixed value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tallystick.server.value.calculations import Parameter
from tallystick.server.value.formulas import Formula

CONDITION_OPERATORS = ("gte", "gt", "lt", "lte", "eq", "neq", "contains", "eq_string", "eq_bool")
NUMERIC_OPERATORS = ("gte", "gt", "lt", "lte", "eq", "neq")
# The variable name of the value that a monetary conversion converts.
UNIT_VALUE = "unit_value"


class ContentError(ValueError):
    """A problem in value model content, at a field path such as ``content.formulas[2].expression``."""

    def __init__(self, path: str, message: str, value: Any = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.value = value


@dataclass(frozen=True)
class Unit:
    kind: str
    duration_unit: str | None = None
    name: str | None = None
    display: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.kind}
        if self.duration_unit:
            body["durationUnit"] = self.duration_unit
        if self.name:
            body["unit"] = self.name
        if self.display:
            body["unit_display"] = self.display
        return body


@dataclass(frozen=True)
class Result:
    """The result of a condition (or of the default): a constant, or a formula to evaluate."""

    constant: Decimal | None = None
    formula: Formula | None = None


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: Any
    result: Result


@dataclass(frozen=True)
class FormulaDefinition:
    id: str
    value_type_slug: str
    label: str
    parameters: dict[str, Parameter]
    # Variable id -> signal data field, from derivedFrom.sourceField.
    derived_fields: dict[str, str]
    expression: Formula
    conditions: tuple[Condition, ...] = ()
    default_result: Result | None = None


@dataclass(frozen=True)
class Binding:
    """A signal binding: which formula an event feeds, and how its variables get values."""

    event_name: str
    label: str
    formula_id: str | None
    mapping: dict[str, str]
    defaults: dict[str, Any]
    segment_table_ids: tuple[str, ...]


@dataclass(frozen=True)
class MonetaryConversion:
    expression: Formula
    defaults: dict[str, Decimal]
    labels: dict[str, str]
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Calculation:
    effective_from: datetime
    unit: Unit
    monetary_conversion: MonetaryConversion | None
    formula_ids: tuple[str, ...]
    event_names: frozenset[str]
    segment_table_ids: tuple[str, ...]
    override_ids: tuple[str, ...]


@dataclass(frozen=True)
class ValueType:
    slug: str
    name: str
    description: str | None
    display_order: int | None
    archived: bool
    # Ordered by effective_from, oldest first.
    timeline: tuple[Calculation, ...]

    def calculation_at(self, moment: datetime) -> Calculation | None:
        """Return the calculation in effect at `moment`, or None before the first one."""
        current = None
        for calculation in self.timeline:
            if calculation.effective_from <= moment:
                current = calculation
            else:
                break
        return current

    @property
    def latest(self) -> Calculation:
        return self.timeline[-1]


@dataclass(frozen=True)
class Override:
    id: str
    label: str
    customer_ids: frozenset[str]
    signal_defaults: dict[str, dict[str, Any]]
    value_type_variables: dict[str, dict[str, Any]]
    additional_bindings: tuple[Binding, ...]
    conversion_variables: dict[str, dict[str, Decimal]]

    def applies_to(self, customer_id: str, customer_external_id: str | None) -> bool:
        return customer_id in self.customer_ids or (
            customer_external_id is not None and customer_external_id in self.customer_ids
        )


@dataclass(frozen=True)
class SegmentTable:
    id: str
    keys: tuple[str, ...]
    rows: tuple[tuple[dict[str, str], dict[str, Decimal]], ...]
    default_row: dict[str, Decimal] | None


@dataclass
class ValueModelDefinition:
    """A compiled value model version, ready to evaluate signals."""

    currency: str
    value_types: tuple[ValueType, ...]
    formulas: dict[str, FormulaDefinition]
    bindings: tuple[Binding, ...]
    overrides: dict[str, Override]
    segment_tables: dict[str, SegmentTable]
    version_id: str | None = None
    version: int | None = None
    event_names: frozenset[str] = field(default_factory=frozenset)

    def value_type(self, slug: str) -> ValueType | None:
        return next((value_type for value_type in self.value_types if value_type.slug == slug), None)


def bindings_for(
    definition: ValueModelDefinition, calculation: Calculation, event_name: str, overrides: list[Override]
) -> list[Binding]:
    """Return the bindings that feed `calculation` for `event_name`: the content's, then overrides'."""
    sole_formula = calculation.formula_ids[0] if len(calculation.formula_ids) == 1 else None
    candidates = list(definition.bindings)
    for override in overrides:
        candidates.extend(override.additional_bindings)
    found = []
    for binding in candidates:
        if binding.event_name != event_name:
            continue
        formula_id = binding.formula_id or sole_formula
        if formula_id is not None and formula_id in calculation.formula_ids:
            found.append(binding)
    return found


def formula_of(calculation: Calculation, binding: Binding) -> str:
    return binding.formula_id or calculation.formula_ids[0]
