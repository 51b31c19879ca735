"""Formulas of delivered value: checked when uploaded, evaluated with exact decimals.

A formula is one Python-syntax expression over declared variable names, such as
``actions * minutes_per_action`` or ``hours * rate if priority == "high" else 0``. It is
evaluated by simpleeval, never by Python's eval, and only this grammar is accepted:

- numbers (read as exact decimals), strings, True and False;
- ``+ - * / // % **``, unary ``-`` and ``not``, comparisons, ``and``, ``or``, ``a if c else b``;
- the functions ``min``, ``max``, ``abs``, ``round(x, places)``, ``floor`` and ``ceil``.

Attribute access, subscripts, f-strings, lambdas and every other construct are rejected when
the formula is uploaded, and again by the evaluator.
"""

from __future__ import annotations

import ast
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, DecimalException, localcontext
from typing import Any

import simpleeval

# Maximum length of a formula, in characters.
MAX_EXPRESSION_LENGTH = 2000
# Deepest nesting of a formula's syntax tree. The evaluator recurses at every level: 400
# levels evaluated and 500 exhausted Python's default recursion limit in a server. A sum of
# n terms nests about n levels deep.
MAX_NESTING = 100
# Largest exponent `**` accepts: higher powers of decimals only produce huge numbers.
MAX_EXPONENT = 100
# Significant digits of intermediate results; stored values keep nine decimal places.
EVALUATION_PRECISION = 40


class FormulaSyntaxError(ValueError):
    """An expression that is not a valid formula. The message gives the reason."""


class UnknownValue(Exception):
    """A value that cannot be known for this signal, with a stable code and a reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _round(value: Decimal, places: Decimal | int = 0) -> Decimal:
    """Round half away from zero to `places` decimal places, as people round by hand."""
    places = int(places)
    return Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _floor(value: Decimal) -> Decimal:
    return Decimal(math.floor(value))


def _ceil(value: Decimal) -> Decimal:
    return Decimal(math.ceil(value))


def _power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > MAX_EXPONENT:
        raise UnknownValue("formula_error", f"exponent {exponent} is above the maximum of {MAX_EXPONENT}")
    return base**exponent


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": _round,
    "floor": _floor,
    "ceil": _ceil,
}

_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: _power,
    ast.USub: lambda a: -a,
    ast.UAdd: lambda a: +a,
    ast.Not: lambda a: not a,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}

_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.And,
    ast.Or,
    *_OPERATORS,
)


@dataclass(frozen=True)
class Formula:
    """A checked expression, ready to evaluate many times."""

    text: str
    tree: ast.Expression
    names: frozenset[str]


def parse_formula(text: str, allowed_names: set[str] | frozenset[str]) -> Formula:
    """Check `text` and return it parsed.

    Raises:
        FormulaSyntaxError: the text is empty, too long, not an expression, uses a construct
            outside the formula grammar, or names a variable outside `allowed_names`.
    """
    text = text.strip()
    if not text:
        raise FormulaSyntaxError("must not be empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise FormulaSyntaxError(f"must be at most {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise FormulaSyntaxError(f"is not a valid expression ({error.msg})") from None
    except (RecursionError, MemoryError):
        raise FormulaSyntaxError(f"nests deeper than {MAX_NESTING} levels") from None
    if _nesting(tree) > MAX_NESTING:
        raise FormulaSyntaxError(f"nests deeper than {MAX_NESTING} levels")

    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise FormulaSyntaxError(f"uses {type(node).__name__}, which formulas do not allow")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise FormulaSyntaxError(f"calls an unknown function; use one of {', '.join(FUNCTIONS)}")
            if node.keywords:
                raise FormulaSyntaxError("passes a keyword argument, which formulas do not allow")
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (bool, int, float, str)):
            raise FormulaSyntaxError(f"contains the literal {node.value!r}, which is not a number, string or boolean")

    function_names = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)}
    variables = names - function_names
    unknown = sorted(variables - set(allowed_names))
    if unknown:
        declared = ", ".join(sorted(allowed_names)) or "none"
        raise FormulaSyntaxError(f"uses undeclared variable {unknown[0]!r} (declared: {declared})")
    return Formula(text=text, tree=tree, names=frozenset(variables))


def _nesting(tree: ast.AST) -> int:
    """Return the depth of `tree`, walked without recursion."""
    deepest = 0
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


class _DecimalEvaluator(simpleeval.SimpleEval):
    """simpleeval with number literals read as exact decimals and names resolved on demand."""

    def __init__(self) -> None:
        super().__init__(operators=dict(_OPERATORS), functions=dict(FUNCTIONS), names=self._name)
        self.resolve: Callable[[str], Any] = _no_names
        self.busy = False
        # Constructs outside the formula grammar; parse_formula rejects them first.
        for node_type in (
            ast.Assign, ast.AugAssign, ast.Import, ast.Attribute, ast.Subscript, ast.Index,
            ast.Slice, ast.JoinedStr, ast.FormattedValue, ast.keyword,
        ):
            self.nodes.pop(node_type, None)
        self.nodes[ast.Constant] = self._constant

    def _name(self, node: ast.Name) -> Any:
        return self.resolve(node.id)

    def _constant(self, node: ast.Constant) -> Any:
        value = node.value
        if isinstance(value, bool) or isinstance(value, str):
            return value
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            # The literal's own digits, so that 0.1 is exactly one tenth.
            segment = ast.get_source_segment(self.expr, node) or repr(value)
            try:
                return Decimal(segment.replace("_", ""))
            except DecimalException:
                return Decimal(repr(value))
        raise simpleeval.FeatureNotAvailable(f"literal {value!r} is not allowed")


def _no_names(name: str) -> Any:
    raise UnknownValue("unbound_variable", f"variable {name!r} has no value")


# One evaluator per thread, reused: building one costs more than most evaluations.
_evaluators = threading.local()


def _evaluator() -> _DecimalEvaluator:
    evaluator = getattr(_evaluators, "evaluator", None)
    if evaluator is None or evaluator.busy:
        evaluator = _DecimalEvaluator()
        _evaluators.evaluator = evaluator
    return evaluator


def evaluate(formula: Formula, resolve: Callable[[str], Any]) -> Any:
    """Evaluate `formula`, asking `resolve` for each variable the evaluation reaches.

    Variables on a branch that is not taken are never resolved, so a missing field used only
    there does not make the value unknown.

    Raises:
        UnknownValue: `resolve` raised it, or the arithmetic failed (division by zero, a
            comparison of a number with a string, a result too large).
    """
    evaluator = _evaluator()
    evaluator.resolve = resolve
    evaluator.busy = True
    with localcontext() as context:
        context.prec = EVALUATION_PRECISION
        try:
            return evaluator.eval(formula.text, previously_parsed=formula.tree.body)
        except UnknownValue:
            raise
        except ZeroDivisionError:
            raise UnknownValue("formula_error", f"formula {formula.text!r} divides by zero") from None
        except (DecimalException, ArithmeticError, TypeError, ValueError) as error:
            raise UnknownValue("formula_error", f"formula {formula.text!r} failed: {error}") from None
        except simpleeval.InvalidExpression as error:
            raise UnknownValue("formula_error", f"formula {formula.text!r} is invalid: {error}") from None
        finally:
            evaluator.busy = False
            evaluator.resolve = _no_names
