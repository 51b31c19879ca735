"""SQL of the ledger: account locks, grant/hold/pending loading and list statements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    Select,
    bindparam,
    literal_column,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallystick.server.bulk_sql import for_each_dialect, in_list, kind_branch
from tallystick.server.customers.service import live_customer_id_by_external_id
from tallystick.server.models import (
    CreditAccount,
    CreditCurrency,
    CreditGrant,
    CreditHold,
    Customer,
    LedgerEntry,
    LowBalanceThreshold,
    PendingConsumption,
    TestClock,
    TestClockCustomer,
)


# The statements of the busiest queries are built once, with bound parameters for their
# values. Building a select and its cache key on every call took about as long as running it.
def _account_where(model):  # type: ignore[no-untyped-def]
    return (
        model.organization_id == bindparam("organization_id"),
        model.customer_id == bindparam("customer_id"),
        model.credits_currency_id == bindparam("currency_id"),
    )


def _account_parameters(organization_id: str, customer_id: str, currency_id: str) -> dict[str, str]:
    return {"organization_id": organization_id, "customer_id": customer_id, "currency_id": currency_id}


def _accounts_where(model, dialect: str):  # type: ignore[no-untyped-def]
    # Customers and currencies filtered apart: the index on (organization, customer, currency)
    # serves both, and _by_account drops the pairs that are not among the keys.
    return (
        model.organization_id == bindparam("organization_id"),
        in_list(model.customer_id, "customer_ids", dialect),
        in_list(model.credits_currency_id, "currency_ids", dialect),
    )


def _accounts_parameters(organization_id: str, keys: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "customer_ids": sorted({customer_id for customer_id, _ in keys}),
        "currency_ids": sorted({currency_id for _, currency_id in keys}),
    }


@dataclass(slots=True)
class AccountRow:
    """A locked `credit_accounts` row, read without the ORM.

    A batch of 1,000 signals can lock 1,000 accounts, and its write only reads and moves on
    their last sequence, which `accounts.write_rows` stores with one UPDATE. The ORM objects
    that this replaced cost a batch more CPU than the locking query itself.
    """

    organization_id: str
    customer_id: str
    credits_currency_id: str
    last_sequence: int


@dataclass(slots=True)
class GrantRow:
    """An open grant of a locked account, read without the ORM.

    A batch over 1,000 customers loads 1,000 grants. As ORM objects they took a fifth of the
    batch's time in a py-spy profile, as rows half that. The write changes `remaining` and,
    for a grant it sweeps, `expired_at`, and `accounts.write_rows` stores both. Grants that
    the write creates stay ORM objects.
    """

    id: str
    customer_id: str
    credits_currency_id: str
    remaining: Decimal
    starts_at: datetime
    expires_at: datetime | None
    priority: int
    sequence: int
    order_id: str | None
    expired_at: datetime | None


@dataclass(slots=True)
class HoldRow:
    """An active hold of a locked account, read without the ORM.

    A write ends holds (expired, settled or released) and cuts their reserved credits, and
    `accounts.write_rows` stores those changes with one statement. A batch over 100 accounts
    took 6.7 ms of CPU. When each account had an expired hold to sweep, it took 10.8 ms with
    the holds as ORM objects and 8.4 ms with them as rows. Holds that the write creates are ORM objects inserted by
    `write_rows`.
    """

    id: str
    customer_id: str
    credits_currency_id: str
    reserved: Decimal
    expires_at: datetime
    created_at: datetime
    status: str = "active"
    ended_at: datetime | None = None
    settled_signal_id: str | None = None


_GRANT_COLUMNS = (
    CreditGrant.id,
    CreditGrant.customer_id,
    CreditGrant.credits_currency_id,
    CreditGrant.remaining,
    CreditGrant.starts_at,
    CreditGrant.expires_at,
    CreditGrant.priority,
    CreditGrant.sequence,
    CreditGrant.order_id,
    CreditGrant.expired_at,
)
_ACCOUNT_COLUMNS = (
    CreditAccount.organization_id,
    CreditAccount.customer_id,
    CreditAccount.credits_currency_id,
    CreditAccount.last_sequence,
)
_LOCK_ACCOUNT = select(*_ACCOUNT_COLUMNS).where(*_account_where(CreditAccount)).with_for_update()
_OPEN_GRANTS = (
    select(CreditGrant)
    .where(*_account_where(CreditGrant), CreditGrant.expired_at.is_(None))
    .order_by(CreditGrant.sequence)
    .execution_options(populate_existing=True)
)
_OPEN_GRANTS_WITH_CREDITS = _OPEN_GRANTS.where(CreditGrant.remaining > 0)
_ACTIVE_HOLDS = (
    select(CreditHold)
    .where(*_account_where(CreditHold), CreditHold.status == "active")
    .order_by(CreditHold.created_at, CreditHold.id)
    .execution_options(populate_existing=True)
)
_UNSETTLED_PENDING = (
    select(PendingConsumption)
    .where(*_account_where(PendingConsumption), PendingConsumption.settled_at.is_(None))
    .order_by(PendingConsumption.sequence)
    .execution_options(populate_existing=True)
)
_OPEN_GRANTS_OF = for_each_dialect(
    lambda dialect: select(*_GRANT_COLUMNS)
    .where(*_accounts_where(CreditGrant, dialect), CreditGrant.expired_at.is_(None), CreditGrant.remaining > 0)
    .order_by(CreditGrant.sequence)
)


def _one_account_branch(kind: str, columns: dict[str, Any]) -> Select[Any]:
    return kind_branch(kind, _ONE_ACCOUNT_COLUMNS, columns)


# Columns of `_ONE_ACCOUNT_ROWS`. `credits` is a grant's remaining or a hold's reserved credits,
# and `time` a grant's start or a hold's creation.
_ONE_ACCOUNT_COLUMNS: dict[str, Any] = {
    "id": CreditGrant.id.type,
    "customer_id": CreditGrant.customer_id.type,
    "credits_currency_id": CreditGrant.credits_currency_id.type,
    "credits": CreditGrant.remaining.type,
    "time": CreditGrant.starts_at.type,
    "expires_at": CreditGrant.expires_at.type,
    "priority": CreditGrant.priority.type,
    "sequence": CreditGrant.sequence.type,
    "order_id": CreditGrant.order_id.type,
    "expired_at": CreditGrant.expired_at.type,
    "has_pending": Boolean(),
}
# The open grants and the active holds of one account, grants by sequence and holds oldest
# first. Each grant row carries whether the account has unsettled pending consumption. A write
# of one account sends it after the account lock, so the rows and the flag reflect what the
# account's last writer committed.
_ONE_ACCOUNT_ROWS = union_all(
    _one_account_branch(
        "grant",
        {
            "id": CreditGrant.id,
            "customer_id": CreditGrant.customer_id,
            "credits_currency_id": CreditGrant.credits_currency_id,
            "credits": CreditGrant.remaining,
            "time": CreditGrant.starts_at,
            "expires_at": CreditGrant.expires_at,
            "priority": CreditGrant.priority,
            "sequence": CreditGrant.sequence,
            "order_id": CreditGrant.order_id,
            "expired_at": CreditGrant.expired_at,
            "has_pending": select(PendingConsumption.id)
            .where(*_account_where(PendingConsumption), PendingConsumption.settled_at.is_(None))
            .exists(),
        },
    ).where(*_account_where(CreditGrant), CreditGrant.expired_at.is_(None), CreditGrant.remaining > 0),
    _one_account_branch(
        "hold",
        {
            "id": CreditHold.id,
            "customer_id": CreditHold.customer_id,
            "credits_currency_id": CreditHold.credits_currency_id,
            "credits": CreditHold.reserved,
            "time": CreditHold.created_at,
            "expires_at": CreditHold.expires_at,
        },
    ).where(*_account_where(CreditHold), CreditHold.status == "active"),
).order_by(literal_column("kind"), literal_column("sequence"), literal_column("time"), literal_column("id"))
_ACTIVE_HOLDS_OF = for_each_dialect(
    lambda dialect: select(
        CreditHold.id,
        CreditHold.customer_id,
        CreditHold.credits_currency_id,
        CreditHold.reserved,
        CreditHold.expires_at,
        CreditHold.created_at,
    )
    .where(*_accounts_where(CreditHold, dialect), CreditHold.status == "active")
    .order_by(CreditHold.created_at, CreditHold.id)
)
_UNSETTLED_PENDING_OF = for_each_dialect(
    lambda dialect: select(PendingConsumption)
    .where(*_accounts_where(PendingConsumption, dialect), PendingConsumption.settled_at.is_(None))
    .order_by(PendingConsumption.sequence)
    .execution_options(populate_existing=True)
)
_FIND_HOLD = (
    select(CreditHold)
    .where(CreditHold.organization_id == bindparam("organization_id"), CreditHold.id == bindparam("hold_id"))
    .execution_options(populate_existing=True)
)
_FIND_HOLD_BY_KEY = select(CreditHold).where(
    CreditHold.organization_id == bindparam("organization_id"),
    CreditHold.idempotency_key == bindparam("idempotency_key"),
)
_FIND_HOLDS = (
    select(CreditHold)
    .where(
        CreditHold.organization_id == bindparam("organization_id"),
        CreditHold.id.in_(bindparam("hold_ids", expanding=True)),
    )
    .execution_options(populate_existing=True)
)
_LOW_BALANCE_THRESHOLDS = select(LowBalanceThreshold.credits_currency_id, LowBalanceThreshold.threshold).where(
    LowBalanceThreshold.organization_id == bindparam("organization_id"),
    LowBalanceThreshold.credits_currency_id.in_(bindparam("currency_ids", expanding=True)),
)
_CUSTOMER_ACCOUNTS = (
    select(CreditCurrency)
    .join(CreditAccount, CreditAccount.credits_currency_id == CreditCurrency.id)
    .where(
        CreditAccount.organization_id == bindparam("organization_id"),
        CreditAccount.customer_id == bindparam("customer_id"),
        CreditCurrency.organization_id == bindparam("organization_id"),
    )
    .order_by(CreditCurrency.name, CreditCurrency.id)
)


def lock_account(
    session: Session, organization_id: str, customer_id: str, currency_id: str
) -> AccountRow:
    """Lock the account row until the transaction ends, creating it first if missing.

    On PostgreSQL, `SELECT ... FOR UPDATE` queues every other writer of this account behind this
    transaction, and `INSERT ... ON CONFLICT DO NOTHING` makes creation safe under concurrency:
    a second inserter waits for the first to commit, then inserts nothing and locks that row.
    SQLite renders no FOR UPDATE, but its writers already hold the database write lock, since
    write sessions begin with BEGIN IMMEDIATE.
    """
    parameters = _account_parameters(organization_id, customer_id, currency_id)
    row = session.execute(_LOCK_ACCOUNT, parameters).one_or_none()
    if row is not None:
        return AccountRow(*row)

    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(CreditAccount)
        .values(
            organization_id=organization_id,
            customer_id=customer_id,
            credits_currency_id=currency_id,
            last_sequence=0,
        )
        .on_conflict_do_nothing()
    )
    return AccountRow(*session.execute(_LOCK_ACCOUNT, parameters).one())


def lock_account_rows(
    session: Session, organization_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], AccountRow]:
    """Lock the (customer id, currency id) accounts, creating missing ones; return them by key.

    `keys` must be sorted: existing rows are locked in that order by one SELECT ... ORDER BY
    ... FOR UPDATE (PostgreSQL locks rows as the sorted scan returns them), then missing rows
    are inserted in that order and locked, so concurrent batches wait for each other instead
    of deadlocking. A deadlock that remains (two batches creating the same new accounts while
    holding other rows) is reported by PostgreSQL and the signal routes retry the batch.
    """
    if len(keys) == 1:
        customer_id, currency_id = keys[0]
        return {keys[0]: lock_account(session, organization_id, customer_id, currency_id)}

    found = _select_locked(session, organization_id, keys)
    missing = [key for key in keys if key not in found]
    if missing:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(CreditAccount).on_conflict_do_nothing(),
            [
                {
                    "organization_id": organization_id,
                    "customer_id": customer_id,
                    "credits_currency_id": currency_id,
                    "last_sequence": 0,
                }
                for customer_id, currency_id in missing
            ],
        )
        found.update(_select_locked(session, organization_id, missing))
    return found


def _select_locked(
    session: Session, organization_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], AccountRow]:
    if session.get_bind().dialect.name == "postgresql":
        # The keys travel as one JSON parameter and are joined, so each is one index probe;
        # a row-value IN list of a thousand pairs made PostgreSQL scan the table.
        parameters = {
            "organization_id": organization_id,
            "keys": orjson.dumps([{"customer_id": c, "currency_id": k} for c, k in keys]).decode(),
        }
        rows = session.execute(_POSTGRES_LOCK, parameters)
    else:
        statement = (
            select(*_ACCOUNT_COLUMNS)
            .where(
                CreditAccount.organization_id == organization_id,
                tuple_(CreditAccount.customer_id, CreditAccount.credits_currency_id).in_(keys),
            )
            .order_by(CreditAccount.customer_id, CreditAccount.credits_currency_id)
            .with_for_update()
        )
        rows = session.execute(statement)
    return {(row[1], row[2]): AccountRow(*row) for row in rows}


_POSTGRES_LOCK = text(
    "SELECT credit_accounts.organization_id, credit_accounts.customer_id, "
    "credit_accounts.credits_currency_id, credit_accounts.last_sequence "
    "FROM json_to_recordset(CAST(:keys AS json)) AS batch(customer_id text, currency_id text) "
    "JOIN credit_accounts ON credit_accounts.organization_id = :organization_id "
    "AND credit_accounts.customer_id = batch.customer_id AND credit_accounts.credits_currency_id = batch.currency_id "
    "ORDER BY credit_accounts.customer_id, credit_accounts.credits_currency_id "
    "FOR UPDATE OF credit_accounts"
)


def _by_account(rows: Iterable[Any], keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Any]]:
    """Group rows by (customer id, currency id), keeping only the accounts of `keys`."""
    wanted = set(keys)
    grouped: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        key = (row.customer_id, row.credits_currency_id)
        if key in wanted:
            grouped.setdefault(key, []).append(row)
    return grouped


def open_grants_of(
    session: Session, organization_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[GrantRow]]:
    """Load the accounts' grants that have credits left and are not swept as expired."""
    statement = _OPEN_GRANTS_OF[session.get_bind().dialect.name]
    rows = session.execute(statement, _accounts_parameters(organization_id, keys))
    return _by_account((GrantRow(*row) for row in rows), keys)


def one_account_rows(
    session: Session, organization_id: str, key: tuple[str, str]
) -> tuple[list[GrantRow], list[HoldRow], bool | None]:
    """Load one account's open grants and active holds in one statement, and whether it has
    unsettled pending consumption: None when it has no open grant, since the flag rides on grant
    rows.

    A write settles pending consumption only with free credits, so an account without grants
    never needs its pending rows loaded, and one whose flag is false need not load them either.
    """
    grants: list[GrantRow] = []
    holds: list[HoldRow] = []
    has_pending = None
    for row in session.execute(_ONE_ACCOUNT_ROWS, _account_parameters(organization_id, *key)):
        if row.kind == "grant":
            grants.append(
                GrantRow(
                    row.id, row.customer_id, row.credits_currency_id, row.credits, row.time, row.expires_at,
                    row.priority, row.sequence, row.order_id, row.expired_at,
                )  # fmt: skip
            )
            has_pending = bool(row.has_pending)
        else:
            holds.append(HoldRow(row.id, row.customer_id, row.credits_currency_id, row.credits, row.expires_at, row.time))
    return grants, holds, has_pending


def active_holds_of(
    session: Session, organization_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[HoldRow]]:
    """Load the accounts' holds whose status is still active, oldest first."""
    statement = _ACTIVE_HOLDS_OF[session.get_bind().dialect.name]
    rows = session.execute(statement, _accounts_parameters(organization_id, keys))
    return _by_account((HoldRow(*row) for row in rows), keys)


def unsettled_pending_of(
    session: Session, organization_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[PendingConsumption]]:
    """Load the accounts' unsettled pending consumption in settlement order."""
    statement = _UNSETTLED_PENDING_OF[session.get_bind().dialect.name]
    return _by_account(session.scalars(statement, _accounts_parameters(organization_id, keys)), keys)


def find_holds(session: Session, organization_id: str, hold_ids: Iterable[str]) -> dict[str, CreditHold]:
    ids = sorted(set(hold_ids))
    if not ids:
        return {}
    parameters = {"organization_id": organization_id, "hold_ids": ids}
    return {hold.id: hold for hold in session.scalars(_FIND_HOLDS, parameters)}


def low_balance_thresholds(
    session: Session, organization_id: str, currency_ids: Iterable[str]
) -> dict[str, Decimal | None]:
    """Return each currency's low-balance threshold, None for a currency without one."""
    ids = sorted(set(currency_ids))
    rows = session.execute(_LOW_BALANCE_THRESHOLDS, {"organization_id": organization_id, "currency_ids": ids})
    thresholds: dict[str, Decimal | None] = dict.fromkeys(ids)
    thresholds.update({currency_id: threshold for currency_id, threshold in rows})
    return thresholds




def open_grants(
    session: Session,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    *,
    with_credits_only: bool = False,
) -> list[CreditGrant]:
    """Load the account's grants not yet swept as expired.

    `with_credits_only` leaves out grants whose credits are all used, which writes never need;
    balance reads keep them, since they count in a pool's total and used credits.
    """
    statement = _OPEN_GRANTS_WITH_CREDITS if with_credits_only else _OPEN_GRANTS
    return list(session.scalars(statement, _account_parameters(organization_id, customer_id, currency_id)))


def active_holds(
    session: Session, organization_id: str, customer_id: str, currency_id: str
) -> list[CreditHold]:
    """Load holds whose status is still active, including ones past expires_at not yet swept."""
    return list(session.scalars(_ACTIVE_HOLDS, _account_parameters(organization_id, customer_id, currency_id)))


def unsettled_pending(
    session: Session, organization_id: str, customer_id: str, currency_id: str
) -> list[PendingConsumption]:
    """Load unsettled pending consumption in settlement order: first recorded, first settled."""
    parameters = _account_parameters(organization_id, customer_id, currency_id)
    return list(session.scalars(_UNSETTLED_PENDING, parameters))


@dataclass(slots=True)
class HoldTarget:
    """The live customer and the credit currency that a hold request names, found in one query."""

    customer_id: str
    clock_time: datetime | None  # the customer's test clock time, None without a test clock
    currency_id: str | None  # None when the organization has no currency with the key
    currency_status: str | None
    low_balance_threshold: Decimal | None


def find_hold_target(
    session: Session,
    organization_id: str,
    currency_key: str,
    *,
    customer_id: str | None = None,
    external_id: str | None = None,
) -> HoldTarget | None:
    """Find a live customer by id or external id, with its test clock time, the currency with
    `currency_key` and that currency's low-balance threshold; None when no live customer matches.

    A hold is the write an AI product makes before each expensive action: one statement here
    replaces the four lookups (customer, test clock, currency, threshold) it would otherwise send.
    """
    statements = (_HOLD_TARGET_BY_ID, _HOLD_TARGET_BY_EXTERNAL_ID)
    row = _hold_target_row(session, statements, organization_id, currency_key, customer_id, external_id)
    return HoldTarget(*row) if row is not None else None


def _hold_target_row(
    session: Session,
    statements: tuple[Select[Any], Select[Any]],
    organization_id: str,
    currency_key: str,
    customer_id: str | None,
    external_id: str | None,
) -> Any:
    """Run the by-id or the by-external-id statement of `statements`; return its row or None."""
    parameters = {"organization_id": organization_id, "currency_key": currency_key}
    if external_id is not None:
        statement, parameters["external_id"] = statements[1], external_id
    else:
        statement, parameters["customer_id"] = statements[0], customer_id
    return session.execute(statement, parameters).one_or_none()


def _hold_target(match: Any) -> Select[Any]:
    organization_id = bindparam("organization_id")
    return (
        select(
            Customer.id,
            TestClock.frozen_time,
            CreditCurrency.id,
            CreditCurrency.status,
            LowBalanceThreshold.threshold,
        )
        .select_from(Customer)
        .outerjoin(TestClockCustomer, TestClockCustomer.customer_id == Customer.id)
        .outerjoin(TestClock, TestClock.id == TestClockCustomer.test_clock_id)
        .outerjoin(
            CreditCurrency,
            (CreditCurrency.organization_id == organization_id) & (CreditCurrency.key == bindparam("currency_key")),
        )
        .outerjoin(
            LowBalanceThreshold,
            (LowBalanceThreshold.organization_id == organization_id)
            & (LowBalanceThreshold.credits_currency_id == CreditCurrency.id),
        )
        .where(Customer.organization_id == organization_id, Customer.deleted_at.is_(None), match)
    )


_HOLD_TARGET_BY_ID = _hold_target(Customer.id == bindparam("customer_id"))
_HOLD_TARGET_BY_EXTERNAL_ID = _hold_target(Customer.external_id == bindparam("external_id"))


def lock_hold_target(
    session: Session,
    organization_id: str,
    currency_key: str,
    *,
    customer_id: str | None = None,
    external_id: str | None = None,
) -> tuple[HoldTarget, AccountRow] | None:
    """Find what `find_hold_target` finds and lock the customer's account in that currency.

    None when that account does not exist yet (or the customer or currency does not): the
    caller then finds the target and creates the account as other writes do. The lookup rows
    come from the statement's snapshot, the account row from after its lock, as for
    `lock_account`.
    """
    statements = (_LOCK_HOLD_TARGET_BY_ID, _LOCK_HOLD_TARGET_BY_EXTERNAL_ID)
    row = _hold_target_row(session, statements, organization_id, currency_key, customer_id, external_id)
    if row is None:
        return None
    return HoldTarget(*row[:5]), AccountRow(*row[5:])


def _lock_hold_target(match: Any) -> Select[Any]:
    return (
        _hold_target(match)
        .add_columns(*_ACCOUNT_COLUMNS)
        .join(
            CreditAccount,
            (CreditAccount.organization_id == bindparam("organization_id"))
            & (CreditAccount.customer_id == Customer.id)
            & (CreditAccount.credits_currency_id == CreditCurrency.id),
        )
        .with_for_update(of=CreditAccount)
    )


_LOCK_HOLD_TARGET_BY_ID = _lock_hold_target(Customer.id == bindparam("customer_id"))
_LOCK_HOLD_TARGET_BY_EXTERNAL_ID = _lock_hold_target(Customer.external_id == bindparam("external_id"))


def find_grant_by_idempotency_key(session: Session, organization_id: str, key: str) -> CreditGrant | None:
    return session.scalar(
        select(CreditGrant).where(CreditGrant.organization_id == organization_id, CreditGrant.idempotency_key == key)
    )


def find_hold(session: Session, organization_id: str, hold_id: str) -> CreditHold | None:
    return session.scalar(_FIND_HOLD, {"organization_id": organization_id, "hold_id": hold_id})


def find_hold_by_idempotency_key(session: Session, organization_id: str, key: str) -> CreditHold | None:
    return session.scalar(_FIND_HOLD_BY_KEY, {"organization_id": organization_id, "idempotency_key": key})


def customer_accounts(session: Session, organization_id: str, customer_id: str) -> list[CreditCurrency]:
    """Return the credit currencies in which the customer has an account, by currency name."""
    parameters = {"organization_id": organization_id, "customer_id": customer_id}
    return list(session.scalars(_CUSTOMER_ACCOUNTS, parameters))


def find_currency_by_key(session: Session, organization_id: str, key: str) -> CreditCurrency | None:
    return session.scalar(
        select(CreditCurrency).where(
            CreditCurrency.organization_id == organization_id, CreditCurrency.key == key
        )
    )


def transactions_statement(
    organization_id: str,
    *,
    customer_id: str | None = None,
    external_customer_id: str | None = None,
    currency_id: str | None = None,
    currency_key: str | None = None,
    entry_type: str | None = None,
    order_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> Select[tuple[LedgerEntry]]:
    """Select ledger entries for the transactions list, newest first."""
    statement = select(LedgerEntry).where(LedgerEntry.organization_id == organization_id)

    if customer_id:
        statement = statement.where(LedgerEntry.customer_id == customer_id)

    if external_customer_id:
        customer_ids = live_customer_id_by_external_id(organization_id, external_customer_id)
        statement = statement.where(LedgerEntry.customer_id.in_(customer_ids))

    if currency_id:
        statement = statement.where(LedgerEntry.credits_currency_id == currency_id)

    if currency_key:
        currency_ids = select(CreditCurrency.id).where(
            CreditCurrency.organization_id == organization_id, CreditCurrency.key == currency_key
        )
        statement = statement.where(LedgerEntry.credits_currency_id.in_(currency_ids))

    if entry_type:
        statement = statement.where(LedgerEntry.entry_type == entry_type)

    if order_id:
        statement = statement.where(LedgerEntry.order_id == order_id)

    if created_from:
        statement = statement.where(LedgerEntry.created_at >= created_from)

    if created_to:
        statement = statement.where(LedgerEntry.created_at <= created_to)

    return statement.order_by(
        LedgerEntry.created_at.desc(), LedgerEntry.sequence.desc(), LedgerEntry.id.desc()
    )


def pending_statement(organization_id: str, customer_id: str) -> Select[tuple[PendingConsumption]]:
    """Select a customer's unsettled pending consumption, in settlement order."""
    return (
        select(PendingConsumption)
        .where(
            PendingConsumption.organization_id == organization_id,
            PendingConsumption.customer_id == customer_id,
            PendingConsumption.settled_at.is_(None),
        )
        .order_by(PendingConsumption.created_at, PendingConsumption.sequence, PendingConsumption.id)
    )
