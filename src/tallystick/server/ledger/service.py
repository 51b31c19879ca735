"""Ledger rules: grants, consumption, pending consumption, expiry, holds and balances.

Every write for one (organization, customer, credit currency) first locks that account (see
`queries.lock_account`), so writes to one customer's credits in one currency run one at a time,
across threads and across server processes sharing one database. Each write then, in order:
1. sweeps what expired by now: writes an expiry entry for each expired grant's unused remainder,
   ends expired holds, and cuts holds down to what the remaining grants can back;
2. settles unsettled pending consumption from the available credits, first recorded first;
3. does its own work (consume, grant, hold, release, adjust).
Functions here only flush: the caller owns the transaction. Grant eligibility and expiry are
judged at the clock's now (processing time), never at a signal's `occurred_at`, so a backdated
signal cannot draw from a grant whose expiry was already recorded.

Grants are drawn by priority (lower first), then earliest expiry (never-expiring grants last),
then oldest start, then creation order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from tallystick.server import clock, events
from tallystick.server.errors import bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.ledger import queries
from tallystick.server.models import (
    CreditAccount,
    CreditCurrency,
    CreditGrant,
    CreditHold,
    LedgerEntry,
    PendingConsumption,
)
from tallystick.server.models.types import CREDIT_PLACES
from tallystick.server.webhooks.low_balance import record_low_balance_crossing

log = logging.getLogger(__name__)

ZERO = Decimal(0)
# Largest credit amount of one grant, consumption or hold. Rows store credits as 64-bit integers
# of 10**-9 credits (at most about 9.2e9 credits), so this leaves headroom in every row.
MAX_CREDIT_AMOUNT = Decimal(1_000_000_000)
# Default lifetime of a hold, in seconds, when the client does not send one.
DEFAULT_HOLD_TTL_SECONDS = 300
# Maximum hold lifetime a client may request, in seconds (one day).
MAX_HOLD_TTL_SECONDS = 86_400

GRANT_SOURCES = ("manual", "order_period", "adjustment", "promotion")


@dataclass(frozen=True)
class ConsumptionResult:
    covered: Decimal  # credits drawn from grants (including the part a hold reserved)
    pending: Decimal  # credits not covered, recorded as pending consumption
    available_after: Decimal


@dataclass(frozen=True)
class HoldResult:
    allowed: bool
    hold: CreditHold | None  # None when the hold was denied
    available: Decimal  # available after the hold was placed, or unchanged when denied


@dataclass(frozen=True)
class GrantView:
    grant: CreditGrant
    available: Decimal  # remaining minus the holds and pending consumption drawn against it


@dataclass(frozen=True)
class BalanceView:
    """One customer's credits in one currency at one instant."""

    available: Decimal
    held: Decimal  # reserved by active holds
    pending: Decimal  # unsettled pending consumption
    total: Decimal  # sum of the active grants' amounts
    used: Decimal  # total minus the active grants' remaining
    grants: list[GrantView]


# Validation


def check_credit_amount(
    field_name: str, amount: Decimal, *, places: int = CREDIT_PLACES, allow_zero: bool = False
) -> None:
    """Raise the API's 400 unless `amount` is a finite decimal in range with at most `places`."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise bad_request(field_name, "must be a finite number", str(amount))
    if amount < 0 or (amount == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "greater than 0"
        raise bad_request(field_name, f"must be {bound}", str(amount))
    if amount > MAX_CREDIT_AMOUNT:
        raise bad_request(field_name, f"must be at most {MAX_CREDIT_AMOUNT} credits", str(amount))
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise bad_request(field_name, f"must have at most {places} decimal places", str(amount))


# Reads


def is_active(grant: CreditGrant, at: datetime) -> bool:
    """Return whether the grant's credits count at `at`: started, not expired."""
    if grant.expired_at is not None or grant.starts_at > at:
        return False
    return grant.expires_at is None or grant.expires_at > at


def draw_order(grants: list[CreditGrant]) -> list[CreditGrant]:
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


def is_hold_active(hold: CreditHold, at: datetime) -> bool:
    return hold.status == "active" and hold.expires_at > at


def balance_view(
    session: Session, organization_id: str, customer_id: str, currency_id: str, at: datetime
) -> BalanceView:
    """Compute the balance at `at` from stored rows, as the next write would leave it.

    Expiries and hold expiries that no write has swept yet are applied here on the fly, so a
    read is right at any instant. Held credits and pending consumption are assigned to grants
    in draw order, so the grants' available amounts add up to the balance's available.
    """
    grants = draw_order(
        [g for g in queries.open_grants(session, organization_id, customer_id, currency_id) if is_active(g, at)]
    )
    holds = queries.active_holds(session, organization_id, customer_id, currency_id)
    pending = queries.unsettled_pending(session, organization_id, customer_id, currency_id)

    held = sum((hold.reserved for hold in holds if is_hold_active(hold, at)), ZERO)
    pending_total = sum((row.remaining for row in pending), ZERO)
    spoken_for = held + pending_total

    views: list[GrantView] = []
    for grant in grants:
        assigned = min(grant.remaining, spoken_for)
        spoken_for -= assigned
        views.append(GrantView(grant=grant, available=grant.remaining - assigned))

    total = sum((grant.amount for grant in grants), ZERO)
    remaining = sum((grant.remaining for grant in grants), ZERO)
    return BalanceView(
        available=sum((view.available for view in views), ZERO),
        held=min(held, remaining),
        pending=pending_total,
        total=total,
        used=total - remaining,
        grants=views,
    )


def balance(
    session: Session, organization_id: str, customer_id: str, currency_id: str, at: datetime
) -> Decimal:
    """Return the credits available at `at`: active grants' remaining minus holds and pending.

    Remaining amounts are the stored ones, so `at` is meant to be now or later; it decides which
    grants and holds have started or expired.
    """
    return balance_view(session, organization_id, customer_id, currency_id, at).available


def customer_balances(
    session: Session, organization_id: str, customer_id: str, at: datetime
) -> list[tuple[CreditCurrency, BalanceView]]:
    """Return the customer's balance in every credit currency it has used, by currency name."""
    return [
        (currency, balance_view(session, organization_id, customer_id, currency.id, at))
        for currency in queries.customer_accounts(session, organization_id, customer_id)
    ]


def get_hold(session: Session, organization_id: str, hold_id: str) -> CreditHold:
    """Return the organization's hold or raise the API's 404."""
    hold = queries.find_hold(session, organization_id, hold_id)
    if hold is None:
        raise not_found("Credit hold", "id", hold_id)
    return hold


def hold_status(hold: CreditHold, at: datetime) -> str:
    """Return the hold's status at `at`; an active hold past its expiry reads as expired."""
    if hold.status == "active" and hold.expires_at <= at:
        return "expired"
    return hold.status


# Writes


@dataclass
class _LockedAccount:
    """One account's grants and holds, loaded under its lock, with the write helpers."""

    session: Session
    account: CreditAccount
    now: datetime
    grants: list[CreditGrant] = field(default_factory=list)
    holds: list[CreditHold] = field(default_factory=list)
    # Available as the previous write left it, before this write's sweep.
    available_before: Decimal = ZERO

    @property
    def organization_id(self) -> str:
        return self.account.organization_id

    @property
    def customer_id(self) -> str:
        return self.account.customer_id

    @property
    def currency_id(self) -> str:
        return self.account.credits_currency_id

    def next_sequence(self) -> int:
        self.account.last_sequence += 1
        return self.account.last_sequence

    def spendable_grants(self) -> list[CreditGrant]:
        return draw_order(
            [grant for grant in self.grants if grant.remaining > 0 and is_active(grant, self.now)]
        )

    def grant_credits(self) -> Decimal:
        return sum((grant.remaining for grant in self.spendable_grants()), ZERO)

    def held(self) -> Decimal:
        return sum((hold.reserved for hold in self.holds), ZERO)

    def available(self) -> Decimal:
        """Return the free credits: active grants' remaining minus active holds."""
        return self.grant_credits() - self.held()

    def add_entry(self, grant: CreditGrant, entry_type: str, amount: Decimal, **cause: object) -> LedgerEntry:
        """Append one ledger entry and apply it to the grant's cached remaining."""
        effective_at = cause.pop("effective_at", None) or self.now
        order_id = cause.pop("order_id", None) or grant.order_id
        entry = LedgerEntry(
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
            **cause,
        )
        grant.remaining += amount
        if grant.remaining < 0:
            raise AssertionError(f"grant {grant.id} would go below zero")
        self.session.add(entry)
        return entry

    def draw(self, amount: Decimal, entry_type: str = "spend", **cause: object) -> Decimal:
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

    def sweep(self) -> None:
        """Record expiries due by now and keep holds within what the grants can back."""
        for grant in list(self.grants):
            if grant.expires_at is None or grant.expires_at > self.now:
                continue
            if grant.remaining > 0:
                self.add_entry(grant, "expiry", -grant.remaining, effective_at=grant.expires_at)
            grant.expired_at = grant.expires_at
            self.grants.remove(grant)
            log.info(
                "ledger.grant_expired",
                extra={"organization_id": self.organization_id, "grant_id": grant.id},
            )

        for hold in list(self.holds):
            if hold.expires_at <= self.now:
                hold.status = "expired"
                hold.ended_at = hold.expires_at
                self.holds.remove(hold)

        # A grant backing a hold may expire before the hold does. Cut the newest holds first so
        # that held credits never exceed the credits left, keeping available at zero or above.
        excess = self.held() - self.grant_credits()
        for hold in sorted(self.holds, key=lambda item: (item.created_at, item.id), reverse=True):
            if excess <= 0:
                break
            cut = min(hold.reserved, excess)
            hold.reserved -= cut
            excess -= cut

    def settle_pending(self) -> None:
        """Draw free credits for unsettled pending consumption, first recorded first."""
        free = self.available()
        if free <= 0:
            return
        pending_rows = queries.unsettled_pending(
            self.session, self.organization_id, self.customer_id, self.currency_id
        )
        for row in pending_rows:
            if free <= 0:
                break
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

    def finish(self, cause: str, **ids: str | None) -> Decimal:
        """Flush, and record billing-credits-depleted when this write took available to zero and
        billing-credits-low when it took available to or below the currency's threshold."""
        self.session.flush()
        available = self.available()
        if self.available_before > 0 and available <= 0:
            payload = {
                "customerId": self.customer_id,
                "creditsCurrencyId": self.currency_id,
                "available": "0",
                "cause": cause,
            }
            payload.update({key: value for key, value in ids.items() if value is not None})
            events.record_event(self.session, self.organization_id, events.CREDITS_DEPLETED, payload)
        record_low_balance_crossing(
            self.session,
            organization_id=self.organization_id,
            customer_id=self.customer_id,
            currency_id=self.currency_id,
            available_before=self.available_before,
            available_after=available,
        )
        return available


def _open_account(
    session: Session, organization_id: str, customer_id: str, currency_id: str
) -> _LockedAccount:
    """Lock the account, load its grants and holds, sweep expiries and settle pending."""
    account = queries.lock_account(session, organization_id, customer_id, currency_id)
    state = _LockedAccount(
        session=session,
        account=account,
        now=clock.now(),
        grants=queries.open_grants(
            session, organization_id, customer_id, currency_id, with_credits_only=True
        ),
        holds=queries.active_holds(session, organization_id, customer_id, currency_id),
    )
    # What the previous write left, by stored state: expiries not yet swept still count here.
    stored_credits = sum(
        (grant.remaining for grant in state.grants if grant.starts_at <= state.now), ZERO
    )
    state.available_before = max(ZERO, stored_credits - state.held())

    state.sweep()
    state.settle_pending()
    return state


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
    """Consume `amount` credits, drawing grants in order; record the uncovered rest as pending.

    With `hold_id`, the hold is settled first: its reserved credits become this consumption's,
    and what it does not use is released. A hold that already ended (expired, released or
    settled by another consumption) is ignored and the consumption draws from free credits.
    A hold of another customer or currency, or an unknown hold, raises a 400 naming holdId.
    Emits billing-credits-depleted when this consumption takes available to zero.
    """
    check_credit_amount("amount", amount, allow_zero=True)

    hold = None
    if hold_id is not None:
        hold = queries.find_hold(session, organization_id, hold_id)
        if hold is None:
            raise bad_request("holdId", "no credit hold with this id", hold_id)
        if hold.customer_id != customer_id or hold.credits_currency_id != currency_id:
            raise bad_request(
                "holdId", "the hold belongs to another customer or credit currency", hold_id
            )

    state = _open_account(session, organization_id, customer_id, currency_id)

    if hold is not None and hold in state.holds:
        hold.status = "settled"
        hold.settled_signal_id = signal_id
        hold.ended_at = state.now
        state.holds.remove(hold)

    cause = {
        "signal_id": signal_id,
        "event_name": event_name,
        "product_id": product_id,
        "order_id": order_id,
        "hold_id": hold_id,
    }
    covered = state.draw(min(amount, max(ZERO, state.available())), **cause)

    uncovered = amount - covered
    if uncovered > 0:
        session.add(
            PendingConsumption(
                id=new_id("pending_consumption"),
                organization_id=organization_id,
                customer_id=customer_id,
                credits_currency_id=currency_id,
                amount=uncovered,
                remaining=uncovered,
                signal_id=signal_id,
                event_name=event_name,
                product_id=product_id,
                order_id=order_id,
                occurred_at=occurred_at,
                sequence=state.next_sequence(),
                created_at=state.now,
            )
        )
        session.flush()
        log.info(
            "ledger.consumption_pending",
            extra={
                "organization_id": organization_id,
                "customer_id": customer_id,
                "signal_id": signal_id,
                "pending": str(uncovered),
            },
        )

    # Credits a settled hold did not use go to older pending consumption first.
    if hold is not None:
        state.settle_pending()

    available = state.finish("consumption", signalId=signal_id)
    return ConsumptionResult(covered=covered, pending=uncovered, available_after=available)


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
    """Create a grant, write its ledger entry, then settle pending consumption oldest first.

    `starts_at` defaults to now; a grant starting later counts from then on (and settles
    pending consumption at the first write after it starts). `priority`: lower is drawn first.
    `source` is one of GRANT_SOURCES; an "adjustment" grant writes an adjustment entry.
    `origin_code` is the wire originCode of its entries (defaults to `source`).
    """
    check_credit_amount("amount", amount)
    if source not in GRANT_SOURCES:
        raise bad_request("source", f"must be one of {', '.join(GRANT_SOURCES)}", source)

    starts_at = starts_at or clock.now()
    if expires_at is not None and expires_at <= starts_at:
        raise bad_request("expiresAt", "must be after startsAt", expires_at.isoformat())

    state = _open_account(session, organization_id, customer_id, currency_id)

    created = CreditGrant(
        id=new_id("credit_grant"),
        organization_id=organization_id,
        customer_id=customer_id,
        credits_currency_id=currency_id,
        amount=amount,
        remaining=ZERO,
        starts_at=starts_at,
        expires_at=expires_at,
        priority=priority,
        source=source,
        origin_code=origin_code or source,
        order_id=order_id,
        period_start=period_start or starts_at,
        period_end=period_end,
        description=description,
        sequence=state.next_sequence(),
        created_at=state.now,
    )
    session.add(created)
    entry_type = "adjustment" if source == "adjustment" else "grant"
    state.add_entry(created, entry_type, amount, effective_at=starts_at, description=description)
    state.grants.append(created)
    log.info(
        "ledger.grant_created",
        extra={
            "organization_id": organization_id,
            "customer_id": customer_id,
            "grant_id": created.id,
            "amount": str(amount),
            "source": source,
        },
    )

    # A backdated grant may already be past its expiry.
    state.sweep()
    state.settle_pending()
    state.finish("grant", grantId=created.id)
    return created


def debit(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    amount: Decimal,
    description: str | None = None,
) -> Decimal:
    """Remove `amount` free credits as adjustment entries (a manual correction); return available.

    Raises a 400 when fewer than `amount` credits are free: a correction never creates pending
    consumption. To add credits, create a grant with source "adjustment".
    """
    check_credit_amount("amount", amount)
    state = _open_account(session, organization_id, customer_id, currency_id)
    free = state.available()
    if free < amount:
        raise bad_request("amount", f"only {free} credits are available to remove", str(amount))
    state.draw(amount, entry_type="adjustment", description=description)
    return state.finish("adjustment")


def sweep_account(
    session: Session, *, organization_id: str, customer_id: str, currency_id: str
) -> Decimal:
    """Record expiries due by now, end expired holds and settle pending consumption.

    Every ledger write does this first anyway; calling it alone brings the stored rows up to
    date for an account that nothing else touches. Returns the available credits.
    """
    state = _open_account(session, organization_id, customer_id, currency_id)
    return state.finish("sweep")


def place_hold(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    amount: Decimal,
    ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS,
) -> HoldResult:
    """Reserve `amount` credits if that many are available; deny, reserving nothing, otherwise.

    The check and the reservation happen under the account lock, so two parallel holds (or a
    hold and a consumption) can never both get the last credit.
    """
    check_credit_amount("amount", amount)
    if not 1 <= ttl_seconds <= MAX_HOLD_TTL_SECONDS:
        raise bad_request(
            "ttlSeconds", f"must be between 1 and {MAX_HOLD_TTL_SECONDS} seconds", ttl_seconds
        )

    state = _open_account(session, organization_id, customer_id, currency_id)
    free = state.available()
    if free < amount:
        state.finish("hold")
        log.info(
            "ledger.hold_denied",
            extra={"organization_id": organization_id, "customer_id": customer_id, "requested": str(amount)},
        )
        return HoldResult(allowed=False, hold=None, available=free)

    hold = CreditHold(
        id=new_id("hold"),
        organization_id=organization_id,
        customer_id=customer_id,
        credits_currency_id=currency_id,
        amount=amount,
        reserved=amount,
        status="active",
        expires_at=state.now + timedelta(seconds=ttl_seconds),
        created_at=state.now,
    )
    session.add(hold)
    state.holds.append(hold)
    available = state.finish("hold", holdId=hold.id)
    log.info(
        "ledger.hold_placed",
        extra={"organization_id": organization_id, "customer_id": customer_id, "hold_id": hold.id},
    )
    return HoldResult(allowed=True, hold=hold, available=available)


def release_hold(session: Session, *, organization_id: str, hold_id: str) -> CreditHold:
    """End an active hold without consuming anything; its credits become available again.

    Releasing a hold that already ended changes nothing and returns it as it is.
    """
    hold = get_hold(session, organization_id, hold_id)
    if hold.status != "active":
        return hold

    state = _open_account(session, organization_id, hold.customer_id, hold.credits_currency_id)
    if hold in state.holds:
        hold.status = "released"
        hold.ended_at = state.now
        state.holds.remove(hold)
        state.settle_pending()
        log.info("ledger.hold_released", extra={"organization_id": organization_id, "hold_id": hold.id})
    state.finish("hold_release")
    return hold
