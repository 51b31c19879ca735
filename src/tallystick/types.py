"""Typed shapes of the API's JSON bodies, as TypedDicts with the wire's camelCase keys.

The clients return plain dicts decoded from JSON, so the base install needs no pydantic and
unknown fields the server adds later pass through untouched. These TypedDicts only describe
them for type checkers and editors. Decoding turns JSON numbers with a fraction into Decimal,
so credit amounts stay exact; timestamps stay RFC 3339 strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Generic, NotRequired, TypedDict, TypeVar

JsonObject = dict[str, Any]
Number = int | Decimal

ItemT = TypeVar("ItemT")


class Pagination(TypedDict):
    limit: int
    offset: int
    total: int
    hasMore: bool


class Page(TypedDict, Generic[ItemT]):
    data: list[ItemT]
    pagination: Pagination


class DataList(TypedDict, Generic[ItemT]):
    data: list[ItemT]


class Customer(TypedDict):
    id: str
    name: str
    email: str
    phone: str
    website: str
    externalId: NotRequired[str | None]
    legalName: NotRequired[str | None]
    creationState: str
    status: str
    defaultCurrency: str
    metadata: NotRequired[JsonObject | None]
    createdAt: str
    updatedAt: str


class Product(TypedDict):
    id: str
    name: str
    active: bool
    externalId: NotRequired[str | None]
    description: NotRequired[str | None]
    metadata: NotRequired[JsonObject | None]
    productAttributes: NotRequired[list[JsonObject]]
    createdAt: str
    updatedAt: str


class Plan(TypedDict):
    id: str
    productId: str
    name: NotRequired[str | None]
    externalId: NotRequired[str | None]
    status: str
    attributes: list[JsonObject]
    createdAt: str
    updatedAt: str


class CreditCurrency(TypedDict):
    id: str
    name: str
    key: str
    status: str
    description: NotRequired[str | None]
    createdAt: str
    updatedAt: str


class CreditGrantBalance(TypedDict):
    available: Number
    used: Number
    total: Number
    periodStart: str
    expiresAt: NotRequired[str | None]
    isInRolloverWindow: bool
    # USD value of one credit that the grant was given, with twelve decimal places.
    unitValue: NotRequired[str | None]


class CreditBalance(TypedDict):
    creditsCurrencyId: str
    currencyName: str
    currencyKey: str
    available: Number
    used: Number
    total: Number
    availableDecimal: NotRequired[str]
    recipient: str
    grants: list[CreditGrantBalance]


class GrantResult(TypedDict):
    created: bool
    customer: JsonObject
    creditCurrency: JsonObject
    grant: JsonObject
    createdAt: str


class FieldProblem(TypedDict):
    field: str
    message: str
    value: NotRequired[Any]


class SignalError(TypedDict):
    index: int
    idempotencyKey: NotRequired[str | None]
    code: str
    field: NotRequired[str | None]
    message: str
    fields: NotRequired[list[FieldProblem]]


class BulkSignalsResult(TypedDict):
    ingested: int
    duplicates: int
    failed: int
    errors: NotRequired[list[SignalError]]


class SignalItem(TypedDict):
    id: str
    name: str
    customerId: NotRequired[str | None]
    externalCustomerId: NotRequired[str | None]
    productId: NotRequired[str | None]
    externalProductId: NotRequired[str | None]
    traceId: NotRequired[str | None]
    data: NotRequired[JsonObject | None]
    idempotencyKey: NotRequired[str | None]
    creditsConsumed: NotRequired[str]
    creditsPending: NotRequired[str]
    creditCurrencyKey: NotRequired[str | None]
    cost: NotRequired[JsonObject | None]
    revenue: NotRequired[JsonObject | None]
    margin: NotRequired[JsonObject | None]
    createdAt: str


class CostIngestResult(TypedDict):
    ingested: int
    duplicates: int


class HoldPlaced(TypedDict):
    allowed: bool
    # The hold's id (None when denied). Servers before this field was added send only holdId,
    # which carries the same value.
    id: NotRequired[str | None]
    holdId: str | None
    available: Number
    availableDecimal: str
    amountDecimal: str
    expiresAt: NotRequired[str | None]


class CreditHold(TypedDict):
    id: str
    customerId: str
    creditsCurrencyId: str
    status: str
    amountDecimal: str
    reservedDecimal: str
    expiresAt: str
    settledSignalId: NotRequired[str | None]
    endedAt: NotRequired[str | None]
    createdAt: str


class Checkout(TypedDict):
    id: str
    url: str
    status: str
    products: list[JsonObject]
    successUrl: str
    customerId: NotRequired[str | None]
    externalCustomerId: NotRequired[str | None]
    orderId: NotRequired[str | None]
    createdAt: str
    updatedAt: str
