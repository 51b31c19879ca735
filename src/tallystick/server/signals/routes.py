"""HTTP routes of signals: bulk ingestion, listing and lookup by id."""

from __future__ import annotations

import dataclasses
import logging
import re
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Query, Request
from sqlalchemy.exc import OperationalError

from tallystick.server import clock
from tallystick.server.costs.margin import SignalMoney, margin_fields, signal_money
from tallystick.server.db import Store
from tallystick.server.deps import (
    CurrentPrincipal,
    Principal,
    ReadSession,
    authenticate,
)
from tallystick.server.errors import ApiError, not_found
from tallystick.server.filters import ExternalCustomerFilter, parse_date_filter
from tallystick.server.pagination import Page, pagination_body
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES
from tallystick.server.settings import Settings
from tallystick.server.signals import queries, service
from tallystick.server.signals.coalescing import SignalCoalescer, WaitingRequest
from tallystick.server.signals.schemas import (
    MAX_SIGNALS_PER_REQUEST,
    BulkSignalErrorOut,
    BulkSignalsIn,
    BulkSignalsOut,
    BulkSignalWarningOut,
    FieldProblemOut,
    SignalError,
    SignalListOut,
    SignalOut,
    idempotency_key_of,
    parse_signal,
)

log = logging.getLogger(__name__)

router = Router(tags=["signals"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)

# Attempts at a batch whose transaction PostgreSQL aborted to break a deadlock or a
# serialization conflict. Each attempt runs the whole batch again in a new transaction.
_BATCH_ATTEMPTS = 3
# SQLSTATEs of a deadlock and of a serialization failure: retrying the transaction is safe.
_RETRYABLE_SQLSTATES = ("40P01", "40001")


class SignalBatchRejected(ApiError):
    """Every signal of a batch failed: the API error shape plus the per-signal errors and counts."""

    def __init__(self, status: int, outcome: BulkSignalsOut) -> None:
        first = outcome.errors[0]
        message = first.message
        if outcome.failed > 1:
            message += f" (and {outcome.failed - 1} more failed signal{'s' if outcome.failed > 2 else ''})"
        super().__init__(
            status,
            first.code if status == 400 else "internal_error",
            message,
            fields=[problem.model_dump() for error in outcome.errors for problem in error.fields],
        )
        self.outcome = outcome

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        body.update(self.outcome.model_dump(by_alias=True))
        return body


@router.post("/signals/bulk", response_model=BulkSignalsOut)
async def create_signals(body: BulkSignalsIn, principal: CurrentPrincipal, request: Request) -> BulkSignalsOut:
    """Ingest up to 1,000 signals. Each is validated, stored and rated on its own.

    A signal whose `idempotencyKey` was already used in this organization, by an earlier request
    or earlier in this one, counts under `duplicates` and changes nothing. A signal that fails
    counts under `failed`, gets an entry in `errors` and changes nothing, while the others are
    still stored. When every signal fails, the response is a 400 naming the first problem, or a
    500 when the failure was the server's, which the client may retry. Unknown customers named
    by `externalCustomerId` are created; products are never created.

    Beyond the Paid API, a signal may carry a top-level `holdId`: the credit hold that it
    settles. The hold's reserved credits pay for the signal first and the unused rest is
    released.
    """
    if len(body.signals) > MAX_SIGNALS_PER_REQUEST:
        raise ApiError(
            400,
            "too_many_signals",
            f"Invalid signals: {len(body.signals)} signals in one request, but at most "
            f"{MAX_SIGNALS_PER_REQUEST} are allowed; split the batch",
            fields=[
                {
                    "field": "signals",
                    "message": f"at most {MAX_SIGNALS_PER_REQUEST} signals",
                    "value": len(body.signals),
                }
            ],
        )

    if len(body.signals) == 1:
        # Concurrent one-signal requests share transactions (see signals.coalescing).
        coalescer = _coalescer(request)
        waiting = WaitingRequest(body, principal, request)
        result: BulkSignalsOut = await coalescer.write(principal.organization_id, waiting, _write_group)
        return result
    # A batch waits here, in the event loop, for one of the process's ingestion slots (the
    # ingestion_concurrency setting). A few batches at a time write faster than many: the rest
    # would only contend for the interpreter lock and for the same credit accounts' row locks.
    limiter = _ingestion_limiter(request)
    return await anyio.to_thread.run_sync(partial(_ingest_batch, body, principal, request), limiter=limiter)


def _coalescer(request: Request) -> SignalCoalescer:
    coalescer = getattr(request.app.state, "signal_coalescer", None)
    if coalescer is None:
        coalescer = request.app.state.signal_coalescer = SignalCoalescer()
    return coalescer


async def _write_group(organization_id: str, group: list[WaitingRequest]) -> list[Any]:
    limiter = _ingestion_limiter(group[0].request)
    return await anyio.to_thread.run_sync(partial(_ingest_group, organization_id, group), limiter=limiter)


class _GroupFailed(Exception):
    """A signal of a shared transaction failed: roll it back and write each request alone."""


def _ingest_group(organization_id: str, group: list[WaitingRequest]) -> list[BulkSignalsOut | Exception]:
    """Write one-signal requests in one transaction; return each request's result or error.

    When a signal fails, or the transaction does, each request is written alone instead, so
    that it gets exactly the response (and the rollback) it would get alone.
    """
    if len(group) > 1:
        items = [parse_signal(waiting.body.signals[0], 0) for waiting in group]
        store, skew = _store_and_skew(group[0].request)
        try:
            with store.transaction() as session:
                outcomes = service.ingest_signals(
                    session, organization_id, items, received_at=clock.now(), max_future_skew=skew
                )
                if any(outcome.status == "failed" for outcome in outcomes):
                    raise _GroupFailed
            return [
                _bulk_result([dataclasses.replace(outcome, index=0)], waiting.body.signals)
                for waiting, outcome in zip(group, outcomes, strict=True)
            ]
        except _GroupFailed:
            log.info("signals.group_split", extra={"organization_id": organization_id, "requests": len(group)})
        except OperationalError as error:
            log.warning(
                "signals.group_split",
                extra={"organization_id": organization_id, "requests": len(group), "error": str(error).splitlines()[0]},
            )

    results: list[BulkSignalsOut | Exception] = []
    for waiting in group:
        try:
            results.append(_ingest_batch(waiting.body, waiting.principal, waiting.request))
        except Exception as error:  # noqa: BLE001 - handed to the request, whose handler renders it
            results.append(error)
    return results


def _ingestion_limiter(request: Request) -> anyio.CapacityLimiter:
    # Made at the first batch, in the event loop that uses it. The loop runs one coroutine at
    # a time, so two first batches cannot both make one.
    limiter = getattr(request.app.state, "ingestion_limiter", None)
    if limiter is None:
        settings: Settings = request.app.state.settings
        limiter = request.app.state.ingestion_limiter = anyio.CapacityLimiter(settings.ingestion_concurrency)
    return limiter


def _store_and_skew(request: Request) -> tuple[Store, timedelta]:
    """Return the app's store and how far in the future a signal's timestamp may be."""
    settings: Settings = request.app.state.settings
    return request.app.state.store, timedelta(seconds=settings.signal_max_future_skew_seconds)


def _ingest_batch(body: BulkSignalsIn, principal: Principal, request: Request) -> BulkSignalsOut:
    """Store a batch in one transaction, retried when PostgreSQL aborts it to break a deadlock."""
    items = [parse_signal(raw, index) for index, raw in enumerate(body.signals)]
    store, skew = _store_and_skew(request)

    for attempt in range(1, _BATCH_ATTEMPTS + 1):
        try:
            with store.transaction() as session:
                outcomes = service.ingest_signals(
                    session, principal.organization_id, items, received_at=clock.now(), max_future_skew=skew
                )
                result = _bulk_result(outcomes, body.signals)
                # Raised inside the transaction, so that customers created for signals that
                # then failed are rolled back too.
                if result.failed and not (result.ingested or result.duplicates):
                    internal = any(outcome.internal for outcome in outcomes)
                    raise SignalBatchRejected(500 if internal else 400, result)
            return result
        except OperationalError as error:
            sqlstate = getattr(error.orig, "sqlstate", None)
            if sqlstate not in _RETRYABLE_SQLSTATES:
                raise
            log.warning(
                "signals.batch_retried",
                extra={"organization_id": principal.organization_id, "attempt": attempt, "sqlstate": sqlstate},
            )
    raise ApiError(
        503,
        "database_busy",
        "The signals could not be stored because of concurrent writes; retry the request",
        headers={"Retry-After": "1"},
    )


# One step of a field path such as signals[3].attribution.externalProductId: a key or an index.
_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
# Maximum length of a string value echoed in an error, in characters. Longer ones are cut.
_MAX_ECHOED_CHARACTERS = 200


def _value_at(raw_signals: list[Any], field: str | None) -> Any:
    """Return the request's value at `field` (a path under `signals`) when it is a scalar.

    Objects and lists, paths that name no value, and field names that are not paths (such as
    "metadata key") give None.
    """
    if not field or not field.startswith("signals["):
        return None
    value: Any = {"signals": raw_signals}
    steps = _PATH_STEP.findall(field)
    position = 0
    while position < len(steps):
        key, index = steps[position]
        position += 1
        if index:
            if not isinstance(value, list) or int(index) >= len(value):
                return None
            value = value[int(index)]
            continue
        if not isinstance(value, dict):
            return None
        # A key may contain dots itself, as the cost attribute gen_ai.response.model does, so
        # the key is extended by the steps after it until the object has it.
        while key not in value and position < len(steps) and not steps[position][1]:
            key += "." + steps[position][0]
            position += 1
        if key not in value:
            return None
        value = value[key]
    if isinstance(value, str):
        return value[:_MAX_ECHOED_CHARACTERS]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return None


def _bulk_result(outcomes: list[service.SignalOutcome], raw_signals: list[Any]) -> BulkSignalsOut:
    errors = [
        BulkSignalErrorOut(
            index=outcome.index,
            idempotency_key=idempotency_key_of(raw_signals[outcome.index]),
            code=outcome.error.code,
            field=outcome.error.field,
            message=outcome.error.message,
            fields=_field_problems(outcome.index, outcome.error, raw_signals),
        )
        for outcome in outcomes
        if outcome.error is not None
    ]
    # A signal that matches no prepaid-credits line is stored but bills nothing: often a
    # misspelled event name, so say so instead of answering a plain success.
    warnings = [
        BulkSignalWarningOut(
            index=outcome.index,
            code="no_pricing_line",
            message=(
                f"eventName {_event_name_of(raw_signals[outcome.index])!r} matches no prepaid-credits "
                "pricing line, so the signal was stored but consumed no credits"
            ),
        )
        for outcome in outcomes
        if outcome.status == "ingested" and outcome.credit_currency_id is None
    ]
    warnings += [
        BulkSignalWarningOut(
            index=outcome.index,
            code="hold_ended",
            message=(
                f"holdId {_hold_id_of(raw_signals[outcome.index])!r} names a hold that had already ended "
                "(settled, released or expired), so the signal's credits came from the free credits"
            ),
        )
        for outcome in outcomes
        if outcome.status == "ingested" and outcome.hold_ended
    ]
    warnings.sort(key=lambda warning: warning.index)
    return BulkSignalsOut(
        ingested=sum(1 for outcome in outcomes if outcome.status == "ingested"),
        duplicates=sum(1 for outcome in outcomes if outcome.status == "duplicate"),
        failed=len(errors),
        errors=errors,
        warnings=warnings,
    )


def _field_problems(index: int, error: SignalError, raw_signals: list[Any]) -> list[FieldProblemOut]:
    """List every bad field of a failed signal, or the signal itself when no field is to blame."""
    named = error.fields or ((error.field or f"signals[{index}]", error.message),)
    return [
        FieldProblemOut(field=field, message=message, value=_value_at(raw_signals, field))
        for field, message in named
    ]


def _event_name_of(raw: Any) -> str:
    return str(raw.get("eventName", "")) if isinstance(raw, dict) else ""


def _hold_id_of(raw: Any) -> str:
    return str(raw.get("holdId", "")) if isinstance(raw, dict) else ""


@router.get("/signals/", response_model=SignalListOut)
def list_signals(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    signal_name: Annotated[str | None, Query(alias="signalName", description="Exact event name.")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: ExternalCustomerFilter = None,
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    external_product_id: Annotated[str | None, Query(alias="externalProductId")] = None,
    created_at_from: Annotated[
        str | None, Query(alias="createdAtFrom", description="YYYY-MM-DD (UTC) or RFC 3339; inclusive.")
    ] = None,
    created_at_to: Annotated[
        str | None, Query(alias="createdAtTo", description="YYYY-MM-DD (the whole day, UTC) or RFC 3339; inclusive.")
    ] = None,
) -> SignalListOut:
    """List signals, newest first by the time they happened (`createdAt`)."""
    filters = queries.SignalFilters(
        event_name=signal_name or None,
        customer_id=customer_id or None,
        external_customer_id=external_customer_id or None,
        product_id=product_id or None,
        external_product_id=external_product_id or None,
        occurred_from=parse_date_filter("createdAtFrom", created_at_from),
        occurred_to=parse_date_filter("createdAtTo", created_at_to, end_of_day=True),
    )
    rows, total = queries.list_signals(session, principal.organization_id, filters, page.limit, page.offset)
    money = signal_money(session, principal.organization_id, [row.signal.id for row in rows])
    return SignalListOut.model_validate(
        {
            "data": [signal_out(row, money.get(row.signal.id)) for row in rows],
            "pagination": pagination_body(page, total),
        }
    )


@router.get("/signals/{signal_id}", response_model=SignalOut)
def get_signal(signal_id: str, principal: CurrentPrincipal, session: ReadSession) -> SignalOut:
    row = queries.find_signal(session, principal.organization_id, signal_id)
    if row is None:
        raise not_found("Signal", "id", signal_id)
    money = signal_money(session, principal.organization_id, [row.signal.id])
    return signal_out(row, money.get(row.signal.id))


def signal_out(row: queries.SignalRow, money: SignalMoney | None = None) -> SignalOut:
    """Render a signal; `money` adds its attributed cost, credit revenue and margin."""
    signal = row.signal
    return SignalOut(
        **margin_fields(money),
        id=signal.id,
        name=signal.event_name,
        customer_id=signal.customer_id,
        external_customer_id=row.external_customer_id,
        product_id=signal.product_id,
        external_product_id=row.external_product_id,
        trace_id=signal.trace_id,
        data=signal.data,
        created_at=signal.occurred_at,
        received_at=signal.received_at,
        idempotency_key=signal.idempotency_key,
        credits_consumed=format_credits(signal.credits_consumed),
        credits_pending=format_credits(signal.credits_pending),
        credit_currency_id=signal.credit_currency_id,
        credit_currency_key=row.credit_currency_key,
    )


def format_credits(amount: Decimal) -> str:
    """Render credits as a plain decimal string without trailing zeros, such as "1" or "0.25"."""
    return format(amount.normalize(), "f")
