"""The balance read of one customer in one statement: the customer, its accounts and their rows.

`GET .../credits/balances` is the read an AI product makes before each billable action, so it
is built for latency. One UNION ALL statement finds the live customer (with its test clock time
and whether a renewal is due) and loads the accounts' currencies, grants not yet swept as
expired, active holds and unsettled pending consumption, without the ORM. On PostgreSQL it
runs outside a transaction (see `Store.statement_reads`), so a read costs one round trip, and
its rows still come from one snapshot because they come from one statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Select,
    bindparam,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from tallystick.server.billing.renewals import select_customer_to_read
from tallystick.server.bulk_sql import kind_branch
from tallystick.server.models import (
    CreditAccount,
    CreditCurrency,
    CreditGrant,
    CreditHold,
    Customer,
    PendingConsumption,
    TestClock,
)


@dataclass(slots=True)
class BalanceCurrency:
    """A credit currency in which the customer has an account."""

    id: str
    name: str
    key: str


@dataclass(slots=True)
class BalanceGrant:
    """A grant as a balance read shows it."""

    id: str
    credits_currency_id: str
    amount: Decimal
    remaining: Decimal
    starts_at: datetime
    expires_at: datetime | None
    expired_at: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    priority: int
    sequence: int
    source: str
    origin_code: str
    unit_value: Decimal | None


@dataclass(slots=True)
class AccountCredits:
    """One account's rows that a balance counts."""

    currency: BalanceCurrency
    grants: list[BalanceGrant]  # not yet swept as expired, whether started or not
    holds: list[tuple[Decimal, datetime]]  # (reserved credits, expires_at) of each active hold
    pending: list[Decimal]  # remainder of each unsettled pending consumption


@dataclass(slots=True)
class CustomerCredits:
    """A live customer's accounts, by currency name, with what decides the instant to read at."""

    customer_id: str
    clock_time: datetime | None  # the customer's test clock time, None without a test clock
    renewal_due: bool  # an order of the customer has a billing event due at the read's now
    accounts: list[AccountCredits]


# Columns of the UNION ALL. Each branch fills the columns of its kind of row and selects NULL
# for the rest. The NULLs are cast: PostgreSQL resolves the types of a chain of UNIONs one pair
# at a time, and two untyped NULLs would resolve to text. The values are coerced to the model
# column's type, so that credits and times are converted as that column converts them.
_COLUMN_TYPES: dict[str, Any] = {
    "customer_id": Customer.id.type,
    "clock_time": TestClock.frozen_time.type,
    "renewal_due": Boolean(),
    "currency_id": CreditGrant.credits_currency_id.type,
    "name": CreditCurrency.name.type,
    "key": CreditCurrency.key.type,
    "id": CreditGrant.id.type,
    "amount": CreditGrant.amount.type,
    "remaining": CreditGrant.remaining.type,
    "starts_at": CreditGrant.starts_at.type,
    "expires_at": CreditGrant.expires_at.type,
    "expired_at": CreditGrant.expired_at.type,
    "period_start": CreditGrant.period_start.type,
    "period_end": CreditGrant.period_end.type,
    "priority": CreditGrant.priority.type,
    "sequence": CreditGrant.sequence.type,
    "source": CreditGrant.source.type,
    "origin_code": CreditGrant.origin_code.type,
    "unit_value": CreditGrant.unit_value.type,
}
_GRANT_COLUMNS = (
    "id", "amount", "remaining", "starts_at", "expires_at", "expired_at", "period_start", "period_end",
    "priority", "sequence", "source", "origin_code", "unit_value",
)  # fmt: skip


def _branch(kind: str, columns: dict[str, Any]) -> Select[Any]:
    return kind_branch(kind, _COLUMN_TYPES, columns)


def _build(match: Any) -> Any:
    customer = select_customer_to_read(match, Customer.id.label("id")).cte("customer")
    customer_id = select(customer.c.id).scalar_subquery()
    organization_id = bindparam("organization_id")

    def of_customer(model: Any) -> tuple[Any, ...]:
        return (model.organization_id == organization_id, model.customer_id == customer_id)

    return union_all(
        _branch(
            "customer",
            {"customer_id": customer.c.id, "clock_time": customer.c.clock_time, "renewal_due": customer.c.renewal_due},
        ),
        _branch("currency", {"currency_id": CreditCurrency.id, "name": CreditCurrency.name, "key": CreditCurrency.key})
        .join_from(CreditAccount, CreditCurrency, CreditAccount.credits_currency_id == CreditCurrency.id)
        .where(*of_customer(CreditAccount), CreditCurrency.organization_id == organization_id),
        _branch(
            "grant",
            {"currency_id": CreditGrant.credits_currency_id} | {name: getattr(CreditGrant, name) for name in _GRANT_COLUMNS},
        ).where(*of_customer(CreditGrant), CreditGrant.expired_at.is_(None)),
        _branch(
            "hold",
            {"currency_id": CreditHold.credits_currency_id, "amount": CreditHold.reserved, "expires_at": CreditHold.expires_at},
        ).where(*of_customer(CreditHold), CreditHold.status == "active"),
        _branch(
            "pending",
            {"currency_id": PendingConsumption.credits_currency_id, "remaining": PendingConsumption.remaining},
        ).where(*of_customer(PendingConsumption), PendingConsumption.settled_at.is_(None)),
    )


# Built once, with bound parameters, since every balance read runs one.
_BY_ID = _build(Customer.id == bindparam("customer_id"))
_BY_EXTERNAL_ID = _build(Customer.external_id == bindparam("external_id"))


def load_customer_credits(
    session: Session,
    organization_id: str,
    now: datetime,
    *,
    customer_id: str | None = None,
    external_id: str | None = None,
) -> CustomerCredits | None:
    """Load a live customer's accounts by id or external id; None when no live customer matches.

    `now` is the instant at which `renewal_due` is judged for a customer without a test clock.
    """
    parameters: dict[str, Any] = {"organization_id": organization_id, "now": now}
    if external_id is not None:
        statement, parameters["external_id"] = _BY_EXTERNAL_ID, external_id
    else:
        statement, parameters["customer_id"] = _BY_ID, customer_id
    found: CustomerCredits | None = None
    accounts: dict[str, AccountCredits] = {}
    grants, holds, pending = [], [], []
    for row in session.execute(statement, parameters):
        if row.kind == "customer":
            found = CustomerCredits(row.customer_id, row.clock_time, bool(row.renewal_due), [])
        elif row.kind == "currency":
            accounts[row.currency_id] = AccountCredits(BalanceCurrency(row.currency_id, row.name, row.key), [], [], [])
        elif row.kind == "grant":
            grants.append(row)
        elif row.kind == "hold":
            holds.append(row)
        else:
            pending.append(row)
    if found is None:
        return None

    # Every grant, hold and pending consumption is written under its account's lock, which
    # creates the account, so each of these rows finds its currency.
    for row in grants:
        accounts[row.currency_id].grants.append(
            BalanceGrant(row.id, row.currency_id, *(getattr(row, name) for name in _GRANT_COLUMNS[1:]))
        )
    for row in holds:
        accounts[row.currency_id].holds.append((row.amount, row.expires_at))
    for row in pending:
        accounts[row.currency_id].pending.append(row.remaining)
    found.accounts = sorted(accounts.values(), key=lambda account: (account.currency.name, account.currency.id))
    return found
