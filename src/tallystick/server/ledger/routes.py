"""HTTP routes of the credit ledger: balances, grants, pending consumption, transactions.

Holds have their own module, hold_routes."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tallystick.server import clock
from tallystick.server.billing.renewals import refresh_for_read
from tallystick.server.billing.test_clocks import customer_time
from tallystick.server.customers import service as customers
from tallystick.server.db import Store
from tallystick.server.deps import (
    CurrentPrincipal,
    DbSession,
    ReadSession,
    authenticate,
)
from tallystick.server.errors import bad_request, not_found
from tallystick.server.filters import ExternalCustomerFilter, parse_choice_filter, parse_date_filter
from tallystick.server.ledger import balance_read, queries, service
from tallystick.server.ledger.bodies import body_schema, exact_json_body
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
    PendingConsumptionListOut,
    PendingConsumptionOut,
    ProductRef,
    credits_text,
    unit_value_text,
)
from tallystick.server.models import (
    CreditCurrency,
    CreditGrant,
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

GrantBody = Annotated[GrantCreate, Depends(exact_json_body(GrantCreate))]


def _currency_by_key(session: Session, organization_id: str, key: str) -> CreditCurrency:
    currency = queries.find_currency_by_key(session, organization_id, key)
    if currency is None:
        raise bad_request("creditCurrencyKey", "no credit currency with this key", key)
    if currency.status != "active":
        raise bad_request("creditCurrencyKey", "the credit currency is archived", key)
    return currency


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
                unit_value=unit_value_text(item.grant.unit_value),
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
    unit_value = service.check_unit_value("unitValue", body.unit_value)

    now = clock.now()
    starts_at = body.starts_at
    if starts_at is not None and starts_at > now + START_CLOCK_SKEW:
        raise bad_request("startsAt", "must not be in the future", starts_at)
    if starts_at is not None and starts_at > now:
        starts_at = now
    if body.expires_at is not None and body.expires_at <= now:
        raise bad_request("expiresAt", "must be in the future", body.expires_at)

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
                unit_value=unit_value,
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
    """Return the grant an idempotency key created, after checking that the retry requests the same grant.

    The same grant means the same customer, currency, amount and unit value, since these decide
    what was granted and what it is worth. A missing unit value equals 0. Other fields, such as
    `expiresAt`, may differ, and the retry gets the first grant as it was stored.
    """
    same = (
        earlier.customer_id == customer.id
        and earlier.credits_currency_id == currency.id
        and earlier.amount == body.amount
        and (earlier.unit_value or 0) == (body.unit_value or 0)
    )
    if not same:
        raise bad_request(
            "idempotencyKey",
            f"was already used for grant {earlier.id}, of another customer, currency, amount or unit value; "
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
            unit_value=unit_value_text(grant.unit_value),
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
with a key already used returns that grant with `created` false and status 200, unless it asks
for another customer, currency, amount or unit value (a 400).

Optional `unitValue` (not in the Paid API) is the USD value of one credit of this grant, such
as "0.05" for a pack of 100 credits sold for $5: a decimal string or number from 0 to 1,000,000
with at most 12 decimal places. Signal margins count each credit drawn from the grant as that
much revenue. Absent or null counts as 0.
"""


@router.post(
    "/customers/external/{external_id}/credits/grants",
    status_code=201,
    response_model=GrantResponseOut,
    responses={200: {"model": GrantResponseOut, "description": "A replay: the grant stored before with this idempotency key."}},
    openapi_extra=body_schema(GrantCreate),
    description=_GRANT_DOC,
)
def grant_credits_by_external_id(
    external_id: str, body: GrantBody, principal: CurrentPrincipal, session: DbSession
) -> JSONResponse:
    customer = customers.get_customer_by_external_id(session, principal.organization_id, external_id)
    with customer_time(session, customer.id):
        return _grant(session, customer, body)


@router.post(
    "/customers/{customer_id}/credits/grants",
    status_code=201,
    response_model=GrantResponseOut,
    responses={200: {"model": GrantResponseOut, "description": "A replay: the grant stored before with this idempotency key."}},
    openapi_extra=body_schema(GrantCreate),
    description=_GRANT_DOC,
)
def grant_credits(customer_id: str, body: GrantBody, principal: CurrentPrincipal, session: DbSession) -> JSONResponse:
    customer = customers.get_customer(session, principal.organization_id, customer_id)
    with customer_time(session, customer.id):
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
    external_customer_id: ExternalCustomerFilter = None,
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
