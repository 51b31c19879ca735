"""Normalization of uploaded value model content into the form that is stored."""

from __future__ import annotations

from typing import Any

from tallystick.server.value.calculations import BUILTIN_CALCULATIONS, DURATION_UNITS, UNIT_KINDS, builtin_parameters
from tallystick.server.value.compiler import compile_content
from tallystick.server.value.definitions import ContentError
from tallystick.server.value.schemas import (
    MAX_LABEL_LENGTH,
    FormulaIn,
    FormulaVariableIn,
    UnitIn,
    ValueModelContentIn,
)


def normalize_unit(unit: UnitIn, path: str) -> UnitIn:
    """Check a unit and return it with the wire spelling of its kind."""
    kind = "monetary" if unit.type == "money" else unit.type
    if kind not in UNIT_KINDS:
        raise ContentError(f"{path}.type", f"must be one of {', '.join(UNIT_KINDS)}", unit.type)
    if kind == "duration" and unit.duration_unit not in DURATION_UNITS:
        raise ContentError(
            f"{path}.durationUnit", f"a duration unit must be one of {', '.join(DURATION_UNITS)}", unit.duration_unit
        )
    if kind != "duration" and unit.duration_unit is not None:
        raise ContentError(f"{path}.durationUnit", "is only allowed on duration units", unit.duration_unit)
    if kind == "custom" and (not unit.unit or not unit.unit_display):
        raise ContentError(f"{path}.unit", "a custom unit needs both unit and unit_display", unit.unit)
    if kind == "count" and unit.unit and not unit.unit_display:
        unit = unit.model_copy(update={"unit_display": unit.unit})
    return unit.model_copy(update={"type": kind})


def prepare_content(content: ValueModelContentIn) -> dict[str, Any]:
    """Check uploaded content and return its stored form.

    Units get their wire spelling, built-in calculations get their expression and variables,
    and missing labels get defaults. The result compiles without errors.

    Raises:
        ContentError: the first problem found, with its field path.
    """
    content = content.model_copy(deep=True)
    content.currency = content.currency.upper()

    units_by_slug: dict[str, UnitIn] = {}
    for index, value_type in enumerate(content.value_types):
        for entry_index, entry in enumerate(value_type.calculation_timeline):
            path = f"content.valueTypes[{index}].calculationTimeline[{entry_index}].calculation.unit"
            entry.calculation.unit = normalize_unit(entry.calculation.unit, path)
        latest = max(value_type.calculation_timeline, key=lambda entry: entry.effective_from)
        units_by_slug.setdefault(value_type.slug, latest.calculation.unit)

    for index, formula in enumerate(content.formulas):
        path = f"content.formulas[{index}]"
        unit = units_by_slug.get(formula.value_type_slug)
        if unit is None:
            raise ContentError(f"{path}.valueTypeSlug", "names no value type of this content", formula.value_type_slug)
        content.formulas[index] = _prepare_formula(formula, unit, path)

    # An event name may be longer than a label, so the default label is cut to fit.
    for binding in content.signals:
        binding.label = binding.label or binding.event_name[:MAX_LABEL_LENGTH]
    for override in content.overrides or []:
        for binding in override.additional_signals or []:
            binding.label = binding.label or binding.event_name[:MAX_LABEL_LENGTH]

    stored = content.model_dump(by_alias=True, exclude_none=True, mode="json")
    compile_content(stored)
    return stored


def _prepare_formula(formula: FormulaIn, unit: UnitIn, path: str) -> FormulaIn:
    formula.label = formula.label or formula.id
    for variable in formula.variables:
        variable.label = variable.label or variable.id

    if formula.calculation is None:
        if not formula.expression:
            raise ContentError(f"{path}.expression", "is required unless a built-in calculation is named")
        return formula

    builtin = BUILTIN_CALCULATIONS.get(formula.calculation)
    if builtin is None:
        raise ContentError(
            f"{path}.calculation", f"must be one of {', '.join(BUILTIN_CALCULATIONS)}", formula.calculation
        )
    if builtin.unit_kinds and unit.type not in builtin.unit_kinds:
        raise ContentError(
            f"{path}.calculation",
            f"{builtin.name} applies to value types of unit {' or '.join(builtin.unit_kinds)}, "
            f"but {formula.value_type_slug!r} is {unit.type}",
            formula.calculation,
        )
    if formula.expression and formula.expression.strip() != builtin.expression:
        raise ContentError(
            f"{path}.expression",
            f"the built-in calculation {builtin.name} computes {builtin.expression!r}; omit expression",
            formula.expression,
        )

    sent_variables = {variable.id: variable for variable in formula.variables}
    parameters = builtin_parameters(builtin, unit.type, unit.duration_unit)
    known = {parameter.id for parameter in parameters}
    extra = sorted(set(sent_variables) - known)
    if extra:
        raise ContentError(
            f"{path}.variables", f"{builtin.name} has no variable {extra[0]!r}; its variables are {', '.join(sorted(known))}"
        )

    variables = []
    for parameter in parameters:
        sent = sent_variables.get(parameter.id)
        if sent is not None and sent.type not in (None, parameter.type):
            raise ContentError(f"{path}.variables", f"{parameter.id} of {builtin.name} has type {parameter.type}", sent.type)
        if sent is not None and parameter.unit and sent.format_unit not in (None, parameter.unit):
            raise ContentError(
                f"{path}.variables", f"{parameter.id} of {builtin.name} is in {parameter.unit}", sent.format_unit
            )
        variable = FormulaVariableIn(id=parameter.id, label=parameter.label, type=parameter.type, format_unit=parameter.unit)
        if parameter.type == "duration":
            variable.format = "duration"
        if sent is not None:
            # The caller may relabel and describe a built-in's variables, or bind them to data.
            variable.label = sent.label or parameter.label
            variable.description = sent.description
            variable.format = sent.format or variable.format
            variable.derived_from = sent.derived_from
        variables.append(variable)
    formula.variables = variables
    formula.expression = builtin.expression
    return formula
