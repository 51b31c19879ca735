"""How an error message echoes a client's value: numbers, true, false, null, lists and objects as JSON
spells them, and strings in quotes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tallystick.server.errors import bad_request, show_value

SHOWN_VALUES = [
    (None, "null"),
    (True, "true"),
    (False, "false"),
    (10, "10"),
    (-3, "-3"),
    (1.5, "1.5"),
    (10.0, "10.0"),
    (1e300, "1e+300"),
    (float("nan"), "NaN"),
    (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"),
    (Decimal("1.5"), "1.5"),
    (Decimal("-1.5"), "-1.5"),
    (Decimal("10"), "10"),
    (Decimal("10.0"), "10.0"),
    (Decimal("1E+400"), "1e+400"),
    (Decimal("1.5E-12"), "1.5e-12"),
    (Decimal("NaN"), "NaN"),
    (Decimal("sNaN"), "NaN"),
    (Decimal("-Infinity"), "-Infinity"),
    ("1.5", "'1.5'"),
    ("abc", "'abc'"),
    ("x" * 100, "'" + "x" * 76 + "..."),
    ([Decimal("0.05"), "a", None], '[0.05, "a", null]'),
    ({"usd": Decimal("0.05"), "ok": True}, '{"usd": 0.05, "ok": true}'),
    (list(range(1000)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21..."),
    (Decimal("1." + "1" * 100), "1." + "1" * 75 + "..."),
]


@pytest.mark.parametrize(("value", "shown"), SHOWN_VALUES)
def test_show_value_spells_json(value: Any, shown: str) -> None:
    assert show_value(value) == shown


def test_bad_request_keeps_fields_serializable() -> None:
    decimal_error = bad_request("amount", "must be greater than 0", Decimal("-1.5"))
    nan_error = bad_request("ratio", "must be a finite number", float("nan"))

    assert decimal_error.message == "Invalid amount -1.5: must be greater than 0"
    # The exact decimal stays a string in `fields`: the response's JSON encoder writes numbers
    # only from int and float, and a float would round it.
    assert decimal_error.fields == [{"field": "amount", "message": "must be greater than 0", "value": "-1.5"}]
    assert nan_error.message == "Invalid ratio NaN: must be a finite number"
    assert nan_error.fields is not None
    assert nan_error.fields[0]["value"] == "NaN"
