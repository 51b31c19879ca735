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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tallystick.server import clock, events
from tallystick.server.errors import ApiError, bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.ledger import queries
from tallystick.server.ledger.accounts import (
    ZERO,
    AccountKey,
    LockedAccount,
    draw_order,
    is_active,
    open_accounts,
    write_rows,
)
from tallystick.server.models import (
    CreditCurrency,
    CreditGrant,
    CreditHold,
    PendingConsumption,
)
from tallystick.server.ledger.schemas import MAX_UNIT_VALUE, UNIT_VALUE_PLACES
from tallystick.server.models.types import CREDIT_PLACES
from tallystick.server.webhooks.low_balance import format_credits

if TYPE_CHECKING:
    # A runtime import would be circular: balance_read imports billing, which imports this.
    from tallystick.server.ledger.balance_read import AccountCredits, BalanceCurrency, BalanceGrant

log = logging.getLogger(__name__)

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
    grant: CreditGrant | BalanceGrant
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
        raise bad_request(field_name, "must be a finite number", amount)
    if amount < 0 or (amount == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "greater than 0"
        raise bad_request(field_name, f"must be {bound}", amount)
    if amount > MAX_CREDIT_AMOUNT:
        raise bad_request(field_name, f"must be at most {MAX_CREDIT_AMOUNT} credits", amount)
    if _decimal_places(amount) > places:
        raise bad_request(field_name, f"must have at most {places} decimal places", amount)


def check_unit_value(field_name: str, value: Decimal | None) -> Decimal | None:
    """Check a grant's USD value of one credit and return it, raising the API's 400 when invalid.

    Valid values are None (not given) and finite decimals from 0 to MAX_UNIT_VALUE with at
    most UNIT_VALUE_PLACES decimal places.
    """
    if value is None:
        return None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise bad_request(field_name, "must be a finite number", value)
    if value < 0:
        raise bad_request(field_name, "must be at least 0", value)
    if value > MAX_UNIT_VALUE:
        raise bad_request(field_name, f"must be at most {MAX_UNIT_VALUE} USD", value)
    if _decimal_places(value) > UNIT_VALUE_PLACES:
        raise bad_request(field_name, f"must have at most {UNIT_VALUE_PLACES} decimal places", value)
    # -0 passes the checks above; without its sign it is shown as 0.
    return value.copy_abs()


def _decimal_places(amount: Decimal) -> int:
    # Counted from the digits, because normalize() rounds a value below the context's smallest
    # exponent (such as 1e-1000030) to 0, which has no decimal places.
    _, digits, exponent = amount.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    if not significant:
        return 0
    trailing_zeros = len(digits) - len(significant)
    return max(0, -(int(exponent) + trailing_zeros))


# Reads


def balance_view(
    session: Session, organization_id: str, customer_id: str, currency_id: str, at: datetime
) -> BalanceView:
    """Compute the balance at `at` from stored rows, as the next write would leave it."""
    grants = queries.open_grants(session, organization_id, customer_id, currency_id)
    holds = [
        (hold.reserved, hold.expires_at)
        for hold in queries.active_holds(session, organization_id, customer_id, currency_id)
    ]
    pending = [row.remaining for row in queries.unsettled_pending(session, organization_id, customer_id, currency_id)]
    return _balance_of(grants, holds, pending, at)


def _balance_of(
    grants: Sequence[CreditGrant | BalanceGrant],
    holds: Iterable[tuple[Decimal, datetime]],
    pending: Iterable[Decimal],
    at: datetime,
) -> BalanceView:
    """Compute a balance from an account's open grants, active holds and unsettled pending consumption.

    `holds` gives each hold's reserved credits and expiry, `pending` each remaining amount.
    Expiries and hold expiries that no write has swept yet are applied here on the fly, so a
    read is right at any instant. Held credits and pending consumption are assigned to grants
    in draw order, so the grants' available amounts add up to the balance's available.
    """
    active = draw_order([grant for grant in grants if is_active(grant, at)])
    held = sum((reserved for reserved, expires_at in holds if expires_at > at), ZERO)
    pending_total = sum(pending, ZERO)
    spoken_for = held + pending_total

    views: list[GrantView] = []
    for grant in active:
        assigned = min(grant.remaining, spoken_for)
        spoken_for -= assigned
        views.append(GrantView(grant=grant, available=grant.remaining - assigned))

    total = sum((grant.amount for grant in active), ZERO)
    remaining = sum((grant.remaining for grant in active), ZERO)
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


def account_balances(
    accounts: Iterable[AccountCredits], at: datetime
) -> list[tuple[BalanceCurrency, BalanceView]]:
    """Compute the balances at `at` of accounts loaded by `balance_read.load_customer_credits`."""
    return [(account.currency, _balance_of(account.grants, account.holds, account.pending, at)) for account in accounts]


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


@dataclass(frozen=True)
class ConsumptionRequest:
    """One consumption of a batch, with the arguments that `consume` takes."""

    customer_id: str
    currency_id: str
    amount: Decimal
    signal_id: str | None
    event_name: str | None
    product_id: str | None
    occurred_at: datetime
    hold_id: str | None = None
    order_id: str | None = None
    # The time of a customer on a test clock: the account's grants and expiries are judged at
    # it instead of at clock.now(). Every request of one account must carry the same value.
    now: datetime | None = None


def lock_accounts(session: Session, organization_id: str, accounts: Iterable[tuple[str, str]]) -> None:
    """Lock (customer id, currency id) accounts until the transaction ends, creating missing ones.

    A transaction that consumes for several customers, or locks before other work, must lock
    their accounts up front in sorted order, the order of every ledger write: two transactions
    that lock the same accounts in different orders can deadlock on PostgreSQL.
    """
    queries.lock_account_rows(session, organization_id, sorted(set(accounts)))


def _open_account(
    session: Session,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    locked: queries.AccountRow | None = None,
) -> LockedAccount:
    """Lock the account (unless `locked` is its row, locked already), load its grants and holds,
    sweep expiries and settle pending."""
    key = (customer_id, currency_id)
    return open_accounts(session, organization_id, [key], clock.now(), locked=locked)[key]


def _finish(
    state: LockedAccount, cause: str, *, thresholds: dict[str, Decimal | None] | None = None, **ids: str | None
) -> Decimal:
    """Write the account's rows and record the balance events of this write; return available."""
    write_rows(state.session, [state])
    return state.record_events(cause, thresholds=thresholds, **ids)


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
    now: datetime | None = None,
) -> ConsumptionResult:
    """Consume `amount` credits, drawing grants in order; record the uncovered rest as pending.

    With `hold_id`, the hold is settled first: its reserved credits become this consumption's,
    and what it does not use is released. A hold that already ended (expired, released or
    settled by another consumption) is ignored and the consumption draws from free credits.
    A hold of another customer or currency, or an unknown hold, raises a 400 naming holdId.
    Emits billing-credits-depleted when this consumption takes available to zero.
    """
    request = ConsumptionRequest(
        customer_id=customer_id,
        currency_id=currency_id,
        amount=amount,
        signal_id=signal_id,
        event_name=event_name,
        product_id=product_id,
        occurred_at=occurred_at,
        hold_id=hold_id,
        order_id=order_id,
        now=now,
    )
    [result] = _consume_requests(session, organization_id, [request])
    if isinstance(result, ApiError):
        raise result
    return result


def consume_batch(
    session: Session, *, organization_id: str, requests: Sequence[ConsumptionRequest]
) -> list[ConsumptionResult | ApiError]:
    """Consume for many requests at once; return one result per request, in order.

    Each request gets the result that `consume` would give it if the requests ran one after
    another in the order given, and the same ledger entries, pending consumption and events.
    A request that `consume` would reject with a 400 (an amount out of range, an unknown hold,
    a hold of another account) gets that error in its place and writes nothing, and the others
    go on. The difference is the cost: each account is locked once, in (customer, currency)
    order, its grants, holds and pending consumption are loaded with one query per table for
    the whole batch, and the new rows are inserted with one statement per table.
    """
    return _consume_requests(session, organization_id, requests)


def _consume_requests(
    session: Session, organization_id: str, requests: Sequence[ConsumptionRequest]
) -> list[ConsumptionResult | ApiError]:
    results: list[ConsumptionResult | ApiError | None] = [None] * len(requests)
    holds = queries.find_holds(session, organization_id, (r.hold_id for r in requests if r.hold_id))

    by_account: dict[AccountKey, list[int]] = {}
    for index, request in enumerate(requests):
        try:
            check_credit_amount("amount", request.amount, allow_zero=True)
            _check_hold(request, holds.get(request.hold_id) if request.hold_id else None)
        except ApiError as error:
            results[index] = error
            continue
        by_account.setdefault((request.customer_id, request.currency_id), []).append(index)

    if by_account:
        now = clock.now()
        account_times = {
            key: requests[indexes[0]].now for key, indexes in by_account.items() if requests[indexes[0]].now is not None
        }
        # One request alone loads pending consumption only when free credits can settle it.
        states = open_accounts(
            session, organization_id, by_account, now, load_pending=len(requests) > 1, account_times=account_times
        )
        # Loaded before any consumption, for one request too: a threshold query in the middle
        # of the write would autoflush the changed grants and account through the ORM, one
        # UPDATE each, before `write_rows` updates the grants again.
        thresholds = queries.low_balance_thresholds(session, organization_id, {key[1] for key in by_account})
        overages: list[tuple[LockedAccount, list[tuple[ConsumptionRequest, Decimal]]]] = []
        for key in sorted(by_account):
            state = states[key]
            uncovered: list[tuple[ConsumptionRequest, Decimal]] = []
            for index in by_account[key]:
                request = requests[index]
                hold = holds.get(request.hold_id) if request.hold_id else None
                result = _consume_locked(state, request, hold, thresholds)
                results[index] = result
                if result.pending > 0:
                    uncovered.append((request, result.pending))
            if uncovered:
                overages.append((state, uncovered))
        write_rows(session, states.values())
        # After the rows are written: recording an event flushes the session.
        for state, uncovered in overages:
            _record_overage(state, uncovered)

    return [result for result in results if result is not None]


# Signal ids listed in one billing-overage-incurred event; `signalCount` counts them all.
MAX_OVERAGE_SIGNAL_IDS = 100


def _record_overage(state: LockedAccount, uncovered: list[tuple[ConsumptionRequest, Decimal]]) -> None:
    """Record one billing-overage-incurred event for the consumptions of one write that credits
    did not cover, with the total they left pending."""
    total = sum((amount for _, amount in uncovered), ZERO)
    signal_ids = [request.signal_id for request, _ in uncovered if request.signal_id]
    payload = {
        "customerId": state.customer_id,
        "creditsCurrencyId": state.currency_id,
        "overage": format_credits(total),
        "signalCount": len(signal_ids),
        "signalIds": signal_ids[:MAX_OVERAGE_SIGNAL_IDS],
        "eventNames": sorted({request.event_name for request, _ in uncovered if request.event_name}),
    }
    events.record_event(state.session, state.organization_id, events.OVERAGE_INCURRED, payload)


def _check_hold(request: ConsumptionRequest, hold: CreditHold | None) -> None:
    if request.hold_id is None:
        return
    if hold is None:
        raise bad_request("holdId", "no credit hold with this id", request.hold_id)
    if hold.customer_id != request.customer_id or hold.credits_currency_id != request.currency_id:
        raise bad_request(
            "holdId", "the hold belongs to another customer or credit currency", request.hold_id
        )


def _consume_locked(
    state: LockedAccount,
    request: ConsumptionRequest,
    hold: CreditHold | None,
    thresholds: dict[str, Decimal | None] | None,
) -> ConsumptionResult:
    """Apply one consumption to a locked account, buffering its rows; see `consume`."""
    if hold is not None:
        state.end_hold(hold.id, "settled", signal_id=request.signal_id)

    cause = {
        "signal_id": request.signal_id,
        "event_name": request.event_name,
        "product_id": request.product_id,
        "order_id": request.order_id,
        "hold_id": request.hold_id,
    }
    covered = state.draw(min(request.amount, max(ZERO, state.available())), **cause)

    uncovered = request.amount - covered
    if uncovered > 0:
        state.add_pending(
            PendingConsumption(
                id=new_id("pending_consumption"),
                organization_id=state.organization_id,
                customer_id=state.customer_id,
                credits_currency_id=state.currency_id,
                amount=uncovered,
                remaining=uncovered,
                signal_id=request.signal_id,
                event_name=request.event_name,
                product_id=request.product_id,
                order_id=request.order_id,
                occurred_at=request.occurred_at,
                settled_at=None,
                sequence=state.next_sequence(),
                created_at=state.now,
            )
        )
        log.info(
            "ledger.consumption_pending",
            extra={
                "organization_id": state.organization_id,
                "customer_id": state.customer_id,
                "signal_id": request.signal_id,
                "pending": str(uncovered),
            },
        )

    # Credits a settled hold did not use go to older pending consumption first.
    if hold is not None:
        state.settle_pending()

    available = state.record_events("consumption", thresholds=thresholds, signalId=request.signal_id)
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
    idempotency_key: str | None = None,
    unit_value: Decimal | None = None,
) -> CreditGrant:
    """Create a grant, write its ledger entry, then settle pending consumption oldest first.

    `starts_at` defaults to now; a grant starting later counts from then on (and settles
    pending consumption at the first write after it starts). `priority`: lower is drawn first.
    `source` is one of GRANT_SOURCES; an "adjustment" grant writes an adjustment entry.
    `origin_code` is the wire originCode of its entries (defaults to `source`). `unit_value`
    is the USD value of one credit, which margins use unless the grant has an `order_id`.
    """
    check_credit_amount("amount", amount)
    unit_value = check_unit_value("unitValue", unit_value)
    if source not in GRANT_SOURCES:
        raise bad_request("source", f"must be one of {', '.join(GRANT_SOURCES)}", source)

    starts_at = starts_at or clock.now()
    if expires_at is not None and expires_at <= starts_at:
        raise bad_request("expiresAt", "must be after startsAt", expires_at)

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
        idempotency_key=idempotency_key,
        unit_value=unit_value,
    )
    session.add(created)
    entry_type = "adjustment" if source == "adjustment" else "grant"
    state.add_entry(created, entry_type, amount, effective_at=starts_at, description=description)
    state.grants.append(created)
    state.changed_grants()
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
    _finish(state, "grant", grantId=created.id)
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
        raise bad_request("amount", f"only {free} credits are available to remove", amount)
    state.draw(amount, entry_type="adjustment", description=description)
    return _finish(state, "adjustment")


def sweep_account(
    session: Session, *, organization_id: str, customer_id: str, currency_id: str
) -> Decimal:
    """Record expiries due by now, end expired holds and settle pending consumption.

    Every ledger write does this first anyway; calling it alone brings the stored rows up to
    date for an account that nothing else touches. Returns the available credits.
    """
    state = _open_account(session, organization_id, customer_id, currency_id)
    return _finish(state, "sweep")


def check_hold_request(amount: Decimal, ttl_seconds: int) -> None:
    """Raise the API's 400 unless `amount` and `ttl_seconds` (1 to 86400) are valid for a hold."""
    check_credit_amount("amount", amount)
    if not 1 <= ttl_seconds <= MAX_HOLD_TTL_SECONDS:
        raise bad_request(
            "ttlSeconds", f"must be between 1 and {MAX_HOLD_TTL_SECONDS} seconds", ttl_seconds
        )


def place_hold(
    session: Session,
    *,
    organization_id: str,
    customer_id: str,
    currency_id: str,
    amount: Decimal,
    ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS,
    thresholds: dict[str, Decimal | None] | None = None,
    locked: queries.AccountRow | None = None,
    idempotency_key: str | None = None,
) -> HoldResult:
    """Reserve `amount` credits if that many are available; deny, reserving nothing, otherwise.

    The check and the reservation happen under the account lock, so two parallel holds (or a
    hold and a consumption) can never both get the last credit. `thresholds`, when the caller
    has loaded the currency's low-balance threshold, and `locked`, when it has locked the
    account, each save the write a query. A placed hold stores `idempotency_key`. Raises
    IntegrityError when another hold of the organization already has that key. A denied
    request stores nothing, so its key stays free.
    """
    check_hold_request(amount, ttl_seconds)

    state = _open_account(session, organization_id, customer_id, currency_id, locked)
    free = state.available()
    if free < amount:
        _finish(state, "hold", thresholds=thresholds)
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
        idempotency_key=idempotency_key,
    )
    state.add_hold(hold)
    available = _finish(state, "hold", thresholds=thresholds, holdId=hold.id)
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
    if state.end_hold(hold.id, "released") is not None:
        state.settle_pending()
        log.info("ledger.hold_released", extra={"organization_id": organization_id, "hold_id": hold.id})
    # The hold as this write leaves it: released, or expired by the write's sweep.
    ended = state.changed_holds.get(hold.id)
    _finish(state, "hold_release")
    if ended is not None:
        # `write_rows` stored the change; set as committed state, the ORM's flush leaves it be.
        for column in ("status", "reserved", "ended_at"):
            set_committed_value(hold, column, getattr(ended, column))
    return hold
