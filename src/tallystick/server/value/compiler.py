"""Compilation of stored value model content into a definition, with its reference checks."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from tallystick.server.value.calculations import DURATION_UNITS, PARAMETER_TYPES, Parameter, fixed_value, to_decimal
from tallystick.server.value.definitions import (
    CONDITION_OPERATORS,
    NUMERIC_OPERATORS,
    UNIT_VALUE,
    Binding,
    Calculation,
    Condition,
    ContentError,
    FormulaDefinition,
    MonetaryConversion,
    Override,
    Result,
    SegmentTable,
    Unit,
    ValueModelDefinition,
    ValueType,
    bindings_for,
    formula_of,
)
from tallystick.server.value.formulas import Formula, FormulaSyntaxError, parse_formula
from tallystick.server.value.schemas import CalculationIn, FormulaIn, FormulaVariableIn, SignalBindingIn


def compile_content(
    content: dict[str, Any], *, version_id: str | None = None, version: int | None = None
) -> ValueModelDefinition:
    """Compile stored content (wire keys) into a definition.

    Raises:
        ContentError: a broken reference, formula or value, with its field path.
    """
    formulas_in = [FormulaIn.model_validate(item) for item in content.get("formulas", [])]
    value_types_in = content.get("valueTypes", [])

    slugs = _unique_ids([item["slug"] for item in value_types_in], "content.valueTypes", "slug")
    formula_ids = _unique_ids([formula.id for formula in formulas_in], "content.formulas", "id")
    segment_tables = _compile_segment_tables(content.get("segmentTables") or [])
    override_ids = _unique_ids([item["id"] for item in content.get("overrides") or []], "content.overrides", "id")

    # Units first: a duration variable without its own unit takes its value type's unit.
    units: dict[str, Unit] = {}
    for index, item in enumerate(value_types_in):
        latest = max(item["calculationTimeline"], key=lambda entry: entry["effectiveFrom"])
        units[item["slug"]] = _unit(latest["calculation"]["unit"])

    formulas: dict[str, FormulaDefinition] = {}
    for index, formula in enumerate(formulas_in):
        path = f"content.formulas[{index}]"
        if formula.value_type_slug not in slugs:
            raise ContentError(f"{path}.valueTypeSlug", "names no value type of this content", formula.value_type_slug)
        formulas[formula.id] = _compile_formula(formula, units[formula.value_type_slug], path)

    bindings = tuple(
        _binding(SignalBindingIn.model_validate(item), f"content.signals[{index}]", formulas, segment_tables)
        for index, item in enumerate(content.get("signals", []))
    )
    overrides = {
        item["id"]: _compile_override(item, f"content.overrides[{index}]", formulas, segment_tables, slugs)
        for index, item in enumerate(content.get("overrides") or [])
    }

    value_types = []
    event_names: set[str] = set()
    for index, item in enumerate(value_types_in):
        value_type = _compile_value_type(
            item, f"content.valueTypes[{index}]", formula_ids, formulas, segment_tables, override_ids
        )
        value_types.append(value_type)
        for calculation in value_type.timeline:
            event_names.update(calculation.event_names)

    definition = ValueModelDefinition(
        currency=content["currency"],
        value_types=tuple(value_types),
        formulas=formulas,
        bindings=bindings,
        overrides=overrides,
        segment_tables=segment_tables,
        version_id=version_id,
        version=version,
        event_names=frozenset(event_names),
    )
    _check_bindings_complete(definition)
    return definition


def _unique_ids(ids: list[str], path: str, key: str) -> set[str]:
    seen: set[str] = set()
    for index, item in enumerate(ids):
        if item in seen:
            raise ContentError(f"{path}[{index}].{key}", "is used twice", item)
        seen.add(item)
    return seen


def _unit(raw: dict[str, Any]) -> Unit:
    return Unit(
        kind=raw["type"],
        duration_unit=raw.get("durationUnit"),
        name=raw.get("unit"),
        display=raw.get("unit_display") or raw.get("unitDisplay"),
    )


def _compile_formula(formula: FormulaIn, unit: Unit, path: str) -> FormulaDefinition:
    parameters: dict[str, Parameter] = {}
    derived_fields: dict[str, str] = {}
    for index, variable in enumerate(formula.variables):
        variable_path = f"{path}.variables[{index}]"
        parameter = _parameter(variable, unit, variable_path)
        if parameter.id in parameters:
            raise ContentError(f"{variable_path}.id", "is declared twice", parameter.id)
        parameters[parameter.id] = parameter
        if variable.derived_from is not None:
            derived_fields[parameter.id] = variable.derived_from.source_field

    names = set(parameters)
    expression = _parse(formula.expression or "", names, f"{path}.expression")
    conditions = tuple(
        _condition(condition, names, parameters, f"{path}.conditions[{index}]")
        for index, condition in enumerate(formula.conditions or [])
    )
    default_result = None
    if formula.default_result is not None:
        default_result = _result(formula.default_result, names, f"{path}.defaultResult")
    return FormulaDefinition(
        id=formula.id,
        value_type_slug=formula.value_type_slug,
        label=formula.label or formula.id,
        parameters=parameters,
        derived_fields=derived_fields,
        expression=expression,
        conditions=conditions,
        default_result=default_result,
    )


def _parameter(variable: FormulaVariableIn, unit: Unit, path: str) -> Parameter:
    if not variable.id.isidentifier() or variable.id in ("True", "False", "None", UNIT_VALUE):
        raise ContentError(f"{path}.id", "must be a name such as minutes_saved (letters, digits, '_')", variable.id)
    parameter_type = variable.type or "number"
    if parameter_type not in PARAMETER_TYPES:
        raise ContentError(f"{path}.type", f"must be one of {', '.join(PARAMETER_TYPES)}", variable.type)
    for key, raw in (("formatUnit", variable.format_unit), ("derivedFrom.targetUnit", variable.derived_from and variable.derived_from.target_unit)):
        if raw is not None and raw not in DURATION_UNITS:
            raise ContentError(f"{path}.{key}", f"must be one of {', '.join(DURATION_UNITS)}", raw)
    if variable.format not in (None, "percent", "duration"):
        raise ContentError(f"{path}.format", "must be percent or duration", variable.format)

    time_unit = None
    if parameter_type == "duration":
        target = variable.derived_from.target_unit if variable.derived_from else None
        if target and variable.format_unit and target != variable.format_unit:
            raise ContentError(f"{path}.formatUnit", f"differs from derivedFrom.targetUnit {target!r}", variable.format_unit)
        time_unit = target or variable.format_unit or unit.duration_unit or "minutes"
    return Parameter(id=variable.id, label=variable.label or variable.id, type=parameter_type, unit=time_unit)


def _parse(text: str, names: set[str], path: str) -> Formula:
    try:
        return parse_formula(text, names)
    except FormulaSyntaxError as error:
        raise ContentError(path, str(error), text) from None


def _result(raw: Any, names: set[str], path: str) -> Result:
    if raw.type == "constant":
        constant = to_decimal(raw.value)
        if constant is None:
            raise ContentError(f"{path}.value", "a constant result needs a number", raw.value)
        return Result(constant=constant)
    if raw.type == "expression":
        if not raw.expression:
            raise ContentError(f"{path}.expression", "an expression result needs an expression")
        return Result(formula=_parse(raw.expression, names, f"{path}.expression"))
    raise ContentError(f"{path}.type", "must be constant or expression", raw.type)


def _condition(raw: Any, names: set[str], parameters: dict[str, Parameter], path: str) -> Condition:
    if raw.operator not in CONDITION_OPERATORS:
        raise ContentError(f"{path}.operator", f"must be one of {', '.join(CONDITION_OPERATORS)}", raw.operator)
    value = raw.value
    if raw.operator in NUMERIC_OPERATORS:
        value = to_decimal(raw.value)
        if value is None:
            raise ContentError(f"{path}.value", f"operator {raw.operator} compares numbers", raw.value)
    elif raw.operator == "eq_bool" and not isinstance(raw.value, bool):
        raise ContentError(f"{path}.value", "operator eq_bool compares with true or false", raw.value)
    elif raw.operator in ("contains", "eq_string") and not isinstance(raw.value, str):
        raise ContentError(f"{path}.value", f"operator {raw.operator} compares strings", raw.value)
    return Condition(field=raw.field, operator=raw.operator, value=value, result=_result(raw.result, names, f"{path}.result"))


def _binding(
    binding: SignalBindingIn,
    path: str,
    formulas: dict[str, FormulaDefinition],
    segment_tables: dict[str, SegmentTable],
) -> Binding:
    mapping = dict(binding.variable_mapping or {})
    defaults = dict(binding.defaults or {})
    formula = None
    if binding.formula_id is not None:
        formula = formulas.get(binding.formula_id)
        if formula is None:
            raise ContentError(f"{path}.formulaId", "names no formula of this content", binding.formula_id)

    for variable_id, field_name in mapping.items():
        if formula is not None and variable_id not in formula.parameters:
            raise ContentError(f"{path}.variableMapping", f"formula {formula.id!r} has no variable {variable_id!r}", variable_id)
        if not field_name:
            raise ContentError(f"{path}.variableMapping.{variable_id}", "must name a signal data field", field_name)
    for variable_id, raw in defaults.items():
        if formula is None:
            continue
        parameter = formula.parameters.get(variable_id)
        if parameter is None:
            raise ContentError(f"{path}.defaults", f"formula {formula.id!r} has no variable {variable_id!r}", variable_id)
        if variable_id in mapping or variable_id in formula.derived_fields:
            raise ContentError(
                f"{path}.defaults.{variable_id}",
                "is also read from a signal data field; a variable takes either a fixed value or a data field",
                raw,
            )
        try:
            fixed_value(parameter, raw)
        except ValueError as error:
            raise ContentError(f"{path}.defaults.{variable_id}", str(error), raw) from None

    table_ids = tuple(binding.segment_table_ids or ())
    for table_id in table_ids:
        if table_id not in segment_tables:
            raise ContentError(f"{path}.segmentTableIds", "names no segment table of this content", table_id)
    return Binding(
        event_name=binding.event_name,
        label=binding.label or binding.event_name,
        formula_id=binding.formula_id,
        mapping=mapping,
        defaults=defaults,
        segment_table_ids=table_ids,
    )


def _compile_segment_tables(items: list[dict[str, Any]]) -> dict[str, SegmentTable]:
    tables: dict[str, SegmentTable] = {}
    for index, item in enumerate(items):
        path = f"content.segmentTables[{index}]"
        if item["id"] in tables:
            raise ContentError(f"{path}.id", "is used twice", item["id"])
        columns = {column["variableId"] for column in item["columns"]}
        keys = tuple(item["segmentKeys"])
        rows = []
        for row_index, row in enumerate(item["rows"]):
            row_path = f"{path}.rows[{row_index}]"
            unknown_keys = set(row["segmentValues"]) - set(keys)
            if unknown_keys:
                raise ContentError(f"{row_path}.segmentValues", "uses a key outside segmentKeys", sorted(unknown_keys)[0])
            rows.append((dict(row["segmentValues"]), _column_values(row["variables"], columns, f"{row_path}.variables")))
        default_row = None
        if item.get("defaultRow") is not None:
            default_row = _column_values(item["defaultRow"], columns, f"{path}.defaultRow")
        tables[item["id"]] = SegmentTable(id=item["id"], keys=keys, rows=tuple(rows), default_row=default_row)
    return tables


def _column_values(raw: dict[str, Any], columns: set[str], path: str) -> dict[str, Decimal]:
    values = {}
    for key, number in raw.items():
        if key not in columns:
            raise ContentError(path, f"{key!r} is not a column of the table", key)
        value = to_decimal(number)
        if value is None:
            raise ContentError(f"{path}.{key}", "must be a number", number)
        values[key] = value
    return values


def _compile_override(
    item: dict[str, Any],
    path: str,
    formulas: dict[str, FormulaDefinition],
    segment_tables: dict[str, SegmentTable],
    slugs: set[str],
) -> Override:
    value_type_variables: dict[str, dict[str, Any]] = {}
    for slug, body in (item.get("valueTypeOverrides") or {}).items():
        if slug not in slugs:
            raise ContentError(f"{path}.valueTypeOverrides", "names no value type of this content", slug)
        variables = body.get("variables") or {}
        parameters = {
            parameter.id: parameter
            for formula in formulas.values()
            if formula.value_type_slug == slug
            for parameter in formula.parameters.values()
        }
        for variable_id, raw in variables.items():
            _check_fixed(parameters, variable_id, raw, f"{path}.valueTypeOverrides.{slug}.variables", f"value type {slug!r}")
        value_type_variables[slug] = dict(variables)

    all_parameters = {parameter.id: parameter for formula in formulas.values() for parameter in formula.parameters.values()}
    signal_defaults: dict[str, dict[str, Any]] = {}
    for event_name, body in (item.get("signalOverrides") or {}).items():
        defaults = body.get("defaults") or {}
        for variable_id, raw in defaults.items():
            _check_fixed(all_parameters, variable_id, raw, f"{path}.signalOverrides.{event_name}.defaults", "any formula")
        signal_defaults[event_name] = dict(defaults)

    conversion_variables: dict[str, dict[str, Decimal]] = {}
    for slug, body in (item.get("monetaryConversionOverrides") or {}).items():
        if slug not in slugs:
            raise ContentError(f"{path}.monetaryConversionOverrides", "names no value type of this content", slug)
        values = {}
        for variable_id, raw in (body.get("variables") or {}).items():
            number = to_decimal(raw)
            if number is None:
                raise ContentError(f"{path}.monetaryConversionOverrides.{slug}.variables.{variable_id}", "must be a number", raw)
            values[variable_id] = number
        conversion_variables[slug] = values

    additional = tuple(
        _binding(SignalBindingIn.model_validate(binding), f"{path}.additionalSignals[{index}]", formulas, segment_tables)
        for index, binding in enumerate(item.get("additionalSignals") or [])
    )
    return Override(
        id=item["id"],
        label=item["label"],
        customer_ids=frozenset((item.get("scope") or {}).get("customerIds") or ()),
        signal_defaults=signal_defaults,
        value_type_variables=value_type_variables,
        additional_bindings=additional,
        conversion_variables=conversion_variables,
    )


def _check_fixed(parameters: dict[str, Parameter], variable_id: str, raw: Any, path: str, owner: str) -> None:
    parameter = parameters.get(variable_id)
    if parameter is None:
        raise ContentError(path, f"{owner} has no formula variable {variable_id!r}", variable_id)
    try:
        fixed_value(parameter, raw)
    except ValueError as error:
        raise ContentError(f"{path}.{variable_id}", str(error), raw) from None


def _compile_value_type(
    item: dict[str, Any],
    path: str,
    formula_ids: set[str],
    formulas: dict[str, FormulaDefinition],
    segment_tables: dict[str, SegmentTable],
    override_ids: set[str],
) -> ValueType:
    timeline = []
    seen_times: set[datetime] = set()
    for index, entry in enumerate(item["calculationTimeline"]):
        entry_path = f"{path}.calculationTimeline[{index}]"
        effective_from = datetime.fromisoformat(entry["effectiveFrom"].replace("Z", "+00:00"))
        if effective_from in seen_times:
            raise ContentError(f"{entry_path}.effectiveFrom", "is used by another entry of this timeline", entry["effectiveFrom"])
        seen_times.add(effective_from)
        calculation = CalculationIn.model_validate(entry["calculation"])
        calculation_path = f"{entry_path}.calculation"

        for formula_id in calculation.formula_ids:
            if formula_id not in formula_ids:
                raise ContentError(f"{calculation_path}.formulaIds", "names no formula of this content", formula_id)
            if formulas[formula_id].value_type_slug != item["slug"]:
                raise ContentError(
                    f"{calculation_path}.formulaIds",
                    f"formula {formula_id!r} belongs to value type {formulas[formula_id].value_type_slug!r}",
                    formula_id,
                )
        for table_id in calculation.segment_table_ids:
            if table_id not in segment_tables:
                raise ContentError(f"{calculation_path}.segmentTableIds", "names no segment table of this content", table_id)
        for override_id in calculation.override_ids:
            if override_id not in override_ids:
                raise ContentError(f"{calculation_path}.overrideIds", "names no override of this content", override_id)

        conversion = None
        if calculation.monetary_conversion is not None:
            conversion = _conversion(calculation.monetary_conversion, f"{calculation_path}.monetaryConversion")
        timeline.append(
            Calculation(
                effective_from=effective_from,
                unit=_unit(entry["calculation"]["unit"]),
                monetary_conversion=conversion,
                formula_ids=tuple(calculation.formula_ids),
                event_names=frozenset(calculation.signal_event_names),
                segment_table_ids=tuple(calculation.segment_table_ids),
                override_ids=tuple(calculation.override_ids),
            )
        )
    timeline.sort(key=lambda calculation: calculation.effective_from)
    return ValueType(
        slug=item["slug"],
        name=item["name"],
        description=item.get("description"),
        display_order=item.get("displayOrder"),
        archived=item.get("archivedAt") is not None,
        timeline=tuple(timeline),
    )


def _conversion(raw: Any, path: str) -> MonetaryConversion:
    defaults: dict[str, Decimal] = {}
    labels: dict[str, str] = {}
    for index, variable in enumerate(raw.variables or []):
        variable_path = f"{path}.variables[{index}]"
        if not variable.id.isidentifier() or variable.id == UNIT_VALUE:
            raise ContentError(f"{variable_path}.id", "must be a name such as rate (letters, digits, '_')", variable.id)
        if variable.id in defaults:
            raise ContentError(f"{variable_path}.id", "is declared twice", variable.id)
        number = to_decimal(variable.default)
        if number is None:
            raise ContentError(f"{variable_path}.default", "must be a number", variable.default)
        defaults[variable.id] = number
        labels[variable.id] = variable.label
    names = set(defaults) | {UNIT_VALUE}
    parameters = {name: Parameter(id=name, label=labels.get(name, name)) for name in names}
    conditions = tuple(
        _condition(condition, names, parameters, f"{path}.conditions[{index}]")
        for index, condition in enumerate(raw.conditions or [])
    )
    return MonetaryConversion(
        expression=_parse(raw.expression, names, f"{path}.expression"),
        defaults=defaults,
        labels=labels,
        conditions=conditions,
    )


def _check_bindings_complete(definition: ValueModelDefinition) -> None:
    """Check that every event of every calculation has one binding whose variables are all bound."""
    for type_index, value_type in enumerate(definition.value_types):
        for calculation in value_type.timeline:
            listed = [definition.overrides[override_id] for override_id in calculation.override_ids]
            for event_name in sorted(calculation.event_names):
                path = f"content.valueTypes[{type_index}]"
                own = bindings_for(definition, calculation, event_name, [])
                with_overrides = bindings_for(definition, calculation, event_name, listed)
                if len(own) > 1:
                    raise ContentError(
                        "content.signals",
                        f"event {event_name!r} has {len(own)} bindings to the formulas of value type "
                        f"{value_type.slug!r}; keep one, or name distinct formulaIds",
                        event_name,
                    )
                if not with_overrides:
                    raise ContentError(
                        f"{path}.calculationTimeline",
                        f"event {event_name!r} of value type {value_type.slug!r} has no signal binding: add an "
                        f"entry to signals with this eventName and one of formulaIds {list(calculation.formula_ids)}",
                        event_name,
                    )
                for binding in with_overrides:
                    _check_variables_bound(definition, value_type.slug, calculation, binding, listed)


def _check_variables_bound(
    definition: ValueModelDefinition,
    slug: str,
    calculation: Calculation,
    binding: Binding,
    overrides: list[Override],
) -> None:
    formula = definition.formulas[formula_of(calculation, binding)]
    tables = [definition.segment_tables[table_id] for table_id in (*binding.segment_table_ids, *calculation.segment_table_ids)]
    for variable_id, parameter in formula.parameters.items():
        if variable_id in binding.mapping or variable_id in formula.derived_fields or variable_id in binding.defaults:
            continue
        if any(_table_has(table, variable_id) for table in tables):
            continue
        if any(
            variable_id in override.value_type_variables.get(slug, {})
            or variable_id in override.signal_defaults.get(binding.event_name, {})
            for override in overrides
        ):
            continue
        raise ContentError(
            "content.signals",
            f"variable {variable_id!r} of formula {formula.id!r} has no value for event {binding.event_name!r}: "
            "give it a fixed value in defaults or a data field in variableMapping",
            variable_id,
        )
    for variable_id in binding.defaults:
        if variable_id not in formula.parameters:
            raise ContentError("content.signals", f"formula {formula.id!r} has no variable {variable_id!r}", variable_id)
        if variable_id in binding.mapping or variable_id in formula.derived_fields:
            raise ContentError(
                "content.signals",
                f"variable {variable_id!r} of event {binding.event_name!r} has both a fixed value and a data field",
                variable_id,
            )
        try:
            fixed_value(formula.parameters[variable_id], binding.defaults[variable_id])
        except ValueError as error:
            raise ContentError(f"content.signals.defaults.{variable_id}", str(error), binding.defaults[variable_id]) from None


def _table_has(table: SegmentTable, variable_id: str) -> bool:
    if table.default_row is not None and variable_id in table.default_row:
        return True
    return any(variable_id in variables for _, variables in table.rows)
