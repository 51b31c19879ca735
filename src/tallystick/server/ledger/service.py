"""Ledger rules: grants, consumption, pending consumption, expiry, holds and balances.

Every write for one (organization, customer, credit currency) first locks that account (see
`lock_account`), so writes to one customer's credits in one currency run one at a time, across
threads and across server processes sharing one database. Functions here only flush: the caller
owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from tallystick.server.models import CreditGrant, CreditHold

# Default lifetime of a hold, in seconds, when the client does not send one.
DEFAULT_HOLD_TTL_SECONDS = 300
# Longest hold lifetime a client may ask for, in seconds (one day).
MAX_HOLD_TTL_SECONDS = 86_400


@dataclass(frozen=True)
class ConsumptionResult:
    covered: Decimal  # credits drawn from grants (including the part reserved by a hold)
    pending: Decimal  # credits not covered, recorded as pending consumption
    available_after: Decimal


@dataclass(frozen=True)
class HoldResult:
    allowed: bool
    hold: CreditHold | None  # None when the hold was denied
    available: Decimal  # available after the hold was placed (or unchanged when denied)


def consume(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    amount: Decimal,
    signal_id: str | None,
    event_name: str | None,
    product_id: str | None,
    occurred_at: datetime,
    hold_id: str | None = None,
    order_id: str | None = None,
) -> ConsumptionResult:
    """Consume `amount` credits, drawing grants in order; record the uncovered rest as pending."""
    raise NotImplementedError


def grant(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    amount: Decimal,
    starts_at: datetime | None = None,
    expires_at: datetime | None = None,
    priority: int = 0,
    source: str = "manual",
    origin_code: str | None = None,
    order_id: str | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    description: str | None = None,
) -> CreditGrant:
    """Create a grant, write its ledger entry, then settle pending consumption oldest first."""
    raise NotImplementedError


def balance(
    session: Session, organization_id: str, customer_id: str, currency_id: str, at: datetime
) -> Decimal:
    """Return the credits available at `at`: active grants' remaining minus active holds."""
    raise NotImplementedError


def place_hold(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    amount: Decimal,
    ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS,
) -> HoldResult:
    """Reserve `amount` credits if that many are available; deny without writing otherwise."""
    raise NotImplementedError


def release_hold(session: Session, *, organization_id: str, hold_id: str) -> CreditHold:
    """End an active hold without consuming anything; its credits become available again."""
    raise NotImplementedError
