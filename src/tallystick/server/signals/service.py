"""Signal ingestion: validation against the store, idempotency, rating and consumption.

A batch is ingested inside the caller's transaction in phases, each with one query for the
whole batch where it can:

1. check each signal's fields and cost data;
2. resolve products (never created) and existing customers with their test clock time, then
   reject signals timestamped too far after the real time, or after their customer's test
   clock time when that is later;
3. choose each signal's pricing line, compute its credits and check its hold, if it names one;
4. create the customers that externalCustomerId names and that do not exist yet;
5. drop the signals whose idempotency key is already taken (duplicates), consume credits for
   the rest with one ledger batch (each credit account locked once), and insert the signal
   rows with their credits and ``ON CONFLICT DO NOTHING`` on (organization, idempotency key).
   The insert is the idempotency claim. A signal whose consumption the ledger rejects is not
   inserted, so its key stays free, and the other signals of the batch are kept.
6. if that fails, or a concurrent transaction claimed one of the keys after the check, the
   phase is rolled back to its savepoint and done the general way: insert the rows first
   (a key already taken, by a committed row or by a concurrent transaction that then commits,
   makes the signal a duplicate), then consume for the inserted ones, as one batch or, if
   the batch fails, each signal in its own savepoint. A signal whose consumption fails there
   is deleted again, which frees its key.

Nothing commits here: the signal rows, their ledger entries and the key claims commit together
with the caller's transaction, or not at all.

Lock order: new customers by external id first. Then the first way locks credit accounts in
(customer, currency) order before it claims idempotency keys in key order, and the general
way claims keys before it locks accounts. Two batches that share both a key and an account
and take different ways can deadlock; PostgreSQL then aborts one of them, and the signal
routes retry it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Select, bindparam, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.bulk_sql import for_each_dialect, in_list
from tallystick.server.costs.signal_costs import (
    CostDataError,
    attach_costs_to_signals,
    cost_data_problems,
)
from tallystick.server.customers.service import get_or_create_by_external_id
from tallystick.server.errors import ApiError, field_error_text, more_problems_suffix, show_value, timestamp_text
from tallystick.server.ids import new_id
from tallystick.server.ledger import service as ledger
from tallystick.server.models import (
    CreditCurrency,
    CreditHold,
    Customer,
    Product,
    TestClock,
    TestClockCustomer,
)
from tallystick.server.models.signal import Signal
from tallystick.server.observability import (
    CREDITS_CONSUMED,
    SIGNALS_FAILED,
    SIGNALS_INGESTED,
    count_after_commit,
)
from tallystick.server.settings import get_settings
from tallystick.server.signals import queries
from tallystick.server.signals.lines import LineLookup, match_lines
from tallystick.server.signals.rating import PricingLine, RatingError, credits_for
from tallystick.server.signals.schemas import (
    SignalError,
    SignalInput,
    signal_storage_problem,
)

log = logging.getLogger(__name__)

# paid_scope_id values are int64 on the wire (OTLP intValue) and in the column.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

OutcomeStatus = Literal["ingested", "duplicate", "failed"]


@dataclass
class SignalOutcome:
    """The result of ingesting one signal of a batch."""

    index: int
    status: OutcomeStatus
    signal_id: str | None = None
    error: SignalError | None = None
    # True when the failure is the server's, not the signal's: a retry may succeed.
    internal: bool = False
    credits_consumed: Decimal = Decimal(0)
    credits_pending: Decimal = Decimal(0)
    credit_currency_id: str | None = None
    # The signal named a hold that had already ended when the batch read it: its credits came
    # from the free credits instead.
    hold_ended: bool = False


@dataclass
class _Work:
    """A signal moving through the phases of a batch, with what each phase resolved."""

    index: int
    signal: SignalInput
    occurred_at: datetime
    trace_id: str | None = None
    paid_scope_id: int | None = None
    customer_id: str | None = None
    product_id: str | None = None
    line: PricingLine | None = None
    order_id: str | None = None
    credits: Decimal | None = None
    # The currency of the signal's hold, used to settle it when no pricing line rates the signal.
    hold_currency_id: str | None = None
    hold_ended: bool = False  # see SignalOutcome.hold_ended
    # The customer's test clock time, when it lives on one: its orders and credits are judged
    # at that time, and a signal without a timestamp occurred at it.
    customer_now: datetime | None = None
    signal_id: str = field(default_factory=lambda: new_id("signal"))


def ingest_signal(
    session: Session,
    organization_id: str,
    signal: SignalInput,
    *,
    trace_id: str | None = None,
    paid_scope_id: int | None = None,
    received_at: datetime | None = None,
) -> SignalOutcome:
    """Ingest one signal, such as one that arrived as a ``paid.trace.signal`` span.

    `trace_id` (32 hex digits) and `paid_scope_id` link the signal to cost spans; a
    `paid_scope_id` given here wins over ``data.paid.paid_scope_id``. Flushes only.
    """
    return ingest_signals(
        session,
        organization_id,
        [signal],
        received_at=received_at,
        trace_ids=[trace_id],
        paid_scope_ids=[paid_scope_id],
    )[0]


def ingest_signals(
    session: Session,
    organization_id: str,
    items: Sequence[SignalInput | SignalError],
    *,
    received_at: datetime | None = None,
    max_future_skew: timedelta | None = None,
    trace_ids: Sequence[str | None] | None = None,
    paid_scope_ids: Sequence[int | None] | None = None,
    attach_costs: bool = True,
) -> list[SignalOutcome]:
    """Ingest a batch of signals; return one outcome per item, in order. Flushes only.

    Items that are already a SignalError (malformed on the wire) fail as they are. Every other
    signal is stored once per idempotency key, or fails alone with a reason. With
    `attach_costs`, stored signals get their ``data.costData`` recorded and take the costs
    they are attributed; callers that attribute costs themselves pass False.

    Raises:
        OperationalError: a deadlock, serialization failure or lost connection. The caller
            must roll the whole transaction back; retrying the batch is safe.
    """
    received_at = received_at or clock.now()
    if max_future_skew is None:
        max_future_skew = timedelta(seconds=get_settings().signal_max_future_skew_seconds)
    outcomes: list[SignalOutcome | None] = [None] * len(items)

    work_items: list[_Work] = []
    for index, item in enumerate(items):
        if isinstance(item, SignalError):
            outcomes[index] = SignalOutcome(index, "failed", error=item)
            continue
        work = _Work(
            index=index,
            signal=item,
            occurred_at=item.timestamp or received_at,
            trace_id=trace_ids[index] if trace_ids else None,
            paid_scope_id=_paid_scope_id(item.data, paid_scope_ids[index] if paid_scope_ids else None),
        )
        storage_problem = signal_storage_problem(item)
        if storage_problem is not None:
            field_path, reason = storage_problem
            field_name = f"signals[{index}].{field_path}"
            _fail(outcomes, work, SignalError("validation_error", f"Invalid {field_name}: {reason}", field_name))
            continue
        cost_data_errors = cost_data_problems(item.data)
        if cost_data_errors:
            _fail(outcomes, work, _cost_data_error(work, cost_data_errors))
            continue
        work_items.append(work)

    work_items = _resolve_products(session, organization_id, work_items, outcomes)
    work_items = _resolve_customers(session, organization_id, work_items, outcomes)
    work_items = _reject_future(work_items, received_at, max_future_skew, outcomes)
    _choose_lines(session, organization_id, work_items)
    work_items = _rate(work_items, outcomes)
    work_items = _resolve_holds(session, organization_id, work_items, outcomes)
    _create_customers(session, organization_id, work_items)
    stored = _store_and_consume(session, organization_id, work_items, received_at, outcomes)
    if attach_costs:
        # After consumption: attribution's locks come after credit-account locks. Only signals
        # with a trace id, a paid_scope_id or data.costData can take costs, so plain signals
        # skip the cost lookups.
        costed = [
            work.signal_id
            for work in stored
            if _may_carry_costs(work) and _status(outcomes, work) == "ingested"
        ]
        if costed:
            attach_costs_to_signals(session, organization_id, costed)

    finished = [outcome for outcome in outcomes if outcome is not None]
    assert len(finished) == len(items), "every signal must get an outcome"
    _log_batch(organization_id, finished)
    _count_batch(session, finished)
    return finished


def _may_carry_costs(work: _Work) -> bool:
    data = work.signal.data
    return (
        work.trace_id is not None
        or work.paid_scope_id is not None
        or (isinstance(data, dict) and data.get("costData") is not None)
    )


def _fail(
    outcomes: list[SignalOutcome | None], work: _Work, error: SignalError, *, internal: bool = False
) -> None:
    outcomes[work.index] = SignalOutcome(work.index, "failed", error=error, internal=internal)


def _status(outcomes: list[SignalOutcome | None], work: _Work) -> OutcomeStatus | None:
    outcome = outcomes[work.index]
    return outcome.status if outcome is not None else None


# Phase 1 helpers


def _paid_scope_id(data: dict[str, Any] | None, given: int | None) -> int | None:
    """Return the scope id that links cost spans to the signal, if there is a usable one."""
    if given is not None:
        return given
    paid = data.get("paid") if isinstance(data, dict) else None
    value = paid.get("paid_scope_id") if isinstance(paid, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def _cost_data_error(work: _Work, errors: list[CostDataError]) -> SignalError:
    fields = []
    for error in errors:
        field_name = f"signals[{work.index}].data.costData" + (f".{error.field}" if error.field else "")
        fields.append((field_name, field_error_text(field_name, error.message, error.value)))
    field_name, message = fields[0]
    message += more_problems_suffix(len(fields))
    return SignalError("validation_error", message, field_name, tuple(fields) if len(fields) > 1 else ())


# Phase 2: products and customers


def _resolve_products(
    session: Session, organization_id: str, work_items: list[_Work], outcomes: list[SignalOutcome | None]
) -> list[_Work]:
    ids = {work.signal.product_id for work in work_items if work.signal.product_id}
    external_ids = {work.signal.external_product_id for work in work_items if work.signal.external_product_id}
    by_id: set[str] = set()
    by_external_id: dict[str, str] = {}
    if ids:
        statement = _PRODUCTS_BY_ID[session.get_bind().dialect.name]
        by_id = set(session.scalars(statement, {"organization_id": organization_id, "ids": sorted(ids)}))
    if external_ids:
        parameters = {"organization_id": organization_id, "external_ids": sorted(external_ids)}
        by_external_id = {external_id: product_id for external_id, product_id in session.execute(_PRODUCTS_BY_EXTERNAL_ID[session.get_bind().dialect.name], parameters)}

    kept = []
    for work in work_items:
        signal = work.signal
        if signal.product_id is not None:
            if signal.product_id not in by_id:
                error = _not_found(work, "product_not_found", "attribution.productId", signal.product_id)
                _fail(outcomes, work, error)
                continue
            work.product_id = signal.product_id
        elif signal.external_product_id is not None:
            product_id = by_external_id.get(signal.external_product_id)
            if product_id is None:
                external_id = signal.external_product_id
                error = _not_found(work, "product_not_found", "attribution.externalProductId", external_id)
                _fail(outcomes, work, error)
                continue
            work.product_id = product_id
        kept.append(work)
    return kept


def _resolve_customers(
    session: Session, organization_id: str, work_items: list[_Work], outcomes: list[SignalOutcome | None]
) -> list[_Work]:
    """Attach existing customers; signals naming an unknown externalCustomerId wait for phase 4."""
    ids = {work.signal.customer_id for work in work_items if work.signal.customer_id}
    external_ids = {work.signal.external_customer_id for work in work_items if work.signal.external_customer_id}
    by_id: set[str] = set()
    by_external_id: dict[str, str] = {}
    # The test clock time of the customers on one; the same queries fetch it.
    clock_times: dict[str, datetime] = {}
    if ids:
        statement = _CUSTOMERS_BY_ID[session.get_bind().dialect.name]
        rows = session.execute(statement, {"organization_id": organization_id, "ids": sorted(ids)})
        for customer_id, frozen_time in rows:
            by_id.add(customer_id)
            if frozen_time is not None:
                clock_times[customer_id] = frozen_time
    if external_ids:
        parameters = {"organization_id": organization_id, "external_ids": sorted(external_ids)}
        rows = session.execute(_CUSTOMERS_BY_EXTERNAL_ID[session.get_bind().dialect.name], parameters)
        for external_id, customer_id, frozen_time in rows:
            by_external_id[external_id] = customer_id
            if frozen_time is not None:
                clock_times[customer_id] = frozen_time

    kept = []
    for work in work_items:
        signal = work.signal
        if signal.customer_id is not None:
            if signal.customer_id not in by_id:
                error = _not_found(work, "customer_not_found", "customer.customerId", signal.customer_id)
                _fail(outcomes, work, error)
                continue
            work.customer_id = signal.customer_id
        else:
            work.customer_id = by_external_id.get(signal.external_customer_id or "")
        customer_now = clock_times.get(work.customer_id or "")
        if customer_now is not None:
            work.customer_now = customer_now
            if signal.timestamp is None:
                work.occurred_at = customer_now
        kept.append(work)
    return kept


def _reject_future(
    work_items: list[_Work], received_at: datetime, skew: timedelta, outcomes: list[SignalOutcome | None]
) -> list[_Work]:
    """Reject the signals timestamped more than `skew` after their reference time, and return the others.

    The reference time is the later of the real time and the customer's test clock time. So a
    customer on a clock ahead of the real time may send timestamps up to the clock's time plus
    `skew`. One on a clock behind it keeps the real time as its limit, because the SDK's
    ``signal()`` and OTLP signal spans stamp signals with the real time.
    """
    accepted = []
    for work in work_items:
        reference_time = max(received_at, work.customer_now or received_at)
        if work.occurred_at > reference_time + skew:
            error = _future_error(work, reference_time, skew, received_at=received_at)
            _fail(outcomes, work, error)
            continue
        accepted.append(work)
    return accepted


def _future_error(work: _Work, reference_time: datetime, skew: timedelta, *, received_at: datetime) -> SignalError:
    field_name = f"signals[{work.index}].timestamp"
    if reference_time > received_at:
        time_name = f"the customer's test clock time {timestamp_text(reference_time)}"
    else:
        time_name = f"the server time {timestamp_text(reference_time)}"
    # Without a timestamp, a signal of a customer on a test clock happens at the clock's time,
    # whether the clock is ahead of the real time or behind it.
    default_time = "the receipt time" if work.customer_now is None else "the test clock time"
    return SignalError(
        code="timestamp_in_future",
        message=(
            f"Invalid {field_name} '{timestamp_text(work.occurred_at)}': more than "
            f"{int(skew.total_seconds())} seconds after {time_name}; "
            f"send the time the event happened, or omit timestamp to use {default_time}"
        ),
        field=field_name,
    )


def _with_clock_time(statement: Select[tuple[Customer]], *columns: Any) -> Select[Any]:
    """Select `columns` of the customers with their test clock's time (null without a clock)."""
    return (
        statement.outerjoin(TestClockCustomer, TestClockCustomer.customer_id == Customer.id)
        .outerjoin(TestClock, TestClock.id == TestClockCustomer.test_clock_id)
        .with_only_columns(*columns, TestClock.frozen_time)
    )


# Built once, with bound parameters: building a select and its cache key on every batch took
# about as long as running it.
_PRODUCTS_BY_ID = for_each_dialect(
    lambda dialect: select(Product.id).where(
        Product.organization_id == bindparam("organization_id"), in_list(Product.id, "ids", dialect)
    )
)
_PRODUCTS_BY_EXTERNAL_ID = for_each_dialect(
    lambda dialect: select(Product.external_id, Product.id).where(
        Product.organization_id == bindparam("organization_id"), in_list(Product.external_id, "external_ids", dialect)
    )
)
_LIVE_CUSTOMERS = select(Customer).where(
    Customer.organization_id == bindparam("organization_id"), Customer.deleted_at.is_(None)
)
_CUSTOMERS_BY_ID = for_each_dialect(
    lambda dialect: _with_clock_time(_LIVE_CUSTOMERS.where(in_list(Customer.id, "ids", dialect)), Customer.id)
)
_CUSTOMERS_BY_EXTERNAL_ID = for_each_dialect(
    lambda dialect: _with_clock_time(
        _LIVE_CUSTOMERS.where(in_list(Customer.external_id, "external_ids", dialect)), Customer.external_id, Customer.id
    )
)

_NOT_FOUND_REASONS = {
    "product_not_found": "product not found. Signals never create products, so create it first",
    "customer_not_found": "customer not found. Send externalCustomerId to create customers on the fly",
}


def _not_found(work: _Work, code: str, field_path: str, value: str) -> SignalError:
    field_name = f"signals[{work.index}].{field_path}"
    return SignalError(
        code=code, message=f"Invalid {field_name} '{value}': {_NOT_FOUND_REASONS[code]}", field=field_name
    )


def _create_customers(session: Session, organization_id: str, work_items: list[_Work]) -> None:
    missing = sorted({work.signal.external_customer_id for work in work_items if work.customer_id is None})
    created: dict[str, str] = {}
    for external_id in missing:
        assert external_id is not None
        customer, _ = get_or_create_by_external_id(session, organization_id, external_id)
        created[external_id] = customer.id
    for work in work_items:
        if work.customer_id is None:
            work.customer_id = created[work.signal.external_customer_id or ""]


# Phase 3: pricing lines and credits


def _choose_lines(session: Session, organization_id: str, work_items: list[_Work]) -> None:
    lookups = [LineLookup(work.signal.event_name, work.customer_id, work.product_id) for work in work_items]
    customer_times = {work.customer_id: work.customer_now for work in work_items if work.customer_id and work.customer_now}
    matches = match_lines(session, organization_id, lookups, customer_times=customer_times)
    for work, match in zip(work_items, matches, strict=True):
        work.line = match.line
        work.product_id = match.product_id
        work.order_id = match.order_id


def _rate(work_items: list[_Work], outcomes: list[SignalOutcome | None]) -> list[_Work]:
    kept = []
    for work in work_items:
        line = work.line
        if line is not None and line.currency_id is None:
            # The Paid API lets bracketed lines omit their currency; such a line cannot spend.
            log.warning(
                "signal.pricing_line_without_currency",
                extra={"pricing_line_id": line.line_id, "signal_index": work.index},
            )
            work.line = None
        elif line is not None:
            try:
                work.credits = credits_for(line, work.signal.data)
            except RatingError as error:
                _fail(outcomes, work, _rating_error(work, error))
                continue
            if work.credits > ledger.MAX_CREDIT_AMOUNT:
                message = (
                    f"Invalid signals[{work.index}]: it would consume {work.credits} credits under "
                    f"pricing line {line.line_id}, more than the {ledger.MAX_CREDIT_AMOUNT} one signal may consume"
                )
                _fail(outcomes, work, SignalError("credits_out_of_range", message))
                continue
        kept.append(work)
    return kept


def _resolve_holds(
    session: Session, organization_id: str, work_items: list[_Work], outcomes: list[SignalOutcome | None]
) -> list[_Work]:
    """Fail signals whose holdId names no hold of their customer; note the hold's currency."""
    hold_ids = {work.signal.hold_id for work in work_items if work.signal.hold_id}
    if not hold_ids:
        return work_items
    holds = {
        hold.id: hold
        for hold in session.scalars(
            select(CreditHold).where(CreditHold.organization_id == organization_id, CreditHold.id.in_(hold_ids))
        )
    }

    kept = []
    for work in work_items:
        hold_id = work.signal.hold_id
        if hold_id is not None:
            hold = holds.get(hold_id)
            field_name = f"signals[{work.index}].holdId"
            if hold is None:
                message = f"Invalid {field_name} '{hold_id}': no credit hold with this id"
                _fail(outcomes, work, SignalError("hold_not_found", message, field_name))
                continue
            if hold.customer_id != work.customer_id:
                message = f"Invalid {field_name} '{hold_id}': the hold belongs to another customer"
                _fail(outcomes, work, SignalError("validation_error", message, field_name))
                continue
            work.hold_currency_id = hold.credits_currency_id
            work.hold_ended = hold.status != "active" or hold.expires_at <= (work.customer_now or clock.now())
        kept.append(work)
    return kept


def _rating_error(work: _Work, error: RatingError) -> SignalError:
    if error.field is None:
        return SignalError(code=error.code, message=error.message)
    field_name = f"signals[{work.index}].{error.field}"
    return SignalError(
        code=error.code, message=f"Invalid {field_name} {show_value(error.value)}: {error.message}", field=field_name
    )


# Phases 5 and 6: the idempotency claim and consumption


class _KeyClaimedMeanwhile(Exception):
    """An idempotency key that was free when checked was claimed by another transaction."""


def _store_and_consume(
    session: Session,
    organization_id: str,
    work_items: list[_Work],
    received_at: datetime,
    outcomes: list[SignalOutcome | None],
) -> list[_Work]:
    """Store the signals and consume their credits; return the signals stored.

    The fast path consumes first and then inserts each signal with its credits (see
    `_consume_then_store`), inside a savepoint. When it fails, or when a concurrent
    transaction claimed one of its keys in between, the savepoint is rolled back and the batch
    takes the general path: lock the credit accounts, insert the rows (the idempotency claim),
    then consume for the inserted ones, then write their credits.
    """
    try:
        with session.begin_nested():
            return _consume_then_store(session, organization_id, work_items, received_at, outcomes)
    except OperationalError:
        raise
    except _KeyClaimedMeanwhile:
        log.info("signals.key_claimed_meanwhile", extra={"organization_id": organization_id})
    except Exception:
        log.exception("signals.fast_path_failed", extra={"organization_id": organization_id})

    for work in work_items:
        outcomes[work.index] = None
    # Accounts are locked before keys are claimed, as on the fast path. Claiming keys first could
    # wait for a concurrent fast path's keys while that path waits for these accounts.
    accounts = {(work.customer_id or "", _currency_of(work)) for work in _spending(work_items)}
    if accounts:
        ledger.lock_accounts(session, organization_id, accounts)
    stored = _store(session, organization_id, work_items, received_at, outcomes)
    _consume(session, organization_id, stored, outcomes)
    return stored


def _consume_then_store(
    session: Session,
    organization_id: str,
    work_items: list[_Work],
    received_at: datetime,
    outcomes: list[SignalOutcome | None],
) -> list[_Work]:
    """Consume for the signals whose keys are free, then insert them with their credits.

    The insert is still the idempotency claim: a key claimed by a concurrent transaction after
    the check makes the insert skip that row, and then `_KeyClaimedMeanwhile` rolls the whole
    attempt back. Writing each signal's credits with its row saves the update of every row
    that the general path needs.
    """
    if not work_items:
        return []
    to_insert = _first_per_key(work_items, outcomes)
    taken = queries.taken_keys(
        session, organization_id, [work.signal.idempotency_key for work in to_insert if work.signal.idempotency_key]
    )
    fresh = []
    for work in to_insert:
        if work.signal.idempotency_key in taken:
            outcomes[work.index] = SignalOutcome(work.index, "duplicate")
        else:
            fresh.append(work)

    spending = _spending(fresh)
    results: dict[str, ledger.ConsumptionResult] = {}
    if spending:
        for work, result in zip(spending, consume_for_signals(session, organization_id, spending), strict=True):
            if isinstance(result, ApiError):
                _reject(organization_id, outcomes, work, result)
            else:
                results[work.signal_id] = result

    kept = [work for work in fresh if outcomes[work.index] is None]
    rows = [_row(organization_id, work, received_at, results.get(work.signal_id)) for work in kept]
    inserted = queries.insert_signals(session, rows)
    if len(inserted) != len(rows):
        raise _KeyClaimedMeanwhile

    for work in kept:
        result = results.get(work.signal_id)
        outcomes[work.index] = SignalOutcome(
            work.index,
            "ingested",
            signal_id=work.signal_id,
            credit_currency_id=work.line.currency_id if work.line else None,
            credits_consumed=result.covered if result else Decimal(0),
            credits_pending=result.pending if result else Decimal(0),
            hold_ended=work.hold_ended,
        )
    return kept


def _first_per_key(work_items: list[_Work], outcomes: list[SignalOutcome | None]) -> list[_Work]:
    """Return the signals to insert, in key order; a key repeated in the batch is a duplicate.

    A key repeated within the batch is claimed by its first valid occurrence. Key order is the
    lock order between concurrent transactions that share keys.
    """
    first_by_key: dict[str, _Work] = {}
    to_insert = []
    for work in work_items:
        key = work.signal.idempotency_key
        if key is not None and key in first_by_key:
            outcomes[work.index] = SignalOutcome(work.index, "duplicate", signal_id=None)
            continue
        if key is not None:
            first_by_key[key] = work
        to_insert.append(work)
    to_insert.sort(key=lambda work: (work.signal.idempotency_key is None, work.signal.idempotency_key or ""))
    return to_insert


def _spending(works: list[_Work]) -> list[_Work]:
    """Return the signals that touch the ledger, in lock order then event time order.

    A signal that costs nothing and settles no hold leaves the ledger alone. Credit account
    order is the lock order; within one account, signals are consumed in event time order.
    """
    spending = [work for work in works if work.signal.hold_id or (work.credits or 0) > 0]
    spending.sort(key=lambda work: (work.customer_id or "", _currency_of(work), work.occurred_at, work.index))
    return spending


def _reject(organization_id: str, outcomes: list[SignalOutcome | None], work: _Work, error: ApiError) -> None:
    log.info(
        "signal.consumption_rejected",
        extra={"organization_id": organization_id, "signal_id": work.signal_id, "code": error.code},
    )
    _fail(outcomes, work, _ledger_error(work, error))


def _store(
    session: Session,
    organization_id: str,
    work_items: list[_Work],
    received_at: datetime,
    outcomes: list[SignalOutcome | None],
) -> list[_Work]:
    """Insert the signal rows; return the ones inserted. The rest become duplicates."""
    if not work_items:
        return []
    to_insert = _first_per_key(work_items, outcomes)
    rows = [_row(organization_id, work, received_at) for work in to_insert]
    inserted = queries.insert_signals(session, rows)

    stored = []
    for work in to_insert:
        if work.signal_id in inserted:
            stored.append(work)
            outcomes[work.index] = SignalOutcome(
                work.index,
                "ingested",
                signal_id=work.signal_id,
                credit_currency_id=work.line.currency_id if work.line else None,
                hold_ended=work.hold_ended,
            )
        else:
            outcomes[work.index] = SignalOutcome(work.index, "duplicate")
    return stored


def _row(
    organization_id: str, work: _Work, received_at: datetime, result: ledger.ConsumptionResult | None = None
) -> dict[str, Any]:
    signal = work.signal
    line = work.line
    return {
        "id": work.signal_id,
        "organization_id": organization_id,
        "customer_id": work.customer_id,
        "product_id": work.product_id,
        "event_name": signal.event_name,
        "occurred_at": work.occurred_at,
        "received_at": received_at,
        "data": signal.data,
        "idempotency_key": signal.idempotency_key,
        "external_customer_unit_id": signal.external_customer_unit_id,
        "trace_id": work.trace_id,
        "paid_scope_id": work.paid_scope_id,
        "product_attribute_id": line.product_attribute_id if line else None,
        "plan_attribute_id": line.plan_attribute_id if line else None,
        "credit_currency_id": line.currency_id if line else None,
        "credits_consumed": result.covered if result else Decimal(0),
        "credits_pending": result.pending if result else Decimal(0),
    }


def _consume(
    session: Session,
    organization_id: str,
    stored: list[_Work],
    outcomes: list[SignalOutcome | None],
) -> None:
    """Consume credits for the stored signals: the whole batch at once, or one by one on failure.

    The batch runs in one savepoint. If it raises anything but a database error that aborts
    the transaction, the savepoint is rolled back and each signal is consumed in a savepoint
    of its own, so that one signal that cannot be recorded fails alone.
    """
    spending = _spending(stored)
    if not spending:
        return

    try:
        with session.begin_nested():
            results = consume_for_signals(session, organization_id, spending)
    except OperationalError:
        raise
    except Exception:
        log.exception("signal.batch_consumption_failed", extra={"organization_id": organization_id})
        results = [_consume_one(session, organization_id, work) for work in spending]

    credit_updates = []
    for work, result in zip(spending, results, strict=True):
        if isinstance(result, ApiError):
            _unstore(session, work)
            _reject(organization_id, outcomes, work, result)
            continue
        if result is None:
            _unstore(session, work)
            _fail(
                outcomes,
                work,
                SignalError(
                    code="internal_error",
                    message="Recording the credit consumption failed, so the signal was not stored. "
                    "Send it again with the same idempotencyKey",
                ),
                internal=True,
            )
            continue

        outcome = outcomes[work.index]
        assert outcome is not None
        outcome.credits_consumed = result.covered
        outcome.credits_pending = result.pending
        credit_updates.append(
            {"id": work.signal_id, "credits_consumed": result.covered, "credits_pending": result.pending}
        )

    if credit_updates:
        session.execute(update(Signal), credit_updates)


def _consume_one(
    session: Session, organization_id: str, work: _Work
) -> ledger.ConsumptionResult | ApiError | None:
    """Consume one signal in its own savepoint; None when it failed for a reason of the server's."""
    try:
        with session.begin_nested():
            return consume_for_signal(session, organization_id, work)
    except OperationalError:
        raise
    except ApiError as error:
        return error
    except Exception:
        log.exception(
            "signal.consumption_failed",
            extra={"organization_id": organization_id, "signal_id": work.signal_id},
        )
        return None


def _currency_of(work: _Work) -> str:
    if work.line is not None and work.line.currency_id is not None:
        return work.line.currency_id
    return work.hold_currency_id or ""


def consume_for_signals(
    session: Session, organization_id: str, works: list[_Work]
) -> list[ledger.ConsumptionResult | ApiError]:
    """Consume the signals' credits and settle their holds with one ledger batch."""
    return ledger.consume_batch(
        session, organization_id=organization_id, requests=[_consumption_request(work) for work in works]
    )


def consume_for_signal(session: Session, organization_id: str, work: _Work) -> ledger.ConsumptionResult:
    """Consume one signal's credits and settle its hold, through the ledger.

    A separate function so that tests can make the ledger write fail.
    """
    request = _consumption_request(work)
    return ledger.consume(
        session,
        organization_id=organization_id,
        customer_id=request.customer_id,
        currency_id=request.currency_id,
        amount=request.amount,
        signal_id=request.signal_id,
        event_name=request.event_name,
        product_id=request.product_id,
        occurred_at=request.occurred_at,
        hold_id=request.hold_id,
        order_id=request.order_id,
        now=request.now,
    )


def _consumption_request(work: _Work) -> ledger.ConsumptionRequest:
    assert work.customer_id is not None
    return ledger.ConsumptionRequest(
        customer_id=work.customer_id,
        currency_id=_currency_of(work),
        amount=work.credits or Decimal(0),
        signal_id=work.signal_id,
        event_name=work.signal.event_name,
        product_id=work.product_id,
        occurred_at=work.occurred_at,
        hold_id=work.signal.hold_id,
        order_id=work.order_id,
        now=work.customer_now,
    )


def _ledger_error(work: _Work, error: ApiError) -> SignalError:
    """Rephrase a ledger 400, such as one about holdId, with the signal's field path."""
    problem = error.fields[0] if error.fields else None
    if problem is None:
        return SignalError(code=error.code, message=error.message)
    field_name = f"signals[{work.index}].{problem['field']}"
    message = field_error_text(field_name, problem["message"], problem.get("value"))
    return SignalError(code=error.code, message=message, field=field_name)


def _unstore(session: Session, work: _Work) -> None:
    """Delete a signal whose consumption failed, which frees its idempotency key."""
    session.execute(delete(Signal).where(Signal.id == work.signal_id))


def _log_batch(organization_id: str, outcomes: list[SignalOutcome]) -> None:
    counts = {"ingested": 0, "duplicate": 0, "failed": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    log.info(
        "signals.ingested",
        extra={
            "organization_id": organization_id,
            "ingested": counts["ingested"],
            "duplicates": counts["duplicate"],
            "failed": counts["failed"],
        },
    )


def _count_batch(session: Session, outcomes: list[SignalOutcome]) -> None:
    """Add the batch to the signal and credit metrics; stored work counts once it commits."""
    count_after_commit(session, SIGNALS_INGESTED, sum(outcome.status == "ingested" for outcome in outcomes))
    # Rejections count at once: a batch whose signals all fail is rolled back.
    SIGNALS_FAILED.inc(sum(outcome.status == "failed" for outcome in outcomes))

    consumed: dict[str, Decimal] = {}
    for outcome in outcomes:
        if outcome.credit_currency_id is not None and outcome.credits_consumed > 0:
            total = consumed.get(outcome.credit_currency_id, Decimal(0))
            consumed[outcome.credit_currency_id] = total + outcome.credits_consumed
    if not consumed:
        return
    keys = _currency_keys(session, consumed)
    for currency_id, amount in consumed.items():
        # Prometheus counters are floats; the ledger keeps the exact amounts.
        count_after_commit(session, CREDITS_CONSUMED.labels(keys.get(currency_id, "unknown")), float(amount))


# Credit currency keys by currency id, for metric labels. A currency's key never changes after
# it is created and ids are never reused, so entries never go stale.
_KNOWN_CURRENCY_KEYS: dict[str, str] = {}
_MAX_KNOWN_CURRENCY_KEYS = 10_000


def _currency_keys(session: Session, currency_ids: Iterable[str]) -> dict[str, str]:
    """Return the key of each currency id, reading only the ones this process has not seen."""
    keys: dict[str, str] = {}
    missing = []
    for currency_id in currency_ids:
        known = _KNOWN_CURRENCY_KEYS.get(currency_id)
        if known is None:
            missing.append(currency_id)
        else:
            keys[currency_id] = known
    if missing:
        rows = session.execute(select(CreditCurrency.id, CreditCurrency.key).where(CreditCurrency.id.in_(missing)))
        found = {currency_id: key for currency_id, key in rows}
        keys.update(found)
        if len(_KNOWN_CURRENCY_KEYS) + len(found) > _MAX_KNOWN_CURRENCY_KEYS:
            _KNOWN_CURRENCY_KEYS.clear()
        _KNOWN_CURRENCY_KEYS.update(found)
    return keys
