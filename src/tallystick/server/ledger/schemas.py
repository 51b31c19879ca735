"""Wire models of credit balances, grants, transactions, pending consumption and holds.

Where the Paid wire format demands a JSON number for credits (balances), a `...Decimal` string
sibling carries the exact value, since a float cannot represent every nine-place decimal.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StrictInt

from tallystick.server.models.cost import COST_PLACES
from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel, check_utc_range

# A date-time with an offset whose UTC form exists, so that it can be stored.
StorableAwareDatetime = Annotated[AwareDatetime, AfterValidator(check_utc_range)]

# Grants through the API take at most 6 decimal places, as the Paid API documents. The ledger
# itself keeps 9, so that fractional credit costs of signals stay exact.
GRANT_AMOUNT_PLACES = 6
# Decimal places of a grant's USD value of one credit: those of cost amounts, so that a
# signal's revenue and cost are exact to the same unit.
UNIT_VALUE_PLACES = COST_PLACES
# Largest USD value of one credit of a grant, the cap of a price override's prices too. The
# column would hold up to about 9.2 million USD.
MAX_UNIT_VALUE = Decimal(1_000_000)
# Transaction types of the Paid wire format, plus tallystick's expiry and adjustment entries.
TRANSACTION_TYPES = ("grant", "spend", "pendingGrant", "expiry", "adjustment")


def credits_text(value: Decimal) -> str:
    """Render credits as a plain decimal string without exponent or trailing zeros ("12.5")."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def unit_value_text(value: Decimal | None) -> str | None:
    """Render a grant's USD value of one credit with the twelve places of costs ("0.050000000000")."""
    if value is None:
        return None
    # Unit values are checked to have at most twelve places, so this only pads.
    return format(value.quantize(Decimal(1).scaleb(-UNIT_VALUE_PLACES)), "f")


# Requests


class GrantCreate(RequestModel):
    credit_currency_key: str = Field(
        min_length=1, max_length=64, description="Key of an active credit currency, such as chat_credits."
    )
    amount: Decimal = Field(
        description="Credits to grant (not money): greater than 0, at most 6 decimal places."
    )
    starts_at: StorableAwareDatetime | None = Field(
        default=None,
        description="When the credits become spendable; not in the future. Defaults to now.",
    )
    expires_at: StorableAwareDatetime | None = Field(
        default=None, description="When the credits expire; in the future. Null: never."
    )
    priority: StrictInt | None = Field(
        default=None,
        ge=-1_000_000,
        le=1_000_000,
        description="Not in the Paid API. Draw order among grants: lower is drawn first. Default 0.",
    )
    description: str | None = Field(default=None, max_length=500, description="Not in the Paid API.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Not in the Paid API. A retry with the same key returns the grant that the key "
        "created, with created false, instead of granting again. Unique per organization.",
    )
    unit_value: Decimal | None = Field(
        default=None,
        description="Not in the Paid API. USD value of one credit of this grant, which margins count "
        f"as the revenue of each credit a signal draws from it: a decimal string or number from 0 to "
        f"{MAX_UNIT_VALUE} with at most {UNIT_VALUE_PLACES} decimal places. Absent or null: 0.",
    )


class HoldCreate(RequestModel):
    credit_currency_key: str = Field(min_length=1, max_length=64, description="Key of the credit currency.")
    amount: Decimal = Field(description="Credits to reserve: greater than 0, at most 9 decimal places.")
    ttl_seconds: StrictInt | None = Field(
        default=None,
        description="Seconds until the hold expires by itself, 1 to 86400. Defaults to 300.",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Not in the Paid API. A retry with the same key returns the hold that the key "
        "created instead of reserving again. Unique per organization. A denied request does not "
        "use its key up.",
    )


# Grants


class CustomerRef(ResponseModel):
    id: str
    external_id: str | None = None


class CurrencyRef(ResponseModel):
    key: str
    name: str


class GrantResultOut(ResponseModel):
    id: str
    amount: int = Field(description="Whole credits granted, truncated toward zero.")
    amount_decimal: str = Field(description="Exact credits granted, as a decimal string.")
    starts_at: datetime
    expires_at: datetime | None = None
    status: str
    priority: int
    source: str
    unit_value: str | None = Field(
        default=None,
        description="Not in the Paid API. USD value of one credit that the grant was given, with "
        "twelve decimal places; null when it was given none.",
    )


class GrantResponseOut(ResponseModel):
    created: bool
    customer: CustomerRef
    credit_currency: CurrencyRef
    grant: GrantResultOut
    created_at: datetime


# Balances


class CreditGrantOut(ResponseModel):
    id: str
    available: float
    used: float
    total: float
    available_decimal: str
    used_decimal: str
    total_decimal: str
    rollover_amount: float | None = None
    period_start: datetime
    period_end: datetime | None = None
    rollover_end_date: datetime | None = None
    expires_at: datetime | None = None
    is_in_rollover_window: bool = False
    starts_at: datetime
    priority: int
    source: str
    origin_code: str
    unit_value: str | None = Field(
        default=None,
        description="USD value of one credit that the grant was given, with twelve decimal places; "
        "null when it was given none.",
    )


class CreditBalanceOut(ResponseModel):
    credits_currency_id: str
    currency_name: str
    currency_key: str
    available: float = Field(description="Credits available now, as a JSON number.")
    used: float
    total: float
    available_decimal: str = Field(description="Exact `available`, as a decimal string.")
    used_decimal: str
    total_decimal: str
    held_decimal: str = Field(description="Credits reserved by active holds.")
    pending_decimal: str = Field(description="Unsettled pending consumption.")
    period_start: datetime | None = None
    period_end: datetime | None = None
    rollover_end_date: datetime | None = None
    recipient: str = "organization"
    grants: list[CreditGrantOut]


class CreditBalanceListOut(ResponseModel):
    data: list[CreditBalanceOut]


# Transactions


class ProductRef(ResponseModel):
    id: str
    external_id: str | None = None
    name: str


class CreditTransactionOut(ResponseModel):
    id: str
    customer: CustomerRef
    credit_currency: CurrencyRef
    credits_currency_id: str
    type: str = Field(description="grant, spend, expiry or adjustment.")
    amount: str = Field(description="Signed credits as a decimal string: positive adds, negative removes.")
    origin_code: str
    event_name: str | None = None
    signal_id: str | None = None
    order_id: str | None = None
    product: ProductRef | None = None
    grant_id: str
    hold_id: str | None = None
    pending_consumption_id: str | None = None
    effective_at: datetime
    created_at: datetime


class CreditTransactionListOut(ResponseModel):
    data: list[CreditTransactionOut]
    pagination: PaginationOut


# Pending consumption


class PendingConsumptionOut(ResponseModel):
    id: str
    credits: int = Field(description="Unsettled credits, truncated toward zero.")
    credits_decimal: str = Field(description="Exact unsettled credits, as a decimal string.")
    amount_decimal: str = Field(description="Credits that were uncovered when recorded.")
    credit_currency: CurrencyRef | None = None
    credits_currency_id: str
    order_id: str | None = None
    event_name: str | None = None
    signal_id: str | None = None
    product_id: str | None = None
    occurred_at: datetime
    recorded_at: datetime


class PendingConsumptionListOut(ResponseModel):
    data: list[PendingConsumptionOut]
    pagination: PaginationOut


# Holds


class HoldPlacedOut(ResponseModel):
    allowed: bool = Field(description="Whether the credits were reserved.")
    id: str | None = Field(
        default=None, description="The hold's id, as `GET /credits/holds/{id}` returns it, or null when denied."
    )
    hold_id: str | None = Field(
        default=None, description="The same value as `id`, kept for clients written before `id` was added."
    )
    available: float = Field(description="Credits available after the hold (or now, when denied).")
    available_decimal: str
    amount_decimal: str = Field(description="Credits requested.")
    expires_at: datetime | None = Field(default=None, description="When the hold ends by itself.")


class HoldOut(ResponseModel):
    id: str
    customer_id: str
    credits_currency_id: str
    status: str = Field(description="active, settled, released or expired.")
    amount_decimal: str = Field(description="Credits requested.")
    reserved_decimal: str = Field(description="Credits reserved while active.")
    expires_at: datetime
    settled_signal_id: str | None = None
    ended_at: datetime | None = None
    created_at: datetime
