"""Calculations of delivered value, table-tested without a database.

Covers typed parameters read from signal data, fixed values, built-in calculations, formulas,
conditions, segment tables, overrides, timelines and the reasons a value is unknown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tallystick.server.value.calculations import (
    Parameter,
    fixed_value,
    round_line_money,
    value_from_data,
)
from tallystick.server.value.compiler import compile_content
from tallystick.server.value.content import prepare_content
from tallystick.server.value.definitions import ContentError
from tallystick.server.value.evaluation import SignalFacts, ValueResult, evaluate_signal
from tallystick.server.value import formulas
from tallystick.server.value.formulas import FormulaSyntaxError, UnknownValue, parse_formula
from tallystick.server.value.schemas import ValueModelContentIn

WHEN = datetime(2026, 3, 10, tzinfo=UTC)


def model(
    *,
    unit: dict[str, Any] | None = None,
    expression: str | None = "x",
    variables: list[dict[str, Any]] | None = None,
    binding: dict[str, Any] | None = None,
    calculation_name: str | None = None,
    **extra: Any,
) -> Any:
    """Compile a one-value-type model fed by the event "task_done"."""
    formula: dict[str, Any] = {"id": "f", "valueTypeSlug": "saved", "label": "Saved", "variables": variables or []}
    if expression is not None:
        formula["expression"] = expression
    if calculation_name is not None:
        formula["calculation"] = calculation_name
    for key in ("conditions", "defaultResult"):
        if key in extra:
            formula[key] = extra.pop(key)
    calculation = {
        "unit": unit or {"type": "count"},
        "formulaIds": ["f"],
        "signalEventNames": ["task_done"],
        "segmentTableIds": extra.pop("segment_table_ids", []),
        "overrideIds": extra.pop("override_ids", []),
    }
    if "monetaryConversion" in extra:
        calculation["monetaryConversion"] = extra.pop("monetaryConversion")
    timeline = extra.pop("timeline", None) or [{"effectiveFrom": "2020-01-01T00:00:00Z", "calculation": calculation}]
    content = {
        "currency": "USD",
        "valueTypes": [{"slug": "saved", "name": "Saved", "calculationTimeline": timeline}],
        "formulas": [formula, *extra.pop("formulas", [])],
        "signals": [{"eventName": "task_done", "label": "Task", "formulaId": "f", **(binding or {})}],
        **extra,
    }
    return compile_content(prepare_content(ValueModelContentIn.model_validate(content)))


def evaluate(definition: Any, data: dict[str, Any] | None = None, *, customer: str = "cus_1", external: str | None = None, when: datetime = WHEN) -> ValueResult | None:
    results = evaluate_signal(definition, SignalFacts("sig_1", customer, external, None, "task_done", when, data))
    assert len(results) <= 1
    return results[0] if results else None


def known(result: ValueResult | None) -> Decimal:
    assert result is not None
    assert result.known, result.reason
    assert result.quantity is not None
    return result.quantity.normalize()


def unknown(result: ValueResult | None) -> str:
    assert result is not None
    assert not result.known
    assert result.quantity is None
    assert result.reason
    return result.reason_code or ""


# Parameters read from signal data

MINUTES = Parameter(id="t", label="t", type="duration", unit="minutes")
HOURS = Parameter(id="t", label="t", type="duration", unit="hours")
MONEY = Parameter(id="m", label="m", type="money")


@pytest.mark.parametrize(
    ("parameter", "data", "expected"),
    [
        (MINUTES, {"t": 90, "t_unit": "seconds"}, Decimal("1.5")),
        (MINUTES, {"t": 2, "t_unit": "hours"}, Decimal(120)),
        (MINUTES, {"t": 1, "t_unit": "days"}, Decimal(1440)),
        (MINUTES, {"t": "1.5", "t_unit": "minutes"}, Decimal("1.5")),
        (MINUTES, {"t": 0.1, "t_unit": "minutes"}, Decimal("0.1")),
        (HOURS, {"t": 90, "t_unit": "minutes"}, Decimal("1.5")),
        (MONEY, {"m": 1250}, Decimal(1250)),
        (MONEY, {"m": 1250.0}, Decimal(1250)),
        (MONEY, {"m": "1250"}, Decimal(1250)),
        (Parameter(id="n", label="n"), {"n": -3.25}, Decimal("-3.25")),
        (Parameter(id="b", label="b", type="boolean"), {"b": False}, False),
        (Parameter(id="s", label="s", type="string"), {"s": "high"}, "high"),
    ],
)
def test_data_field_values(parameter, data, expected):
    assert value_from_data(parameter, data, parameter.id) == expected


def test_nested_data_field():
    assert value_from_data(MONEY, {"invoice": {"m": 700}}, "invoice.m") == 700


@pytest.mark.parametrize(
    ("parameter", "data", "code"),
    [
        (MINUTES, {}, "missing_field"),
        (MINUTES, None, "missing_field"),
        (MINUTES, {"t": None, "t_unit": "seconds"}, "missing_field"),
        (MINUTES, {"t": 90}, "missing_field"),
        (MINUTES, {"t": 90, "t_unit": "fortnights"}, "malformed_field"),
        (MINUTES, {"t": 90, "t_unit": "Minutes"}, "malformed_field"),
        (MINUTES, {"t": 90, "t_unit": 60}, "malformed_field"),
        (MINUTES, {"t": "ninety", "t_unit": "seconds"}, "malformed_field"),
        (MINUTES, {"t": True, "t_unit": "seconds"}, "malformed_field"),
        (MINUTES, {"t": [90], "t_unit": "seconds"}, "malformed_field"),
        (MINUTES, {"t": "NaN", "t_unit": "seconds"}, "malformed_field"),
        (MONEY, {"m": 12.5}, "malformed_field"),
        (MONEY, {"m": "12.50"}, "malformed_field"),
        (MONEY, {"m": True}, "malformed_field"),
        (Parameter(id="b", label="b", type="boolean"), {"b": "yes"}, "malformed_field"),
        (Parameter(id="s", label="s", type="string"), {"s": 5}, "malformed_field"),
    ],
)
def test_data_field_unknown_reasons(parameter, data, code):
    with pytest.raises(UnknownValue) as raised:
        value_from_data(parameter, data, parameter.id)
    assert raised.value.code == code
    assert repr(parameter.id) in raised.value.reason or f"'{parameter.id}_unit'" in raised.value.reason


@pytest.mark.parametrize(
    ("parameter", "raw", "expected"),
    [
        (HOURS, "4 minutes", Decimal(4) / 60),
        (MINUTES, "90 seconds", Decimal("1.5")),
        (MINUTES, 4, Decimal(4)),
        (MINUTES, "4", Decimal(4)),
        (MONEY, 6000, Decimal(6000)),
        (MONEY, "0.5", Decimal("0.5")),
        (Parameter(id="b", label="b", type="boolean"), "true", True),
        (Parameter(id="b", label="b", type="boolean"), False, False),
    ],
)
def test_fixed_values(parameter, raw, expected):
    assert fixed_value(parameter, raw) == expected


@pytest.mark.parametrize(
    ("parameter", "raw"),
    [(MINUTES, "4 weeks"), (MINUTES, "four minutes"), (MONEY, "sixty"), (Parameter(id="s", label="s", type="string"), 4)],
)
def test_fixed_values_rejected(parameter, raw):
    with pytest.raises(ValueError):
        fixed_value(parameter, raw)


# Built-in calculations


@pytest.mark.parametrize(
    ("unit", "calculation_name", "binding", "data", "expected"),
    [
        # 3 actions x 4 minutes.
        ({"type": "duration", "durationUnit": "minutes"}, "time_saved", {"defaults": {"actions": 3, "time_per_action": 4}}, None, "12"),
        # The value type counts hours: time_per_action is in hours too.
        ({"type": "duration", "durationUnit": "hours"}, "time_saved", {"defaults": {"actions": 3, "time_per_action": "20 minutes"}}, None, "1"),
        # Actions read from the signal.
        ({"type": "duration", "durationUnit": "minutes"}, "time_saved", {"defaults": {"time_per_action": 4}, "variableMapping": {"actions": "messages"}}, {"messages": 5}, "20"),
        # 4 minutes at $60/hour = 400 cents.
        ({"type": "monetary"}, "money_saved", {"defaults": {"time_saved": "4 minutes", "hourly_rate": 6000}}, None, "400"),
        # 90 seconds from data at $60/hour = 150 cents.
        ({"type": "monetary"}, "money_saved", {"defaults": {"hourly_rate": 6000}, "variableMapping": {"time_saved": "t"}}, {"t": 90, "t_unit": "seconds"}, "150"),
        # 7 seconds at $60/hour = 11.666... cents, kept to 1e-9 before any receipt rounds it.
        ({"type": "monetary"}, "money_saved", {"defaults": {"hourly_rate": 6000}, "variableMapping": {"time_saved": "t"}}, {"t": 7, "t_unit": "seconds"}, "11.666666667"),
        ({"type": "monetary"}, "direct_amount", {"variableMapping": {"amount": "money_saved"}}, {"money_saved": 1250}, "1250"),
        ({"type": "duration", "durationUnit": "minutes"}, "direct_amount", {"variableMapping": {"amount": "t"}}, {"t": 90, "t_unit": "seconds"}, "1.5"),
        ({"type": "count", "unit": "tickets"}, "direct_amount", {"defaults": {"amount": 1}}, None, "1"),
        ({"type": "percentage"}, "direct_amount", {"variableMapping": {"amount": "accuracy"}}, {"accuracy": 0.97}, "0.97"),
    ],
)
def test_builtin_calculations(unit, calculation_name, binding, data, expected):
    definition = model(unit=unit, expression=None, calculation_name=calculation_name, binding=binding)
    assert known(evaluate(definition, data)) == Decimal(expected)


def test_builtin_rejects_other_unit_kinds():
    with pytest.raises(ContentError) as raised:
        model(unit={"type": "count"}, expression=None, calculation_name="money_saved", binding={"defaults": {}})
    assert raised.value.path == "content.formulas[0].calculation"


def test_builtin_rejects_a_different_expression():
    with pytest.raises(ContentError) as raised:
        model(
            unit={"type": "monetary"},
            expression="hourly_rate * 2",
            calculation_name="money_saved",
            binding={"defaults": {"time_saved": 1, "hourly_rate": 1}},
        )
    assert raised.value.path == "content.formulas[0].expression"


# Formulas


@pytest.mark.parametrize(
    ("expression", "defaults", "expected"),
    [
        ("x + 0.2", {"x": 0.1}, "0.3"),
        ("x / 3", {"x": 10}, "3.333333333"),
        ("x * 1_000", {"x": 2}, "2000"),
        ("round(x, 1)", {"x": 2.25}, "2.3"),
        ("round(x)", {"x": 2.5}, "3"),
        ("floor(x) + ceil(x)", {"x": 2.5}, "5"),
        ("min(x, 3) + max(x, 3) + abs(-x)", {"x": 5}, "13"),
        ("x ** 2 % 7", {"x": 4}, "2"),
        ("x // 2", {"x": 7}, "3"),
        ("-x if x > 3 and not x == 5 else x", {"x": 4}, "-4"),
        ("1", {"x": 0}, "1"),
    ],
)
def test_formula_arithmetic_is_exact(expression, defaults, expected):
    variables = [{"id": "x", "label": "x"}]
    definition = model(expression=expression, variables=variables, binding={"defaults": defaults})
    assert known(evaluate(definition)) == Decimal(expected)


@pytest.mark.parametrize(
    ("expression", "variables", "defaults", "code"),
    [
        ("x / y", ["x", "y"], {"x": 1, "y": 0}, "formula_error"),
        ("x < s", ["x", "s:string"], {"x": 1, "s": "a"}, "formula_error"),
        ("x > 0", ["x"], {"x": 1}, "result_not_a_number"),
        ("s", ["s:string"], {"s": "a"}, "result_not_a_number"),
        ("x ** 1000", ["x"], {"x": 2}, "formula_error"),
        ("x * 1000000000000", ["x"], {"x": 1}, "value_out_of_range"),
    ],
)
def test_formula_unknown_reasons(expression, variables, defaults, code):
    declared = []
    for variable in variables:
        name, _, kind = variable.partition(":")
        declared.append({"id": name, "label": name, "type": kind or "number"})
    definition = model(expression=expression, variables=declared, binding={"defaults": defaults})
    assert unknown(evaluate(definition)) == code


def test_untaken_branch_needs_no_field():
    definition = model(
        expression="x if done else y",
        variables=[{"id": "x", "label": "x"}, {"id": "y", "label": "y"}, {"id": "done", "label": "done", "type": "boolean"}],
        binding={"variableMapping": {"x": "x", "y": "y", "done": "done"}},
    )
    assert known(evaluate(definition, {"done": True, "x": 7})) == 7
    assert unknown(evaluate(definition, {"done": False, "x": 7})) == "missing_field"


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "x.__class__",
        "x[0]",
        "(lambda: 1)()",
        "f'{x}'",
        "[x]",
        "{'a': x}",
        "x if x else open('f')",
        "exec('1')",
        "1j",
        "round(x, places=2)",
        "x; x",
        "",
        "y",
    ],
)
def test_formula_syntax_rejected(expression):
    with pytest.raises(FormulaSyntaxError):
        parse_formula(expression, {"x"})


def test_deeply_nested_formula_rejected():
    with pytest.raises(FormulaSyntaxError, match="nests deeper than 100 levels"):
        parse_formula("-" * 1000 + "x", {"x"})
    with pytest.raises(FormulaSyntaxError, match="nests deeper"):
        parse_formula("(" * 150 + "x" + ")" * 150 + " + " + " + ".join(["x"] * 120), {"x"})


def test_long_sum_formula_evaluates():
    formula = parse_formula(" + ".join(["x"] * 60), {"x"})

    assert formulas.evaluate(formula, lambda name: Decimal("0.5")) == Decimal("30.0")


# Conditions


CONDITION_VARIABLES = [{"id": "minutes", "label": "Minutes"}]


@pytest.mark.parametrize(
    ("condition", "data", "expected"),
    [
        ({"field": "minutes", "operator": "gte", "value": 10, "result": {"type": "constant", "value": 10}}, {"minutes": 25}, "10"),
        ({"field": "minutes", "operator": "gte", "value": 10, "result": {"type": "constant", "value": 10}}, {"minutes": 4}, "4"),
        ({"field": "priority", "operator": "eq_string", "value": "high", "result": {"type": "expression", "expression": "minutes * 2"}}, {"minutes": 4, "priority": "high"}, "8"),
        ({"field": "escalated", "operator": "eq_bool", "value": True, "result": {"type": "constant", "value": 0}}, {"minutes": 4, "escalated": True}, "0"),
        ({"field": "topic", "operator": "contains", "value": "bill", "result": {"type": "constant", "value": 1}}, {"minutes": 4, "topic": "billing question"}, "1"),
        ({"field": "minutes", "operator": "neq", "value": 4, "result": {"type": "constant", "value": 1}}, {"minutes": 4}, "4"),
    ],
)
def test_formula_conditions(condition, data, expected):
    definition = model(
        expression="minutes",
        variables=CONDITION_VARIABLES,
        binding={"variableMapping": {"minutes": "minutes"}},
        conditions=[condition],
    )
    assert known(evaluate(definition, data)) == Decimal(expected)


def test_condition_default_result_and_missing_field():
    definition = model(
        expression="minutes",
        variables=CONDITION_VARIABLES,
        binding={"variableMapping": {"minutes": "minutes"}},
        conditions=[{"field": "tier", "operator": "eq_string", "value": "gold", "result": {"type": "constant", "value": 50}}],
        defaultResult={"type": "expression", "expression": "minutes / 2"},
    )
    assert known(evaluate(definition, {"minutes": 8, "tier": "gold"})) == 50
    assert known(evaluate(definition, {"minutes": 8, "tier": "silver"})) == 4
    assert unknown(evaluate(definition, {"minutes": 8})) == "missing_field"


# Segment tables, overrides, monetary conversion, timelines


def test_segment_table_lookup():
    table = {
        "id": "tiers",
        "label": "Minutes by tier",
        "segmentKeys": ["tier"],
        "columns": [{"variableId": "minutes", "label": "Minutes", "type": "number"}],
        "rows": [
            {"segmentValues": {"tier": "gold"}, "variables": {"minutes": 30}},
            {"segmentValues": {"tier": "silver"}, "variables": {"minutes": 10}},
        ],
    }
    definition = model(
        expression="minutes", variables=CONDITION_VARIABLES, binding={"segmentTableIds": ["tiers"]}, segmentTables=[table]
    )
    assert known(evaluate(definition, {"tier": "gold"})) == 30
    assert known(evaluate(definition, {"tier": "silver"})) == 10
    assert unknown(evaluate(definition, {"tier": "bronze"})) == "unbound_variable"

    with_default = model(
        expression="minutes",
        variables=CONDITION_VARIABLES,
        binding={"segmentTableIds": ["tiers"]},
        segmentTables=[{**table, "defaultRow": {"minutes": 1}}],
    )
    assert known(evaluate(with_default, {"tier": "bronze"})) == 1


def test_override_applies_to_named_customers_only():
    override = {
        "id": "acme",
        "label": "Acme",
        "scope": {"customerIds": ["cus_acme", "acme-external"]},
        "valueTypeOverrides": {"saved": {"variables": {"x": 9}}},
    }
    definition = model(
        variables=[{"id": "x", "label": "x"}], binding={"defaults": {"x": 1}}, overrides=[override], override_ids=["acme"]
    )
    assert known(evaluate(definition, customer="cus_other")) == 1
    assert known(evaluate(definition, customer="cus_acme")) == 9
    assert known(evaluate(definition, customer="cus_2", external="acme-external")) == 9

    not_listed = model(variables=[{"id": "x", "label": "x"}], binding={"defaults": {"x": 1}}, overrides=[override])
    assert known(evaluate(not_listed, customer="cus_acme")) == 1


def test_override_replaces_a_data_field():
    override = {"id": "flat", "label": "Flat", "scope": {"customerIds": ["cus_flat"]}, "signalOverrides": {"task_done": {"defaults": {"x": 5}}}}
    definition = model(
        variables=[{"id": "x", "label": "x"}], binding={"variableMapping": {"x": "x"}}, overrides=[override], override_ids=["flat"]
    )
    assert unknown(evaluate(definition, {}, customer="cus_other")) == "missing_field"
    assert known(evaluate(definition, {}, customer="cus_flat")) == 5


def test_monetary_conversion_with_override():
    conversion = {"expression": "unit_value * rate", "variables": [{"id": "rate", "label": "Rate", "default": 100}]}
    override = {"id": "vip", "label": "VIP", "scope": {"customerIds": ["cus_vip"]}, "monetaryConversionOverrides": {"saved": {"variables": {"rate": 150}}}}
    definition = model(
        unit={"type": "duration", "durationUnit": "minutes"},
        variables=[{"id": "x", "label": "x"}],
        binding={"defaults": {"x": 4}},
        monetaryConversion=conversion,
        overrides=[override],
        override_ids=["vip"],
    )
    regular = evaluate(definition)
    vip = evaluate(definition, customer="cus_vip")
    assert (known(regular), regular.money) == (4, 400)
    assert (known(vip), vip.money) == (4, 600)


def test_calculation_timeline():
    def entry(start: str, minutes: int) -> dict[str, Any]:
        return {
            "effectiveFrom": start,
            "calculation": {"unit": {"type": "duration", "durationUnit": "minutes"}, "formulaIds": [f"f{minutes}"], "signalEventNames": ["task_done"]},
        }

    content = {
        "currency": "USD",
        "valueTypes": [{"slug": "saved", "name": "Saved", "calculationTimeline": [entry("2026-02-01T00:00:00Z", 4), entry("2026-03-01T00:00:00Z", 6)]}],
        "formulas": [
            {"id": "f4", "valueTypeSlug": "saved", "label": "4", "variables": [], "expression": "4"},
            {"id": "f6", "valueTypeSlug": "saved", "label": "6", "variables": [], "expression": "6"},
        ],
        "signals": [
            {"eventName": "task_done", "label": "Task", "formulaId": "f4"},
            {"eventName": "task_done", "label": "Task", "formulaId": "f6"},
        ],
    }
    definition = compile_content(prepare_content(ValueModelContentIn.model_validate(content)))
    assert evaluate(definition, when=datetime(2026, 1, 15, tzinfo=UTC)) is None
    assert known(evaluate(definition, when=datetime(2026, 2, 15, tzinfo=UTC))) == 4
    assert known(evaluate(definition, when=datetime(2026, 3, 1, tzinfo=UTC))) == 6


def test_other_events_get_no_value():
    definition = model(variables=[{"id": "x", "label": "x"}], binding={"defaults": {"x": 1}})
    facts = SignalFacts("sig_1", "cus_1", None, None, "something_else", WHEN, None)
    assert evaluate_signal(definition, facts) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(Decimal("0.5"), 0), (Decimal("1.5"), 2), (Decimal("2.5"), 2), (Decimal("2.500001"), 3), (Decimal("-1.5"), -2)],
)
def test_receipt_lines_round_half_to_even(raw, expected):
    assert round_line_money(raw) == expected
