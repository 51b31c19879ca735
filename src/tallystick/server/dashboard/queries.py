"""SQL reads of the dashboard and the portal that no domain package offers: totals over a
period, counts per day and every account's balance at once.

Every function is scoped to one organization. Amounts stay exact: credits and costs are
Decimals, money is integer minor units.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, Select, cast, func, or_, select
from sqlalchemy.orm import Session

from tallystick.server.models import (
    ApiKey,
    CreditCurrency,
    CreditGrant,
    CreditHold,
    Customer,
    LedgerEntry,
    Payment,
    PendingConsumption,
    Plan,
    Product,
    Signal,
)
from tallystick.server.models.cost import CostRecord

ZERO = Decimal(0)


def utc_day(session: Session, column: Any) -> Any:
    """Return the SQL expression of the UTC date of a timestamp column."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    # SQLite stores UTC timestamps as text; date() reads their date part.
    return func.date(column)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def signals_per_day(
    session: Session, organization_id: str, start: datetime, end: datetime, *, customer_id: str | None = None
) -> dict[date, Decimal]:
    """Count signals per UTC day of their occurrence, for start <= occurred_at < end."""
    day = utc_day(session, Signal.occurred_at)
    statement = select(day, func.count()).where(
        Signal.organization_id == organization_id, Signal.occurred_at >= start, Signal.occurred_at < end
    )
    if customer_id is not None:
        statement = statement.where(Signal.customer_id == customer_id)
    return {_as_date(row[0]): Decimal(row[1]) for row in session.execute(statement.group_by(day))}


def credits_used_per_day(
    session: Session, organization_id: str, customer_id: str, start: datetime, end: datetime
) -> dict[str, dict[date, Decimal]]:
    """Return, per credit currency id, the credits the customer's signals used per UTC day.

    Used credits are those drawn from grants plus those left as pending consumption.
    """
    day = utc_day(session, Signal.occurred_at)
    statement = (
        select(
            Signal.credit_currency_id,
            day,
            func.sum(Signal.credits_consumed),
            func.sum(Signal.credits_pending),
        )
        .where(
            Signal.organization_id == organization_id,
            Signal.customer_id == customer_id,
            Signal.credit_currency_id.is_not(None),
            Signal.occurred_at >= start,
            Signal.occurred_at < end,
        )
        .group_by(Signal.credit_currency_id, day)
    )
    used: dict[str, dict[date, Decimal]] = defaultdict(dict)
    for currency_id, raw_day, consumed, pending in session.execute(statement):
        used[currency_id][_as_date(raw_day)] = _decimal_sum(consumed) + _decimal_sum(pending)
    return dict(used)


def _decimal_sum(raw: Decimal | None) -> Decimal:
    # SQL sums of a Credits() column come back through its type, as Decimals; NULL means no rows.
    return ZERO if raw is None else Decimal(raw)


def revenue_by_currency(session: Session, organization_id: str, start: datetime, end: datetime) -> dict[str, int]:
    """Sum succeeded payments received in [start, end), in minor units per ISO currency code."""
    rows = session.execute(
        select(Payment.currency, func.sum(Payment.amount))
        .where(
            Payment.organization_id == organization_id,
            Payment.status == "succeeded",
            Payment.paid_at >= start,
            Payment.paid_at < end,
        )
        .group_by(Payment.currency)
    )
    return {currency: int(total or 0) for currency, total in rows}


@dataclass(frozen=True)
class CostTotal:
    amount: Decimal  # USD, priced records only
    priced_records: int
    unpriced_records: int


def ai_cost(session: Session, organization_id: str, start: datetime, end: datetime) -> CostTotal:
    """Sum the cost records of AI calls started in [start, end)."""
    priced = CostRecord.cost_status == "priced"
    row = session.execute(
        select(
            func.sum(CostRecord.cost_amount),
            func.count().filter(priced),
            func.count().filter(~priced),
        ).where(
            CostRecord.organization_id == organization_id,
            CostRecord.started_at >= start,
            CostRecord.started_at < end,
        )
    ).one()
    return CostTotal(amount=_decimal_sum(row[0]), priced_records=int(row[1] or 0), unpriced_records=int(row[2] or 0))


def credits_moved(
    session: Session, organization_id: str, start: datetime, end: datetime
) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Return (granted, consumed) credits per currency id, by ledger entries written in [start, end).

    Consumed is the credits drawn by spend entries, shown as a positive number.
    """
    rows = session.execute(
        select(LedgerEntry.credits_currency_id, LedgerEntry.entry_type, func.sum(LedgerEntry.amount))
        .where(
            LedgerEntry.organization_id == organization_id,
            LedgerEntry.entry_type.in_(("grant", "spend")),
            LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end,
        )
        .group_by(LedgerEntry.credits_currency_id, LedgerEntry.entry_type)
    )
    granted: dict[str, Decimal] = {}
    consumed: dict[str, Decimal] = {}
    for currency_id, entry_type, total in rows:
        amount = _decimal_sum(total)
        if entry_type == "grant":
            granted[currency_id] = amount
        else:
            consumed[currency_id] = -amount
    return granted, consumed


@dataclass(frozen=True)
class AccountBalance:
    """One customer's credits in one currency, summed over every grant, hold and pending row."""

    customer_id: str
    currency_id: str
    granted: Decimal  # amounts of the active grants
    remaining: Decimal  # what the active grants have left
    held: Decimal
    pending: Decimal

    @property
    def available(self) -> Decimal:
        return max(ZERO, self.remaining - self.held - self.pending)


def account_balances(
    session: Session, organization_id: str, at: datetime, *, customer_ids: list[str] | None = None
) -> list[AccountBalance]:
    """Return every account's balance at `at`, from three grouped sums.

    This follows the ledger's rule: available = remaining credits of active grants, minus
    credits reserved by active holds, minus unsettled pending consumption. Like a ledger read, it counts a grant that has reached its
    expiry as gone even before a write records the expiry.
    """
    def scoped(statement: Select[Any], model: Any) -> Select[Any]:
        statement = statement.where(model.organization_id == organization_id)
        if customer_ids is not None:
            statement = statement.where(model.customer_id.in_(customer_ids))
        return statement.group_by(model.customer_id, model.credits_currency_id)

    keys = (CreditGrant.customer_id, CreditGrant.credits_currency_id)
    grants = session.execute(
        scoped(
            select(*keys, func.sum(CreditGrant.amount), func.sum(CreditGrant.remaining)).where(
                CreditGrant.expired_at.is_(None),
                CreditGrant.starts_at <= at,
                or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > at),
            ),
            CreditGrant,
        )
    )
    holds = session.execute(
        scoped(
            select(CreditHold.customer_id, CreditHold.credits_currency_id, func.sum(CreditHold.reserved)).where(
                CreditHold.status == "active", CreditHold.expires_at > at
            ),
            CreditHold,
        )
    )
    pending = session.execute(
        scoped(
            select(
                PendingConsumption.customer_id,
                PendingConsumption.credits_currency_id,
                func.sum(PendingConsumption.remaining),
            ).where(PendingConsumption.settled_at.is_(None)),
            PendingConsumption,
        )
    )

    sums: dict[tuple[str, str], dict[str, Decimal]] = defaultdict(
        lambda: {"granted": ZERO, "remaining": ZERO, "held": ZERO, "pending": ZERO}
    )
    for customer_id, currency_id, granted, remaining in grants:
        sums[(customer_id, currency_id)].update(granted=_decimal_sum(granted), remaining=_decimal_sum(remaining))
    for customer_id, currency_id, held in holds:
        sums[(customer_id, currency_id)]["held"] = _decimal_sum(held)
    for customer_id, currency_id, amount in pending:
        sums[(customer_id, currency_id)]["pending"] = _decimal_sum(amount)
    return [
        AccountBalance(customer_id=customer_id, currency_id=currency_id, **values)
        for (customer_id, currency_id), values in sums.items()
    ]


def credits_used_since(session: Session, organization_id: str, since: datetime) -> dict[tuple[str, str], Decimal]:
    """Return the credits each (customer id, currency id) used by signals since `since`."""
    rows = session.execute(
        select(
            Signal.customer_id,
            Signal.credit_currency_id,
            func.sum(Signal.credits_consumed),
            func.sum(Signal.credits_pending),
        )
        .where(
            Signal.organization_id == organization_id,
            Signal.credit_currency_id.is_not(None),
            Signal.occurred_at >= since,
        )
        .group_by(Signal.customer_id, Signal.credit_currency_id)
    )
    return {
        (customer_id, currency_id): _decimal_sum(consumed) + _decimal_sum(pending)
        for customer_id, currency_id, consumed, pending in rows
    }


def currencies_by_id(session: Session, organization_id: str) -> dict[str, CreditCurrency]:
    rows = session.scalars(
        select(CreditCurrency)
        .where(CreditCurrency.organization_id == organization_id)
        .order_by(CreditCurrency.created_at, CreditCurrency.id)
    )
    return {row.id: row for row in rows}


def customers_by_id(session: Session, organization_id: str, ids: set[str]) -> dict[str, Customer]:
    if not ids:
        return {}
    rows = session.scalars(select(Customer).where(Customer.organization_id == organization_id, Customer.id.in_(ids)))
    return {row.id: row for row in rows}


def customer_search(organization_id: str, text: str | None) -> Select[tuple[Customer]]:
    """Select live customers, newest first, whose name, email, id or external id contains `text`."""
    statement = select(Customer).where(Customer.organization_id == organization_id, Customer.deleted_at.is_(None))
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        statement = statement.where(
            or_(
                Customer.name.ilike(pattern, escape="\\"),
                Customer.email.ilike(pattern, escape="\\"),
                Customer.external_id.ilike(pattern, escape="\\"),
                Customer.id == text,
            )
        )
    return statement.order_by(Customer.created_at.desc(), Customer.id.desc())


def organization_api_keys(session: Session, organization_id: str) -> list[ApiKey]:
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.organization_id == organization_id).order_by(ApiKey.created_at.desc())
        )
    )


def plan_names(session: Session, organization_id: str, ids: set[str]) -> dict[str, str | None]:
    if not ids:
        return {}
    rows = session.execute(select(Plan.id, Plan.name).where(Plan.organization_id == organization_id, Plan.id.in_(ids)))
    return {plan_id: name for plan_id, name in rows}


def product_names(session: Session, organization_id: str, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(Product.id, Product.name).where(Product.organization_id == organization_id, Product.id.in_(ids))
    )
    return {product_id: name for product_id, name in rows}


def find_api_key(session: Session, organization_id: str, key_id: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id == key_id))
