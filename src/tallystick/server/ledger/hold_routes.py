"""HTTP routes of credit holds: place, read and release. Not part of the Paid API."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tallystick.server import clock
from tallystick.server.billing.test_clocks import customer_time
from tallystick.server.db import Store
from tallystick.server.deps import CurrentPrincipal, DbSession, ReadSession, authenticate
from tallystick.server.errors import bad_request, not_found
from tallystick.server.ledger import queries, service
from tallystick.server.ledger.bodies import body_schema, exact_json_body
from tallystick.server.ledger.schemas import HoldCreate, HoldOut, HoldPlacedOut, credits_text
from tallystick.server.models import CreditHold
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, decimal_to_number

log = logging.getLogger(__name__)

router = Router(tags=["credits"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)

HOLDS_DESCRIPTION = """\
Reserve credits before an expensive action (such as an LLM call), so that two parallel requests
can never both pass a balance check for the last credit. Not part of the Paid API.

1. `POST .../credits/holds` with `{"creditCurrencyKey", "amount", "ttlSeconds"?}`. When at least
   `amount` credits are available the hold reserves them (`allowed: true`, status 201, the
   hold's `id`, repeated as `holdId` for clients written before `id` was added); otherwise
   nothing is reserved (`allowed: false`, status 200, `id` and `holdId` null) and `available`
   is what is left. Reserved credits stop counting as available until the hold ends.
2. Do the work, then send its signal with `holdId` set to that id. The signal's consumption
   draws the held credits first and releases what it does not use. A consumption larger than
   the hold draws the rest from free credits and records any uncovered part as pending
   consumption.
3. If the work is abandoned, `DELETE /credits/holds/{id}` releases the credits. A hold that
   is neither settled nor released expires after `ttlSeconds` (default 300, at most 86400).

An optional `idempotencyKey` (1 to 255 characters, unique per organization) makes a retry of
step 1 safe. A request whose key already placed a hold reserves nothing and returns that hold
again: `allowed: true`, the same `id` and `expiresAt`, status 201, whatever the hold's
status is now (`GET /credits/holds/{id}` shows it). `available` is then the credits
available at the retry. The retry must name the same customer, currency and `amount`, or it
gets a 400 naming `idempotencyKey`. A denied request does not use its key up, because it
reserved nothing. A retry with that key is checked against the balance again and may be allowed.
"""

HoldBody = Annotated[HoldCreate, Depends(exact_json_body(HoldCreate))]


def _hold_out(hold: CreditHold) -> HoldOut:
    status = service.hold_status(hold, clock.now())
    # A hold past its expiry that no write has swept yet ended at its expiry, as a sweep records.
    ended_at = hold.expires_at if status == "expired" and hold.ended_at is None else hold.ended_at
    return HoldOut(
        id=hold.id,
        customer_id=hold.customer_id,
        credits_currency_id=hold.credits_currency_id,
        status=status,
        amount_decimal=credits_text(hold.amount),
        reserved_decimal=credits_text(hold.reserved),
        expires_at=hold.expires_at,
        settled_signal_id=hold.settled_signal_id,
        ended_at=ended_at,
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
    hold_id = result.hold.id if result.hold else None
    response = HoldPlacedOut(
        allowed=result.allowed,
        id=hold_id,
        hold_id=hold_id,
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
    # Checked before the key lookup, so that an invalid retry gets the same 400 as the first request.
    service.check_hold_request(body.amount, ttl_seconds)

    # A customer on a test clock places its holds at the clock's time (see customer_time).
    with clock.at(target.clock_time) if target.clock_time is not None else nullcontext():
        # Only a request with a key sends this lookup: a hold without one costs the target
        # lookup and the write alone.
        key = body.idempotency_key
        earlier = queries.find_hold_by_idempotency_key(session, organization_id, key) if key is not None else None
        if earlier is not None:
            # A retry gets its hold back even after the currency was archived since.
            return _replayed_hold(session, earlier, target.customer_id, target.currency_id, body)
        if target.currency_status != "active":
            raise bad_request("creditCurrencyKey", "the credit currency is archived", currency_key)
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
    openapi_extra=body_schema(HoldCreate),
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
    openapi_extra=body_schema(HoldCreate),
    description=HOLDS_DESCRIPTION,
)
async def place_hold(customer_id: str, body: HoldBody, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    return await _place_hold(request, principal.organization_id, body, customer_id=customer_id)


@router.get("/credits/holds/{hold_id}", response_model=HoldOut)
def get_hold(hold_id: str, principal: CurrentPrincipal, session: ReadSession) -> HoldOut:
    """Return a credit hold; an active hold past its expiry reads as expired.

    The expiry of a hold of a customer on a test clock is judged at the clock's time.
    """
    hold = service.get_hold(session, principal.organization_id, hold_id)
    with customer_time(session, hold.customer_id):
        return _hold_out(hold)


@router.delete("/credits/holds/{hold_id}", response_model=HoldOut)
def release_hold(hold_id: str, principal: CurrentPrincipal, session: DbSession) -> HoldOut:
    """Release an active hold so its credits become available again.

    Releasing a hold that already ended (settled, released or expired) changes nothing and
    returns it as it is.
    """
    customer_id = service.get_hold(session, principal.organization_id, hold_id).customer_id
    with customer_time(session, customer_id):
        hold = service.release_hold(session, organization_id=principal.organization_id, hold_id=hold_id)
        return _hold_out(hold)
