"""HTTP routes of the credit ledger: balances, grants, pending consumption, transactions, holds."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tallystick.server import clock
from tallystick.server.billing.renewals import refresh_for_read
from tallystick.server.billing.test_clocks import customer_clock_time
from tallystick.server.customers import service as customers
from tallystick.server.db import Store
from tallystick.server.deps import (
    CurrentPrincipal,
    DbSession,
    ReadSession,
    authenticate,
)
from tallystick.server.errors import (
    ApiError,
    bad_request,
    not_found,
    validation_error_to_api_error,
)
from tallystick.server.filters import parse_choice_filter, parse_date_filter
from tallystick.server.ledger import balance_read, queries, service
from tallystick.server.ledger.schemas import (
    GRANT_AMOUNT_PLACES,
    TRANSACTION_TYPES,
    CreditBalanceListOut,
    CreditBalanceOut,
    CreditGrantOut,
    CreditTransactionListOut,
    CreditTransactionOut,
    CurrencyRef,
    CustomerRef,
    GrantCreate,
    GrantResponseOut,
    GrantResultOut,
    HoldCreate,
    HoldOut,
    HoldPlacedOut,
    PendingConsumptionListOut,
    PendingConsumptionOut,
    ProductRef,
    credits_text,
)
from tallystick.server.models import (
    CreditCurrency,
    CreditGrant,
    CreditHold,
    Customer,
    LedgerEntry,
    Product,
)
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, decimal_to_number

log = logging.getLogger(__name__)

router = Router(tags=["credits"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)

# How far in the future a grant's startsAt may be, to absorb clock skew between the client and
# this server; such a grant starts now.
START_CLOCK_SKEW = timedelta(seconds=60)

HOLDS_DESCRIPTION = """\
Reserve credits before an expensive action (such as an LLM call), so that two parallel requests
can never both pass a balance check for the last credit. Not part of the Paid API.

1. `POST .../credits/holds` with `{"creditCurrencyKey", "amount", "ttlSeconds"?}`. When at least
   `amount` credits are available the hold reserves them (`allowed: true`, status 201, a
   `holdId`); otherwise nothing is reserved (`allowed: false`, status 200) and `available` says
   what is left. Reserved credits stop counting as available until the hold ends.
2. Do the work, then send its signal with `holdId` set. The signal's consumption draws the held
   credits first and releases what it does not use. A consumption larger than the hold draws
   the rest from free credits and records any uncovered part as pending consumption.
3. If the work is abandoned, `DELETE /credits/holds/{holdId}` releases the credits. A hold that
   is neither settled nor released expires after `ttlSeconds` (default 300, at most 86400).

An optional `idempotencyKey` (1 to 255 characters, unique per organization) makes a retry of
step 1 safe. A request whose key already placed a hold reserves nothing and returns that hold
again: `allowed: true`, the same `holdId` and `expiresAt`, status 201, whatever the hold's
status is now (`GET /credits/holds/{holdId}` shows it). `available` is then the credits
available at the retry. The retry must name the same customer, currency and `amount`, or it
gets a 400 naming `idempotencyKey`. A denied request does not use its key up, because it
reserved nothing. A retry with that key is checked against the balance again and may be allowed.
"""

ModelT = TypeVar("ModelT", bound=BaseModel)


def exact_json_body(model: type[ModelT]) -> Callable[[Request], Coroutine[Any, Any, ModelT]]:
    """Build a dependency that parses the body with JSON numbers read as exact Decimals.

    FastAPI's own parsing turns 0.1 into a float first, which cannot hold every decimal credit
    amount exactly, so credit amounts are parsed here instead.
    """

    async def parse(request: Request) -> ModelT:
        raw = await request.body()
        try:
            document = json.loads(raw or b"null", parse_float=Decimal)
        except ValueError as error:
            raise ApiError(400, "invalid_json", "Request body is not valid JSON", details=str(error)) from None
        if not isinstance(document, dict):
            raise ApiError(400, "invalid_json", "Request body must be a JSON object")
        try:
            return model.model_validate(document)
        except ValidationError as error:
            raise validation_error_to_api_error(list(error.errors()), "body") from None

    return parse


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Describe a body parsed by `exact_json_body` in the OpenAPI document."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema(by_alias=True)}},
        }
    }


GrantBody = Annotated[GrantCreate, Depends(exact_json_body(GrantCreate))]
HoldBody = Annotated[HoldCreate, Depends(exact_json_body(HoldCreate))]


def _currency_by_key(session: Session, organization_id: str, key: str) -> CreditCurrency:
    currency = queries.find_currency_by_key(session, organization_id, key)
    if currency is None:
        raise bad_request("creditCurrencyKey", "no credit currency with this key", key)
    if currency.status != "active":
        raise bad_request("creditCurrencyKey", "the credit currency is archived", key)
    return currency


def _at_customer_time(session: Session, customer_id: str) -> AbstractContextManager[None]:
    """Return a context in which `clock.now()` is the customer's time.

    A customer on a test clock lives at the clock's frozen time. Its grants, holds and their
    expiries must be judged there, as its signals and renewals are, or a write at the real time
    would find the clock's current grants expired and sweep them.
    """
    clock_time = customer_clock_time(session, customer_id)
    return clock.at(clock_time) if clock_time is not None else nullcontext()


# Balances


async def _balances(
    request: Request, organization_id: str, *, customer_id: str | None = None, external_id: str | None = None
) -> CreditBalanceListOut:
    # The route is async and reads in one worker thread, which opens, uses and closes the
    # session: one thread hop per read, where a sync route with a session dependency takes two.
    store: Store = request.app.state.store
    found, now = await run_in_threadpool(
        _load_balances, store, organization_id, customer_id=customer_id, external_id=external_id
    )
    if found is None:
        if external_id is not None:
            raise not_found("Customer", "externalId", external_id)
        raise not_found("Customer", "id", customer_id)
    return _balance_list(found, now)


def _load_balances(
    store: Store, organization_id: str, *, customer_id: str | None, external_id: str | None
) -> tuple[balance_read.CustomerCredits | None, datetime]:
    read_now = clock.now()
    with store.statement_reads() as session:
        found = balance_read.load_customer_credits(
            session, organization_id, read_now, customer_id=customer_id, external_id=external_id
        )
        if found is None or not found.renewal_due:
            return found, (found.clock_time if found else None) or read_now
        # Billing periods that started since the last renewal are granted first, so a read
        # never shows a stale period. The renewal commits before the rows are loaded again.
        now = refresh_for_read(store, session, organization_id, found.customer_id)
        return balance_read.load_customer_credits(session, organization_id, now, customer_id=found.customer_id), now


def _balance_list(found: balance_read.CustomerCredits, now: datetime) -> CreditBalanceListOut:
    balances = []
    for currency, view in service.account_balances(found.accounts, now):
        grants = [
            CreditGrantOut(
                id=item.grant.id,
                available=decimal_to_number(item.available),
                used=decimal_to_number(item.grant.amount - item.grant.remaining),
                total=decimal_to_number(item.grant.amount),
                available_decimal=credits_text(item.available),
                used_decimal=credits_text(item.grant.amount - item.grant.remaining),
                total_decimal=credits_text(item.grant.amount),
                period_start=item.grant.period_start or item.grant.starts_at,
                period_end=item.grant.period_end or item.grant.expires_at,
                expires_at=item.grant.expires_at,
                starts_at=item.grant.starts_at,
                priority=item.grant.priority,
                source=item.grant.source,
                origin_code=item.grant.origin_code,
            )
            for item in view.grants
        ]
        ends = [grant.period_end for grant in grants]
        balances.append(
            CreditBalanceOut(
                credits_currency_id=currency.id,
                currency_name=currency.name,
                currency_key=currency.key,
                available=decimal_to_number(view.available),
                used=decimal_to_number(view.used),
                total=decimal_to_number(view.total),
                available_decimal=credits_text(view.available),
                used_decimal=credits_text(view.used),
                total_decimal=credits_text(view.total),
                held_decimal=credits_text(view.held),
                pending_decimal=credits_text(view.pending),
                period_start=min((grant.period_start for grant in grants), default=None),
                # An open-ended grant makes the pool open-ended.
                period_end=None if not ends or None in ends else max(ends),  # type: ignore[type-var]
                grants=grants,
            )
        )
    return CreditBalanceListOut(data=balances)


@router.get("/customers/external/{external_id}/credits/balances", response_model=CreditBalanceListOut)
async def get_balances_by_external_id(
    external_id: str, request: Request, principal: CurrentPrincipal
) -> CreditBalanceListOut:
    """List the customer's credit balance in each credit currency, with its active grants."""
    return await _balances(request, principal.organization_id, external_id=external_id)


@router.get("/customers/{customer_id}/credits/balances", response_model=CreditBalanceListOut)
async def get_balances(customer_id: str, request: Request, principal: CurrentPrincipal) -> CreditBalanceListOut:
    """List the customer's credit balance in each credit currency, with its active grants.

    `available` is what the customer can spend now: active grants' remaining credits minus
    credits reserved by holds and unsettled pending consumption. Each grant's `available` is
    its share after holds and pending consumption are assigned to grants in draw order.
    """
    return await _balances(request, principal.organization_id, customer_id=customer_id)


# Grants


def _grant(session: Session, customer: Customer, body: GrantBody) -> JSONResponse:
    currency = _currency_by_key(session, customer.organization_id, body.credit_currency_key)
    service.check_credit_amount("amount", body.amount, places=GRANT_AMOUNT_PLACES)

    now = clock.now()
    starts_at = body.starts_at
    if starts_at is not None and starts_at > now + START_CLOCK_SKEW:
        raise bad_request("startsAt", "must not be in the future", starts_at.isoformat())
    if starts_at is not None and starts_at > now:
        starts_at = now
    if body.expires_at is not None and body.expires_at <= now:
        raise bad_request("expiresAt", "must be in the future", body.expires_at.isoformat())

    key = body.idempotency_key
    if key is not None:
        earlier = queries.find_grant_by_idempotency_key(session, customer.organization_id, key)
        if earlier is not None:
            return _grant_response(_replayed_grant(earlier, customer, currency, body), customer, currency, created=False)
    try:
        # A savepoint, so a concurrent request that stored the same key first leaves this
        # transaction usable for reading its grant.
        with session.begin_nested():
            created = service.grant(
                session,
                organization_id=customer.organization_id,
                customer_id=customer.id,
                currency_id=currency.id,
                amount=body.amount,
                starts_at=starts_at,
                expires_at=body.expires_at,
                priority=body.priority or 0,
                source="manual",
                origin_code="manual",
                description=body.description,
                idempotency_key=key,
            )
    except IntegrityError:
        earlier = queries.find_grant_by_idempotency_key(session, customer.organization_id, key) if key else None
        if earlier is None:
            raise
        log.info(
            "ledger.grant_replayed_after_conflict",
            extra={"organization_id": customer.organization_id, "grant_id": earlier.id},
        )
        return _grant_response(_replayed_grant(earlier, customer, currency, body), customer, currency, created=False)
    return _grant_response(created, customer, currency, created=True)


def _replayed_grant(earlier: CreditGrant, customer: Customer, currency: CreditCurrency, body: GrantCreate) -> CreditGrant:
    """Return the grant an idempotency key created, after checking that the retry requests the same grant."""
    same = (
        earlier.customer_id == customer.id
        and earlier.credits_currency_id == currency.id
        and earlier.amount == body.amount
    )
    if not same:
        raise bad_request(
            "idempotencyKey",
            f"was already used for grant {earlier.id}, of another customer, currency or amount; "
            "send a new key for a new grant",
            body.idempotency_key,
        )
    return earlier


def _grant_response(grant: CreditGrant, customer: Customer, currency: CreditCurrency, *, created: bool) -> JSONResponse:
    response = GrantResponseOut(
        created=created,
        customer=CustomerRef(id=customer.id, external_id=customer.external_id),
        credit_currency=CurrencyRef(key=currency.key, name=currency.name),
        grant=GrantResultOut(
            id=grant.id,
            amount=int(grant.amount),
            amount_decimal=credits_text(grant.amount),
            starts_at=grant.starts_at,
            expires_at=grant.expires_at,
            status="active",
            priority=grant.priority,
            source=grant.source,
        ),
        created_at=grant.created_at,
    )
    # A replay returns 200 because nothing was created this time.
    return JSONResponse(response.model_dump(mode="json", by_alias=True), status_code=201 if created else 200)


_GRANT_DOC = """\
Grant credits to the customer now, in an active credit currency given by key.

`amount` takes at most 6 decimal places. `startsAt` defaults to now and must not be in the
future (up to 60 seconds of clock skew is accepted and treated as now); `expiresAt` must be in
the future, or null for credits that never expire. A new grant first settles the customer's
pending consumption, oldest first. Optional `priority` (not in the Paid API) sets the draw
order: lower is drawn first; grants of equal priority are drawn earliest expiry first, then
oldest first. Optional `idempotencyKey` (not in the Paid API) makes retries safe: a request
with a key already used returns that grant with `created` false and status 200.
"""


@router.post(
    "/customers/external/{external_id}/credits/grants",
    status_code=201,
    response_model=GrantResponseOut,
    openapi_extra=_body_schema(GrantCreate),
    description=_GRANT_DOC,
)
def grant_credits_by_external_id(
    external_id: str, body: GrantBody, principal: CurrentPrincipal, session: DbSession
) -> JSONResponse:
    customer = customers.get_customer_by_external_id(session, principal.organization_id, external_id)
    with _at_customer_time(session, customer.id):
        return _grant(session, customer, body)


@router.post(
    "/customers/{customer_id}/credits/grants",
    status_code=201,
    response_model=GrantResponseOut,
    openapi_extra=_body_schema(GrantCreate),
    description=_GRANT_DOC,
)
def grant_credits(customer_id: str, body: GrantBody, principal: CurrentPrincipal, session: DbSession) -> JSONResponse:
    customer = customers.get_customer(session, principal.organization_id, customer_id)
    with _at_customer_time(session, customer.id):
        return _grant(session, customer, body)


# Pending consumption


def _pending(session: Session, customer: Customer, page: Page) -> PendingConsumptionListOut:
    rows, pagination = paginate(session, queries.pending_statement(customer.organization_id, customer.id), page)
    currencies = _by_id(session, CreditCurrency, {row.credits_currency_id for row in rows})
    data = []
    for row in rows:
        currency = currencies.get(row.credits_currency_id)
        data.append(
            PendingConsumptionOut(
                id=row.id,
                credits=int(row.remaining),
                credits_decimal=credits_text(row.remaining),
                amount_decimal=credits_text(row.amount),
                credit_currency=CurrencyRef(key=currency.key, name=currency.name) if currency else None,
                credits_currency_id=row.credits_currency_id,
                order_id=row.order_id,
                event_name=row.event_name,
                signal_id=row.signal_id,
                product_id=row.product_id,
                occurred_at=row.occurred_at,
                recorded_at=row.created_at,
            )
        )
    return PendingConsumptionListOut(data=data, pagination=pagination)


_PENDING_DOC = """\
List the customer's unsettled pending consumption: credits that signals consumed while no
grant could cover them. Listed in settlement order (first recorded first), which is the
order in which the next grants settle them. `credits`/`creditsDecimal` are the part still unsettled.
"""


@router.get(
    "/customers/external/{external_id}/credits/pending-consumption",
    response_model=PendingConsumptionListOut,
    description=_PENDING_DOC,
)
def list_pending_by_external_id(
    external_id: str, principal: CurrentPrincipal, session: ReadSession, page: Page
) -> PendingConsumptionListOut:
    customer = customers.get_customer_by_external_id(session, principal.organization_id, external_id)
    return _pending(session, customer, page)


@router.get(
    "/customers/{customer_id}/credits/pending-consumption",
    response_model=PendingConsumptionListOut,
    description=_PENDING_DOC,
)
def list_pending(customer_id: str, principal: CurrentPrincipal, session: ReadSession, page: Page) -> PendingConsumptionListOut:
    customer = customers.get_customer(session, principal.organization_id, customer_id)
    return _pending(session, customer, page)


# Transactions


def _by_id(session: Session, model: Any, ids: set[str | None]) -> dict[str, Any]:
    """Load rows of `model` by primary key in one query."""
    present = {item for item in ids if item}
    if not present:
        return {}
    return {row.id: row for row in session.scalars(select(model).where(model.id.in_(present)))}


def _transaction_out(
    entry: LedgerEntry,
    customer: Customer,
    currency: CreditCurrency,
    grant: CreditGrant | None,
    product: Product | None,
) -> CreditTransactionOut:
    return CreditTransactionOut(
        id=entry.id,
        customer=CustomerRef(id=customer.id, external_id=customer.external_id),
        credit_currency=CurrencyRef(key=currency.key, name=currency.name),
        credits_currency_id=currency.id,
        type=entry.entry_type,
        amount=credits_text(entry.amount),
        origin_code=grant.origin_code if grant else "unknown",
        event_name=entry.event_name,
        signal_id=entry.signal_id,
        order_id=entry.order_id,
        product=ProductRef(id=product.id, external_id=product.external_id, name=product.name) if product else None,
        grant_id=entry.grant_id,
        hold_id=entry.hold_id,
        pending_consumption_id=entry.pending_consumption_id,
        effective_at=entry.effective_at,
        created_at=entry.created_at,
    )


@router.get("/credits/transactions", response_model=CreditTransactionListOut)
def list_transactions(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: Annotated[str | None, Query(alias="externalCustomerId")] = None,
    credits_currency_id: Annotated[str | None, Query(alias="creditsCurrencyId")] = None,
    credit_currency_key: Annotated[str | None, Query(alias="creditCurrencyKey")] = None,
    type_: Annotated[
        str | None, Query(alias="type", description="grant, spend, pendingGrant, expiry or adjustment.")
    ] = None,
    order_id: Annotated[str | None, Query(alias="orderId")] = None,
    created_at_from: Annotated[str | None, Query(alias="createdAtFrom")] = None,
    created_at_to: Annotated[str | None, Query(alias="createdAtTo")] = None,
) -> CreditTransactionListOut:
    """List credit ledger entries, newest first.

    Every change to a grant's credits is one entry: `grant` (+), `spend` (-, naming the signal,
    and the hold or pending consumption it settled), `expiry` (-, the unused remainder of an
    expired grant) and `adjustment` (+ or -). `pendingGrant` is accepted as a filter but
    tallystick records no such entries. `amount` is a signed decimal string.

    `externalCustomerId` selects the live customer with that external id, not a deleted one
    that had it. An external id without a live customer gives an empty list, as other unknown
    filter values do.
    """
    statement = queries.transactions_statement(
        principal.organization_id,
        customer_id=customer_id,
        external_customer_id=external_customer_id,
        currency_id=credits_currency_id,
        currency_key=credit_currency_key,
        entry_type=parse_choice_filter("type", type_, TRANSACTION_TYPES),
        order_id=order_id,
        created_from=parse_date_filter("createdAtFrom", created_at_from),
        created_to=parse_date_filter("createdAtTo", created_at_to, end_of_day=True),
    )
    entries, pagination = paginate(session, statement, page)

    customers_by_id = _by_id(session, Customer, {entry.customer_id for entry in entries})
    currencies = _by_id(session, CreditCurrency, {entry.credits_currency_id for entry in entries})
    grants = _by_id(session, CreditGrant, {entry.grant_id for entry in entries})
    products = _by_id(session, Product, {entry.product_id for entry in entries})
    data = [
        _transaction_out(
            entry,
            customers_by_id[entry.customer_id],
            currencies[entry.credits_currency_id],
            grants.get(entry.grant_id),
            products.get(entry.product_id or ""),
        )
        for entry in entries
    ]
    return CreditTransactionListOut(data=data, pagination=pagination)


# Holds


def _hold_out(hold: CreditHold) -> HoldOut:
    return HoldOut(
        id=hold.id,
        customer_id=hold.customer_id,
        credits_currency_id=hold.credits_currency_id,
        status=service.hold_status(hold, clock.now()),
        amount_decimal=credits_text(hold.amount),
        reserved_decimal=credits_text(hold.reserved),
        expires_at=hold.expires_at,
        settled_signal_id=hold.settled_signal_id,
        ended_at=hold.ended_at,
        created_at=hold.created_at,
    )


async def _place_hold(
    request: Request, organization_id: str, body: HoldCreate, *, customer_id: str | None = None, external_id: str | None = None
) -> JSONResponse:
    # Async, with the whole write in one worker thread, as the balance read does: a sync route
    # with a session dependency takes three thread hops (open, route, commit) instead of one.
    store: Store = request.app.state.store
    result = await run_in_threadpool(
        _write_hold, store, organization_id, body, customer_id=customer_id, external_id=external_id
    )
    response = HoldPlacedOut(
        allowed=result.allowed,
        hold_id=result.hold.id if result.hold else None,
        available=decimal_to_number(result.available),
        available_decimal=credits_text(result.available),
        amount_decimal=credits_text(body.amount),
        expires_at=result.hold.expires_at if result.hold else None,
    )
    status = 201 if result.allowed else 200
    return JSONResponse(response.model_dump(mode="json", by_alias=True), status_code=status)


def _write_hold(
    store: Store, organization_id: str, body: HoldCreate, *, customer_id: str | None, external_id: str | None
) -> service.HoldResult:
    """Place the hold in a transaction of its own, committed before the response is built.

    A request whose idempotency key already placed a hold gets that hold back instead.
    """
    ttl_seconds = service.DEFAULT_HOLD_TTL_SECONDS if body.ttl_seconds is None else body.ttl_seconds
    try:
        with store.transaction() as session:
            return _place_or_replay_hold(
                session, organization_id, body, ttl_seconds, customer_id=customer_id, external_id=external_id
            )
    except IntegrityError:
        if body.idempotency_key is None:
            raise

    # A concurrent request with the same key inserted its hold between this request's key lookup
    # and its insert, which the unique index rejected. The failed transaction was rolled back,
    # and a second one finds that hold and replays it. An IntegrityError with another cause is
    # expected to fail the second attempt too, which then raises it.
    with store.transaction() as session:
        result = _place_or_replay_hold(
            session, organization_id, body, ttl_seconds, customer_id=customer_id, external_id=external_id
        )
    log.info(
        "ledger.hold_replayed_after_conflict",
        extra={"organization_id": organization_id, "hold_id": result.hold.id if result.hold else None},
    )
    return result


def _place_or_replay_hold(
    session: Session,
    organization_id: str,
    body: HoldCreate,
    ttl_seconds: int,
    *,
    customer_id: str | None,
    external_id: str | None,
) -> service.HoldResult:
    currency_key = body.credit_currency_key
    # The account usually exists, and one statement then finds the customer and currency and
    # locks it. Otherwise the lookup runs alone and the write creates the account.
    found = queries.lock_hold_target(
        session, organization_id, currency_key, customer_id=customer_id, external_id=external_id
    )
    target, locked = found or (
        queries.find_hold_target(session, organization_id, currency_key, customer_id=customer_id, external_id=external_id),
        None,
    )
    if target is None:
        if external_id is not None:
            raise not_found("Customer", "externalId", external_id)
        raise not_found("Customer", "id", customer_id)
    if target.currency_id is None:
        raise bad_request("creditCurrencyKey", "no credit currency with this key", currency_key)
    if target.currency_status != "active":
        raise bad_request("creditCurrencyKey", "the credit currency is archived", currency_key)
    # Checked before the key lookup, so that an invalid retry gets the same 400 as the first request.
    service.check_hold_request(body.amount, ttl_seconds)

    # A customer on a test clock places its holds at the clock's time (see _at_customer_time).
    with clock.at(target.clock_time) if target.clock_time is not None else nullcontext():
        # Only a request with a key sends this lookup: a hold without one costs the target
        # lookup and the write alone.
        key = body.idempotency_key
        earlier = queries.find_hold_by_idempotency_key(session, organization_id, key) if key is not None else None
        if earlier is not None:
            return _replayed_hold(session, earlier, target.customer_id, target.currency_id, body)
        return service.place_hold(
            session,
            organization_id=organization_id,
            customer_id=target.customer_id,
            currency_id=target.currency_id,
            amount=body.amount,
            ttl_seconds=ttl_seconds,
            thresholds={target.currency_id: target.low_balance_threshold},
            locked=locked,
            idempotency_key=key,
        )


def _replayed_hold(
    session: Session, earlier: CreditHold, customer_id: str, currency_id: str, body: HoldCreate
) -> service.HoldResult:
    """Build the result of the hold that an idempotency key placed, without reserving again.

    The retry must request the same hold: same customer, currency and amount. The hold is
    returned as allowed whatever its status is now, with the credits available now, since
    the available credits right after the first request are not stored.
    """
    same = (
        earlier.customer_id == customer_id
        and earlier.credits_currency_id == currency_id
        and earlier.amount == body.amount
    )
    if not same:
        raise bad_request(
            "idempotencyKey",
            f"was already used for hold {earlier.id}, of another customer, currency or amount; "
            "send a new key for a new hold",
            body.idempotency_key,
        )
    available = service.balance(session, earlier.organization_id, customer_id, currency_id, clock.now())
    return service.HoldResult(allowed=True, hold=earlier, available=available)


@router.post(
    "/customers/external/{external_id}/credits/holds",
    response_model=HoldPlacedOut,
    status_code=201,
    responses={200: {"model": HoldPlacedOut, "description": "Denied: not enough credits."}},
    openapi_extra=_body_schema(HoldCreate),
    description=HOLDS_DESCRIPTION,
)
async def place_hold_by_external_id(
    external_id: str, body: HoldBody, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    return await _place_hold(request, principal.organization_id, body, external_id=external_id)


@router.post(
    "/customers/{customer_id}/credits/holds",
    response_model=HoldPlacedOut,
    status_code=201,
    responses={200: {"model": HoldPlacedOut, "description": "Denied: not enough credits."}},
    openapi_extra=_body_schema(HoldCreate),
    description=HOLDS_DESCRIPTION,
)
async def place_hold(customer_id: str, body: HoldBody, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    return await _place_hold(request, principal.organization_id, body, customer_id=customer_id)


@router.get("/credits/holds/{hold_id}", response_model=HoldOut)
def get_hold(hold_id: str, principal: CurrentPrincipal, session: ReadSession) -> HoldOut:
    """Return a credit hold; an active hold past its expiry reads as expired."""
    return _hold_out(service.get_hold(session, principal.organization_id, hold_id))


@router.delete("/credits/holds/{hold_id}", response_model=HoldOut)
def release_hold(hold_id: str, principal: CurrentPrincipal, session: DbSession) -> HoldOut:
    """Release an active hold so its credits become available again.

    Releasing a hold that already ended (settled, released or expired) changes nothing and
    returns it as it is.
    """
    customer_id = service.get_hold(session, principal.organization_id, hold_id).customer_id
    with _at_customer_time(session, customer_id):
        hold = service.release_hold(session, organization_id=principal.organization_id, hold_id=hold_id)
    return _hold_out(hold)
