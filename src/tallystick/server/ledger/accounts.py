"""Locked credit accounts: the in-memory state that every ledger write works on.

A write locks its accounts, loads their grants and holds (and, when needed, unsettled pending
consumption), changes them in Python with exact decimals, and then writes the result: new
ledger entries, pending consumption rows and holds go to the database with one statement per
table for all the accounts of the write, as do the grants' remaining and expiry and the
accounts' last sequence, and the holds' changes. The ORM flushes the rest: new grants and
settled pending consumption. New rows are buffered rather than added to the session: the ORM's flush costs
more than the SQL that stores them. For a batch that cost is building a thousand ORM objects,
and for a hold it is the flush's bookkeeping around one INSERT.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tallystick.server import events
from tallystick.server.bulk_sql import insert_rows, update_rows
from tallystick.server.ids import new_id
from tallystick.server.ledger import queries
from tallystick.server.models import (
    CreditAccount,
    CreditGrant,
    CreditHold,
    Customer,
    LedgerEntry,
    PendingConsumption,
)
from tallystick.server.webhooks.low_balance import record_low_balance_crossing

log = logging.getLogger(__name__)

ZERO = Decimal(0)

AccountKey = tuple[str, str]  # (customer id, credit currency id)

# Columns of a ledger entry that name its cause; an entry leaves the ones it does not use null.
_ENTRY_CAUSES = (
    "signal_id",
    "event_name",
    "product_id",
    "hold_id",
    "pending_consumption_id",
    "description",
)
_PENDING_COLUMNS = tuple(column.key for column in PendingConsumption.__table__.columns)
# (attribute, column) of each column of a hold: the attribute `metadata_` stores column `metadata`.
_HOLD_COLUMNS = tuple((attribute.key, attribute.columns[0].key) for attribute in inspect(CreditHold).column_attrs)
_ACCOUNT_KEY = ("organization_id", "customer_id", "credits_currency_id")


# A grant of a locked account: loaded as a row, or created by this write as an ORM object.
Grant = CreditGrant | queries.GrantRow
# A hold of a locked account: loaded as a row, or placed by this write as an ORM object.
Hold = CreditHold | queries.HoldRow
# The columns of a hold that a write changes, stored by `write_rows` for loaded holds.
_HOLD_CHANGES = ("status", "reserved", "ended_at", "settled_signal_id")


def is_active(grant: Grant, at: datetime) -> bool:
    """Return whether the grant's credits count at `at`: started, not expired."""
    if grant.expired_at is not None or grant.starts_at > at:
        return False
    return grant.expires_at is None or grant.expires_at > at


def draw_order(grants: list[Grant]) -> list[Grant]:
    """Sort grants in draw order: priority, earliest expiry (none last), oldest start, creation."""
    return sorted(
        grants,
        key=lambda grant: (
            grant.priority,
            grant.expires_at is None,
            grant.expires_at or grant.starts_at,
            grant.starts_at,
            grant.sequence,
        ),
    )


@dataclass
class LockedAccount:
    """One account's grants and holds, loaded under its lock, with the write helpers."""

    session: Session
    account: queries.AccountRow
    now: datetime
    grants: list[Grant] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    # Unsettled pending consumption in settlement order; None until first needed.
    pending: list[PendingConsumption] | None = None
    # Available as the previous write left it. Set before this write's sweep, then moved on
    # after each consumption of a batch, so events compare each consumption with the one before.
    available_before: Decimal = ZERO
    # Rows to insert when the write ends.
    entry_rows: list[dict[str, Any]] = field(default_factory=list)
    new_pending: list[PendingConsumption] = field(default_factory=list)
    new_holds: list[CreditHold] = field(default_factory=list)
    # Loaded holds whose status or reserved credits this write changed, by id.
    changed_holds: dict[str, queries.HoldRow] = field(default_factory=dict)
    # Grants whose remaining this write changed, by id.
    touched: dict[str, Grant] = field(default_factory=dict)
    # Loaded grants that this write swept as expired, to store their `expired_at`.
    swept: list[queries.GrantRow] = field(default_factory=list)
    _spendable: list[Grant] | None = None

    @property
    def organization_id(self) -> str:
        return self.account.organization_id

    @property
    def customer_id(self) -> str:
        return self.account.customer_id

    @property
    def currency_id(self) -> str:
        return self.account.credits_currency_id

    def __post_init__(self) -> None:
        # The last sequence as stored: `write_rows` writes the account only when it moved on.
        self.stored_sequence = self.account.last_sequence

    def next_sequence(self) -> int:
        # `write_rows` stores the last one, for every account of the write in one statement.
        self.account.last_sequence += 1
        return self.account.last_sequence

    def spendable_grants(self) -> list[Grant]:
        """Return the grants with credits left and active now, in draw order.

        The list is kept between calls, since a batch asks for it several times per signal;
        `add_entry` and `changed_grants` drop it whenever it may no longer be right.
        """
        if self._spendable is None:
            self._spendable = draw_order(
                [grant for grant in self.grants if grant.remaining > 0 and is_active(grant, self.now)]
            )
        return self._spendable

    def changed_grants(self) -> None:
        """Forget the spendable grants after `grants` itself changed."""
        self._spendable = None

    def grant_credits(self) -> Decimal:
        return sum((grant.remaining for grant in self.spendable_grants()), ZERO)

    def held(self) -> Decimal:
        return sum((hold.reserved for hold in self.holds), ZERO)

    def available(self) -> Decimal:
        """Return the free credits: active grants' remaining minus active holds."""
        return self.grant_credits() - self.held()

    def add_entry(self, grant: Grant, entry_type: str, amount: Decimal, **cause: Any) -> None:
        """Buffer one ledger entry and apply it to the grant's cached remaining."""
        effective_at = cause.pop("effective_at", None) or self.now
        order_id = cause.pop("order_id", None) or grant.order_id
        row = dict.fromkeys(_ENTRY_CAUSES)
        row.update(cause)
        row.update(
            id=new_id("ledger_entry"),
            organization_id=self.organization_id,
            customer_id=self.customer_id,
            credits_currency_id=self.currency_id,
            grant_id=grant.id,
            entry_type=entry_type,
            amount=amount,
            order_id=order_id,
            effective_at=effective_at,
            sequence=self.next_sequence(),
            created_at=self.now,
        )
        remaining = grant.remaining + amount
        if remaining < 0:
            raise AssertionError(f"grant {grant.id} would go below zero")
        if isinstance(grant, CreditGrant) and inspect(grant).persistent:
            # Committed state: `write_rows` stores it, so the ORM's flush must not write it too.
            set_committed_value(grant, "remaining", remaining)
        else:
            # A loaded row, or a grant created by this write, which the ORM inserts as it is.
            grant.remaining = remaining
        self.entry_rows.append(row)
        self.touched[grant.id] = grant
        # A grant that reaches zero leaves the spendable grants; one that had none may join.
        if grant.remaining == 0 or grant.remaining == amount:
            self._spendable = None

    def draw(self, amount: Decimal, entry_type: str = "spend", **cause: Any) -> Decimal:
        """Take up to `amount` from spendable grants in draw order, one entry per grant touched.

        Returns the amount drawn. The caller makes sure `amount` is not more than available,
        so held credits are never drawn by anyone but their hold.
        """
        left = amount
        for grant in self.spendable_grants():
            if left == 0:
                break
            take = min(grant.remaining, left)
            self.add_entry(grant, entry_type, -take, **cause)
            left -= take
        return amount - left

    def add_hold(self, hold: CreditHold) -> None:
        """Add a new active hold; it is inserted when the write ends, outside the ORM's flush."""
        self.holds.append(hold)
        self.new_holds.append(hold)

    def end_hold(self, hold_id: str, status: str, *, signal_id: str | None = None) -> Hold | None:
        """End the account's active hold `hold_id` now as settled or released; return it.

        Returns None when the hold is not among the account's active holds: it already ended,
        or the sweep of this write found it expired.
        """
        for hold in self.holds:
            if hold.id == hold_id:
                self._end(hold, status, self.now)
                hold.settled_signal_id = signal_id
                return hold
        return None

    def _end(self, hold: Hold, status: str, at: datetime) -> None:
        hold.status = status
        hold.ended_at = at
        self.holds.remove(hold)
        self._changed(hold)

    def _changed(self, hold: Hold) -> None:
        # A hold placed by this write is inserted with its final values instead.
        if isinstance(hold, queries.HoldRow):
            self.changed_holds[hold.id] = hold

    def add_pending(self, row: PendingConsumption) -> None:
        """Append new pending consumption; it is inserted when the write ends."""
        self.pending_rows().append(row)
        self.new_pending.append(row)

    def pending_rows(self) -> list[PendingConsumption]:
        if self.pending is None:
            self.pending = queries.unsettled_pending(
                self.session, self.organization_id, self.customer_id, self.currency_id
            )
        return self.pending

    def sweep(self) -> None:
        """Record expiries due by now and keep holds within what the grants can back."""
        for grant in list(self.grants):
            if grant.expires_at is None or grant.expires_at > self.now:
                continue
            if grant.remaining > 0:
                self.add_entry(grant, "expiry", -grant.remaining, effective_at=grant.expires_at)
            grant.expired_at = grant.expires_at
            if isinstance(grant, queries.GrantRow):
                self.swept.append(grant)
            self.grants.remove(grant)
            self.changed_grants()
            log.info(
                "ledger.grant_expired",
                extra={"organization_id": self.organization_id, "grant_id": grant.id},
            )

        for hold in list(self.holds):
            if hold.expires_at <= self.now:
                self._end(hold, "expired", hold.expires_at)

        # A grant backing a hold may expire before the hold does. Cut the newest holds first so
        # that held credits never exceed the credits left, keeping available at zero or above.
        excess = self.held() - self.grant_credits()
        for hold in sorted(self.holds, key=lambda item: (item.created_at, item.id), reverse=True):
            if excess <= 0:
                break
            cut = min(hold.reserved, excess)
            hold.reserved -= cut
            excess -= cut
            self._changed(hold)

    def settle_pending(self) -> None:
        """Draw free credits for unsettled pending consumption, first recorded first."""
        free = self.available()
        if free <= 0:
            return
        for row in self.pending_rows():
            if free <= 0:
                break
            if row.remaining == 0:
                continue
            take = min(row.remaining, free)
            self.draw(
                take,
                signal_id=row.signal_id,
                event_name=row.event_name,
                product_id=row.product_id,
                order_id=row.order_id,
                pending_consumption_id=row.id,
            )
            row.remaining -= take
            free -= take
            if row.remaining == 0:
                row.settled_at = self.now
            log.info(
                "ledger.pending_settled",
                extra={
                    "organization_id": self.organization_id,
                    "pending_consumption_id": row.id,
                    "settled": str(take),
                },
            )

    def record_events(
        self,
        cause: str,
        *,
        thresholds: dict[str, Decimal | None] | None = None,
        **ids: str | None,
    ) -> Decimal:
        """Record billing-credits-depleted and billing-credits-low if this write crossed them.

        Depleted fires when the write took available from above zero to zero; low fires when it
        took available from above the currency's threshold to or below it. `thresholds` maps
        currency ids to their low-balance threshold (None for none) when the caller loaded them
        for a whole batch; without it, each lowering write looks the threshold up. Returns the
        available credits, which the next consumption of a batch compares against.
        """
        available = self.available()
        before = self.available_before
        self.available_before = available

        if before > 0 and available <= 0:
            # Depletion is rare, so the customer's lookup costs nothing that matters.
            customer = self.session.get(Customer, self.customer_id)
            payload = {
                "customerId": self.customer_id,
                "externalCustomerId": customer.external_id if customer is not None else None,
                "creditsCurrencyId": self.currency_id,
                "available": "0",
                "cause": cause,
            }
            payload.update({key: value for key, value in ids.items() if value is not None})
            events.record_event(self.session, self.organization_id, events.CREDITS_DEPLETED, payload)

        if thresholds is not None:
            threshold = thresholds.get(self.currency_id)
            if threshold is None or not before > threshold >= available:
                return available
        record_low_balance_crossing(
            self.session,
            organization_id=self.organization_id,
            customer_id=self.customer_id,
            currency_id=self.currency_id,
            available_before=before,
            available_after=available,
        )
        return available


def open_accounts(
    session: Session,
    organization_id: str,
    keys: Iterable[AccountKey],
    now: datetime,
    *,
    load_pending: bool = False,
    account_times: Mapping[AccountKey, datetime] | None = None,
    locked: queries.AccountRow | None = None,
) -> dict[AccountKey, LockedAccount]:
    """Lock the accounts in (customer, currency) order, load their rows, sweep and settle.

    Each account works at `now`, or at its time in `account_times` (a customer on a test clock).
    `locked` is the row of the one account of `keys` when the caller has locked it already.

    Grants, holds and (with `load_pending`) pending consumption are loaded with one query per
    table for all the accounts, so a batch pays the same number of round trips for one account
    or a thousand. A write of one account loads its grants and holds with one query.
    """
    keys = sorted(set(keys))
    if locked is not None:
        if keys != [(locked.customer_id, locked.credits_currency_id)]:
            raise ValueError(f"the locked account {locked} is not the one account of {keys}")
        accounts = {keys[0]: locked}
    else:
        accounts = queries.lock_account_rows(session, organization_id, keys)
    pending: dict[AccountKey, list[PendingConsumption]] | None = None
    if len(keys) == 1 and not load_pending:
        # A write of one account (a hold, a grant, a single signal) loads its grants and holds
        # in one statement, and learns with them whether it has pending consumption to settle,
        # which saves the pending query when it has none.
        account_grants, account_holds, has_pending = queries.one_account_rows(session, organization_id, keys[0])
        grants = {keys[0]: account_grants}
        holds = {keys[0]: account_holds}
        if has_pending is False:
            pending = {keys[0]: []}
    else:
        grants = queries.open_grants_of(session, organization_id, keys)
        if load_pending:
            pending = queries.unsettled_pending_of(session, organization_id, keys)
        holds = queries.active_holds_of(session, organization_id, keys)

    states = {}
    for key in keys:
        state = LockedAccount(
            session=session,
            account=accounts[key],
            now=account_times.get(key, now) if account_times else now,
            grants=grants.get(key, []),
            holds=holds.get(key, []),
            pending=pending.get(key, []) if pending is not None else None,
        )
        # What the previous write left, by stored state: expiries not yet swept still count here.
        stored_credits = sum(
            (grant.remaining for grant in state.grants if grant.starts_at <= state.now), ZERO
        )
        state.available_before = max(ZERO, stored_credits - state.held())

        state.sweep()
        state.settle_pending()
        states[key] = state
    return states


def _stored_by_write_rows(grant: Grant) -> bool:
    """Return whether `write_rows` stores the grant's remaining: every grant but a new ORM one.

    A grant that this write created is inserted by the ORM's flush, with its remaining.
    """
    return not isinstance(grant, CreditGrant) or inspect(grant).persistent


def write_rows(session: Session, states: Iterable[LockedAccount]) -> None:
    """Write what the accounts' write changed, with one statement per table.

    Entries, new pending rows and new holds are inserted (see `bulk_sql.insert_rows`). The
    grants' new remaining, the swept grants' expiry, the accounts' last sequence and the changes
    of loaded holds are written by one bulk update each rather than by the ORM, which sends one
    UPDATE per object. The ORM flushes the rest: new grants, settled pending consumption.
    """
    states = list(states)
    entry_rows: list[dict[str, Any]] = []
    pending_rows: list[dict[str, Any]] = []
    hold_rows: list[dict[str, Any]] = []
    changed_hold_rows: list[dict[str, Any]] = []
    grant_rows: list[dict[str, Any]] = []
    expired_rows: list[dict[str, Any]] = []
    account_rows: list[dict[str, Any]] = []
    for state in states:
        entry_rows.extend(state.entry_rows)
        state.entry_rows = []
        pending_rows.extend(
            {column: getattr(row, column) for column in _PENDING_COLUMNS} for row in state.new_pending
        )
        state.new_pending = []
        hold_rows.extend(
            {column: getattr(hold, attribute) for attribute, column in _HOLD_COLUMNS} for hold in state.new_holds
        )
        state.new_holds = []
        changed_hold_rows.extend(
            {"id": hold.id, **{column: getattr(hold, column) for column in _HOLD_CHANGES}}
            for hold in state.changed_holds.values()
        )
        state.changed_holds = {}
        for grant in state.touched.values():
            if _stored_by_write_rows(grant):
                grant_rows.append({"id": grant.id, "remaining": grant.remaining})
        state.touched = {}
        expired_rows.extend({"id": grant.id, "expired_at": grant.expired_at} for grant in state.swept)
        state.swept = []
        account = state.account
        if account.last_sequence == state.stored_sequence:
            continue
        state.stored_sequence = account.last_sequence
        account_rows.append(
            {
                "organization_id": account.organization_id,
                "customer_id": account.customer_id,
                "credits_currency_id": account.credits_currency_id,
                "last_sequence": account.last_sequence,
            }
        )

    session.flush()
    update_rows(session, CreditGrant.__table__, grant_rows, keys=("id",))
    update_rows(session, CreditGrant.__table__, expired_rows, keys=("id",))
    update_rows(session, CreditAccount.__table__, account_rows, keys=_ACCOUNT_KEY)
    insert_rows(session, PendingConsumption.__table__, pending_rows)
    insert_rows(session, CreditHold.__table__, hold_rows)
    update_rows(session, CreditHold.__table__, changed_hold_rows, keys=("id",))
    insert_rows(session, LedgerEntry.__table__, entry_rows)
