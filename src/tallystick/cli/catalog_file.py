"""Catalog as code: the YAML file format, its validation, and loading with line numbers.

A catalog file names things by stable keys (credit currency `key`, product and plan
`externalId`, pricing line `name`) instead of server ids, so one file applies to any server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tallystick.cli.text_files import NotUtf8Error, read_utf8
from tallystick.server.catalog.schemas import CURRENCY_KEY_PATTERN, PRICING_TYPES, PricingInput
from tallystick.server.errors import format_location


class _Strict(BaseModel):
    # Unknown keys are errors, so a typo in a field name is reported instead of ignored.
    model_config = ConfigDict(extra="forbid")


class CurrencySpec(_Strict):
    key: str = Field(pattern=CURRENCY_KEY_PATTERN.pattern)
    name: str = Field(min_length=1)
    description: str | None = None


class BenefitSpec(_Strict):
    creditCurrency: str = Field(description="Key of the credit currency granted.")
    amount: float | int = Field(ge=0)
    recipient: str | None = None
    isInfiniteTotal: bool | None = None
    allocationCadence: str | None = None
    creditGrantTiming: str | None = None
    overageUnitPrice: int | None = None
    rolloverAmount: float | int | None = None
    rolloverDuration: int | None = None
    rolloverDurationUnit: str | None = None


class PricingSpec(BaseModel):
    """A pricing object in the API's shape, with `creditCurrency` (a key) in place of an id."""

    model_config = ConfigDict(extra="allow")

    pricingType: str

    def check_type(self) -> None:
        if self.pricingType not in PRICING_TYPES:
            raise ValueError(f"unknown pricingType '{self.pricingType}'")


class LineSpec(_Strict):
    name: str = Field(min_length=1)
    active: bool | None = None
    pricing: PricingSpec
    creditBenefits: list[BenefitSpec] | None = None


class PlanLineSpec(_Strict):
    line: str = Field(description="Name of the product's pricing line that this overrides.")
    pricing: PricingSpec
    creditBenefits: list[BenefitSpec] | None = None


class PlanSpec(_Strict):
    externalId: str = Field(min_length=1)
    name: str | None = None
    isDefault: bool | None = None
    supportedCurrencies: list[str] | None = None
    status: str | None = None
    lines: list[PlanLineSpec] = Field(default_factory=list)


class ProductSpec(_Strict):
    externalId: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str | None = None
    active: bool | None = None
    productCode: str | None = None
    metadata: dict[str, Any] | None = None
    lines: list[LineSpec] = Field(default_factory=list)
    plans: list[PlanSpec] = Field(default_factory=list)


class CatalogSpec(_Strict):
    currencies: list[CurrencySpec] = Field(default_factory=list)
    products: list[ProductSpec] = Field(default_factory=list)


class CatalogFileError(Exception):
    """An invalid catalog file; the message names the file, line and field."""


@dataclass
class LoadedCatalog:
    spec: CatalogSpec
    path: Path


def load_catalog_file(path: Path) -> LoadedCatalog:
    """Parse and validate `path`; raise CatalogFileError naming the file, line and field."""
    try:
        text = read_utf8(path)
    except OSError as error:
        raise CatalogFileError(f"{path}: cannot read the file: {error.strerror}") from None
    except NotUtf8Error as error:
        raise CatalogFileError(str(error)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise CatalogFileError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None

    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise CatalogFileError(f"{path}:1: the file must contain a mapping with currencies and products")

    lines = _line_numbers(node)
    try:
        spec = CatalogSpec.model_validate(document)
    except ValidationError as error:
        raise CatalogFileError(_describe(path, error, lines)) from None

    _check_references(path, spec, lines)
    return LoadedCatalog(spec=spec, path=path)


def _describe(path: Path, error: ValidationError, lines: dict[tuple[Any, ...], int]) -> str:
    messages = []
    for problem in error.errors():
        location = tuple(problem["loc"])
        line = _nearest_line(location, lines)
        field = _render_location(location)
        if problem["type"] == "extra_forbidden":
            text = f"unknown field '{location[-1]}' (check its spelling)"
        else:
            text = problem["msg"]
        messages.append(f"{path}:{line}: {field}: {text}")
    return "\n".join(messages)


def _check_references(path: Path, spec: CatalogSpec, lines: dict[tuple[Any, ...], int]) -> None:
    """Check that keys and names referenced inside the file exist and are unique."""
    problems = []
    currency_keys = [currency.key for currency in spec.currencies]
    for index, key in enumerate(currency_keys):
        if currency_keys.index(key) != index:
            problems.append((("currencies", index, "key"), f"duplicate credit currency key '{key}'"))

    for product_index, product in enumerate(spec.products):
        base = ("products", product_index)
        line_names = [line.name for line in product.lines]
        for line_index, line in enumerate(product.lines):
            where = base + ("lines", line_index)
            if line_names.index(line.name) != line_index:
                problems.append((where + ("name",), f"duplicate pricing line name '{line.name}'"))
            problems.extend(_pricing_problems(line.pricing, where + ("pricing",), currency_keys))
            for benefit_index, benefit in enumerate(line.creditBenefits or []):
                if benefit.creditCurrency not in currency_keys:
                    problems.append(
                        (
                            where + ("creditBenefits", benefit_index, "creditCurrency"),
                            f"unknown credit currency '{benefit.creditCurrency}'",
                        )
                    )
        for plan_index, plan in enumerate(product.plans):
            for plan_line_index, plan_line in enumerate(plan.lines):
                where = base + ("plans", plan_index, "lines", plan_line_index)
                if plan_line.line not in line_names:
                    problems.append(
                        (where + ("line",), f"product '{product.externalId}' has no pricing line '{plan_line.line}'")
                    )
                problems.extend(_pricing_problems(plan_line.pricing, where + ("pricing",), currency_keys))
                for benefit_index, benefit in enumerate(plan_line.creditBenefits or []):
                    if benefit.creditCurrency not in currency_keys:
                        problems.append(
                            (
                                where + ("creditBenefits", benefit_index, "creditCurrency"),
                                f"unknown credit currency '{benefit.creditCurrency}'",
                            )
                        )

    if problems:
        raise CatalogFileError(
            "\n".join(
                f"{path}:{_nearest_line(location, lines)}: {_render_location(location)}: {text}"
                for location, text in problems
            )
        )


# Keys a pricing object may have in a catalog file: the API's, with a currency key for the id.
_PRICING_KEYS = {field.alias or name for name, field in PricingInput.model_fields.items()} | {"creditCurrency"}
_PRICING_KEYS.discard("creditsCurrencyId")


def _pricing_problems(
    pricing: PricingSpec, where: tuple[Any, ...], currency_keys: list[str]
) -> list[tuple[tuple[Any, ...], str]]:
    """Check a pricing object as the API would, and flag keys the API does not know.

    The API keeps unknown pricing keys, but in a hand-written file they are almost always typos.
    """
    try:
        pricing.check_type()
    except ValueError as error:
        return [(where + ("pricingType",), str(error))]

    problems = []
    body = pricing.model_dump()
    for key in body:
        if key == "creditsCurrencyId":
            problems.append((where + (key,), "use creditCurrency with the currency key instead"))
        elif key not in _PRICING_KEYS:
            problems.append((where + (key,), f"unknown field '{key}' (check its spelling)"))
    key = body.pop("creditCurrency", None)
    if key is not None:
        if key not in currency_keys:
            problems.append((where + ("creditCurrency",), f"unknown credit currency '{key}'"))
        body["creditsCurrencyId"] = key
    if problems:
        return problems

    try:
        PricingInput.model_validate(body)
    except ValidationError as error:
        for problem in error.errors():
            location = [part for part in problem["loc"] if part != "creditsCurrencyId"] or []
            message = problem["msg"].replace("Value error, ", "").replace("creditsCurrencyId", "creditCurrency")
            problems.append((where + tuple(location), message))
    return problems


def _render_location(location: tuple[Any, ...]) -> str:
    return format_location(location)


def _nearest_line(location: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int:
    """Return the 1-based line of `location`, or of its closest ancestor present in the file."""
    for end in range(len(location), -1, -1):
        if location[:end] in lines:
            return lines[location[:end]]
    return 1


def _line_numbers(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map every path in the YAML document (keys and list indexes) to its 1-based line."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(current: yaml.Node, path: tuple[Any, ...]) -> None:
        lines.setdefault(path, current.start_mark.line + 1)
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                child = path + (key_node.value,)
                lines[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                walk(item, path + (index,))

    if node is not None:
        walk(node, ())
    return lines


def dump_catalog(spec: CatalogSpec) -> str:
    """Render `spec` as catalog YAML, keys in the order the format defines."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
