"""Rating rules: credit cost times quantity, bracketed credit units and the rounding step."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tallystick.server.signals.rating import PricingLine, RatingError, credits_for, round_credits, signal_quantity


def flat_line(credit_cost: str, pricing_input: dict[str, Any] | None = None) -> PricingLine:
    pricing: dict[str, Any] = {"pricingType": "UsagePrepaidCredits", "eventName": "e", "creditCost": float(credit_cost)}
    if pricing_input is not None:
        pricing["pricingInput"] = pricing_input
    return PricingLine(
        product_id="prod_1",
        product_attribute_id="pattr_1",
        plan_attribute_id=None,
        event_name="e",
        pricing_type="UsagePrepaidCredits",
        currency_id="ccur_1",
        credit_cost=Decimal(credit_cost),
        pricing=pricing,
    )


def bracket_line(brackets: list[dict[str, Any]], path: str | None = None) -> PricingLine:
    pricing_input: dict[str, Any] = {"kind": "signalQuantity"}
    if path is not None:
        pricing_input["path"] = path
    return PricingLine(
        product_id="prod_1",
        product_attribute_id="pattr_1",
        plan_attribute_id=None,
        event_name="e",
        pricing_type="UsageBracketedPrepaidCredits",
        currency_id="ccur_1",
        credit_cost=None,
        pricing={
            "pricingType": "UsageBracketedPrepaidCredits",
            "eventName": "e",
            "pricingInput": pricing_input,
            "creditUnitBrackets": brackets,
        },
    )


def test_round_credits_half_up_to_nine_places():
    assert round_credits(Decimal("0.0000000005")) == Decimal("0.000000001")
    assert round_credits(Decimal("0.0000000004999")) == Decimal(0)
    assert round_credits(Decimal("2.5")) == Decimal("2.500000000")
    assert round_credits(Decimal("1.2345678915")) == Decimal("1.234567892")


def test_unmapped_line_ignores_data_quantity():
    line = flat_line("2")

    assert credits_for(line, {"quantity": 50}) == Decimal(2)
    assert credits_for(line, None) == Decimal(2)


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        ("$.quantity", {"quantity": 3}, Decimal(3)),
        (None, {"quantity": 4}, Decimal(4)),
        ("rooms", {"rooms": 2}, Decimal(2)),
        ("$.usage.tokens", {"usage": {"tokens": 1.5}}, Decimal("1.5")),
        ("dimensions.pages", {"dimensions": {"pages": "7"}}, Decimal(7)),
        ("$.quantity", {}, Decimal(1)),
        ("$.quantity", {"quantity": None}, Decimal(1)),
        ("$.usage.tokens", {"usage": 5}, Decimal(1)),
        ("$.quantity", {"quantity": 0}, Decimal(0)),
    ],
)
def test_mapped_quantity_paths(path, data, expected):
    mapping = {"kind": "signalQuantity"} if path is None else {"kind": "signalQuantity", "path": path}

    assert signal_quantity(flat_line("1", mapping), data) == expected


@pytest.mark.parametrize("value", ["many", -1, True, float("nan"), float("inf"), [1], {"n": 1}, "Infinity"])
def test_invalid_quantity_raises(value):
    line = flat_line("1", {"kind": "signalQuantity", "path": "$.quantity"})

    with pytest.raises(RatingError) as raised:
        credits_for(line, {"quantity": value})

    assert raised.value.code == "validation_error"
    assert raised.value.field == "data.quantity"


def test_fractional_cost_rounds_once():
    line = flat_line("0.000001", {"kind": "signalQuantity"})

    assert credits_for(line, {"quantity": 1234}) == Decimal("0.001234")
    assert credits_for(line, {"quantity": "0.0005"}) == Decimal("0.000000001")


def test_float_quantity_keeps_its_decimal_text():
    line = flat_line("3", {"kind": "signalQuantity"})

    assert credits_for(line, {"quantity": 0.1}) == Decimal("0.3")


FLAT = [{"upTo": 10, "creditUnits": 1}, {"upTo": 100, "creditUnits": 5}, {"upTo": None, "creditUnits": 20}]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(0, 1), (10, 1), (10.5, 5), (100, 5), (101, 20), (10_000, 20)],
)
def test_flat_brackets(quantity, expected):
    assert credits_for(bracket_line(FLAT), {"quantity": quantity}) == Decimal(expected)


def test_flat_brackets_above_last_bound_use_last():
    brackets = [{"upTo": 10, "creditUnits": 1}, {"upTo": 100, "creditUnits": 5}]

    assert credits_for(bracket_line(brackets), {"quantity": 500}) == Decimal(5)


GRADUATED = [
    {"upTo": 10, "creditUnits": 0, "creditUnitsPerUnit": 1},
    {"upTo": 100, "creditUnits": 0, "creditUnitsPerUnit": 0.5},
    {"upTo": None, "creditUnits": 0, "creditUnitsPerUnit": 0.1},
]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(0, "0"), (4, "4"), (10, "10"), (20, "15"), (100, "55"), (110, "56"), (10.5, "10.25")],
)
def test_graduated_brackets(quantity, expected):
    assert credits_for(bracket_line(GRADUATED), {"quantity": quantity}) == Decimal(expected)


def test_graduated_brackets_above_last_bound_use_last_rate():
    brackets = [{"upTo": 10, "creditUnits": 0, "creditUnitsPerUnit": 2}]

    assert credits_for(bracket_line(brackets), {"quantity": 15}) == Decimal(30)


def test_bracket_quantity_path_and_default():
    line = bracket_line(FLAT, path="$.pages")

    assert credits_for(line, {"pages": 50}) == Decimal(5)
    # A missing quantity counts as 1.
    assert credits_for(line, {}) == Decimal(1)


def test_mixed_brackets_are_rejected():
    brackets = [{"upTo": 10, "creditUnits": 1}, {"upTo": None, "creditUnits": 0, "creditUnitsPerUnit": 1}]

    with pytest.raises(RatingError) as raised:
        credits_for(bracket_line(brackets), {"quantity": 1})

    assert raised.value.code == "pricing_invalid"
    assert "mixes flat and graduated" in raised.value.message
