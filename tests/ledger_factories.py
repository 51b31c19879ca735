"""Factories and invariant checks shared by the ledger tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select

from tallystick.server import clock
from tallystick.server.api_keys import create_api_key
from tallystick.server.ids import new_id
from tallystick.server.ledger import service
from tallystick.server.models import (
    CreditCurrency,
    CreditGrant,
    CreditHold,
    Customer,
    LedgerEntry,
    PendingConsumption,
)


@dataclass(frozen=True)
class Account:
    organization_id: str
    customer_id: str
    currency_id: str

    @property
    def keys(self) -> dict[str, str]:
        return {
            "organization_id": self.organization_id,
            "customer_id": self.customer_id,
            "currency_id": self.currency_id,
        }


def create_currency(session, *, organization_id: str, key: str = "chat_credits", name: str = "Chat Credits") -> CreditCurrency:  # type: ignore[no-untyped-def]
    currency = CreditCurrency(id=new_id("credit_currency"), organization_id=organization_id, name=name, key=key)
    session.add(currency)
    session.flush()
    return currency


def create_customer(session, *, organization_id: str, external_id: str | None = None) -> Customer:  # type: ignore[no-untyped-def]
    customer = Customer(
        id=new_id("customer"),
        organization_id=organization_id,
        external_id=external_id,
        name=external_id or "customer",
    )
    session.add(customer)
    session.flush()
    return customer


def create_account(store) -> Account:  # type: ignore[no-untyped-def]
    """Create an organization with one customer and one credit currency."""
    with store.transaction() as session:
        organization_id = create_api_key(session, f"org-{secrets.token_hex(6)}").organization_id
        customer = create_customer(session, organization_id=organization_id, external_id="user-1")
        currency = create_currency(session, organization_id=organization_id)
        return Account(organization_id, customer.id, currency.id)


def consume(store, account: Account, amount: str | Decimal, **kwargs) -> service.ConsumptionResult:  # type: ignore[no-untyped-def]
    arguments = {
        "signal_id": new_id("signal"),
        "event_name": "chat_message",
        "product_id": None,
        "occurred_at": clock.now(),
    }
    arguments.update(kwargs)
    with store.transaction() as session:
        return service.consume(session, **account.keys, amount=Decimal(amount), **arguments)


def grant(store, account: Account, amount: str | Decimal, **kwargs) -> CreditGrant:  # type: ignore[no-untyped-def]
    with store.transaction() as session:
        return service.grant(session, **account.keys, amount=Decimal(amount), **kwargs)


def available(store, account: Account, at: datetime | None = None) -> Decimal:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return service.balance(session, **account.keys, at=at or clock.now())


@dataclass(frozen=True)
class LedgerTotals:
    granted: Decimal  # grant and positive adjustment entries in effect by now
    consumed: Decimal  # spend and negative adjustment entries, as a positive number
    spent: Decimal  # spend entries alone, as a positive number
    expired: Decimal  # expiry entries, as a positive number
    held: Decimal  # reserved by active, unexpired holds
    pending: Decimal  # unsettled pending consumption


def ledger_totals(store, account: Account, at: datetime) -> LedgerTotals:  # type: ignore[no-untyped-def]
    """Recompute the account's totals from the ledger entries with SQL sums."""

    def entry_sum(session, *conditions) -> Decimal:  # type: ignore[no-untyped-def]
        statement = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.organization_id == account.organization_id,
            LedgerEntry.customer_id == account.customer_id,
            LedgerEntry.credits_currency_id == account.currency_id,
            *conditions,
        )
        # The sum keeps the column type, so it comes back as exact Decimal credits.
        return Decimal(session.scalar(statement))

    with store.read_sessions() as session:
        granted = entry_sum(session, LedgerEntry.amount > 0, LedgerEntry.effective_at <= at)
        consumed = -entry_sum(session, LedgerEntry.entry_type.in_(("spend", "adjustment")), LedgerEntry.amount < 0)
        spent = -entry_sum(session, LedgerEntry.entry_type == "spend")
        expired = -entry_sum(session, LedgerEntry.entry_type == "expiry")
        holds = session.scalars(
            select(CreditHold).where(
                CreditHold.organization_id == account.organization_id,
                CreditHold.customer_id == account.customer_id,
                CreditHold.status == "active",
                CreditHold.expires_at > at,
            )
        ).all()
        pending = session.scalars(
            select(PendingConsumption).where(
                PendingConsumption.organization_id == account.organization_id,
                PendingConsumption.customer_id == account.customer_id,
                PendingConsumption.settled_at.is_(None),
            )
        ).all()
    return LedgerTotals(
        granted=granted,
        consumed=consumed,
        spent=spent,
        expired=expired,
        held=sum((hold.reserved for hold in holds), Decimal(0)),
        pending=sum((row.remaining for row in pending), Decimal(0)),
    )


def grants_match_entries(store, account: Account) -> list[str]:  # type: ignore[no-untyped-def]
    """Return the grants whose cached remaining differs from the sum of their entries."""
    with store.read_sessions() as session:
        grants = session.scalars(
            select(CreditGrant).where(
                CreditGrant.organization_id == account.organization_id,
                CreditGrant.customer_id == account.customer_id,
            )
        ).all()
        mismatches = []
        for grant in grants:
            entries = session.scalars(select(LedgerEntry.amount).where(LedgerEntry.grant_id == grant.id)).all()
            if sum(entries, Decimal(0)) != grant.remaining or grant.remaining < 0:
                mismatches.append(grant.id)
        return mismatches
