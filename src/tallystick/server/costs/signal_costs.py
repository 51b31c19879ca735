"""Costs that come with signals: `data.costData`, and the claims of cost-attributed signals.

Signal ingestion calls `attach_costs_to_signals` with the ids of the signals it has just stored,
in the same transaction. For each signal it:

- turns ``data.costData`` into a cost record attributed to the signal, in one of two forms:
  ``{"vendor", "cost": {"amount", "currency"}, "gen_ai.response.model"?, "start_time"?}`` (an
  amount in major units) or ``{"vendor", "attributes": {"gen_ai.response.model",
  "gen_ai.usage.input_tokens", ...}}`` (usage that is priced here, read with the same rules as
  span attributes);
- claims the costs of its trace when it came from a signal span with
  ``data.paid.enable_cost_tracing``, and the costs of its paid_scope_id when it has one.

`cost_data_problems` lets ingestion reject a signal whose costData is malformed before storing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.costs import attribution, repository
from tallystick.server.costs.normalization import UsageError, UsageRecord, normalize_span_usage
from tallystick.server.costs.pricing import (
    MAX_COST_PER_CALL,
    PriceResult,
    price_usage,
    round_cost,
)
from tallystick.server.costs.records import cost_row
from tallystick.server.models.signal import Signal
from tallystick.server.schemas import to_utc

log = logging.getLogger(__name__)

# Cost amounts are recorded in US dollars only; the totals and margins add them up as USD.
SUPPORTED_CURRENCIES = frozenset({"USD"})
_MAX_LABEL_LENGTH = 255


class CostDataError(ValueError):
    """`costData` is malformed; `field` is the path inside it, such as ``cost.amount``."""

    def __init__(self, field: str, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.value = value


@dataclass(frozen=True)
class ManualCost:
    """A cost given with a signal: usage to price, or an amount the app computed."""

    usage: UsageRecord
    amount: Decimal | None
    started_at: datetime | None


def cost_data_problems(data: Any) -> list[CostDataError]:
    """Return every problem of ``data.costData``: empty when it is absent or valid."""
    if not isinstance(data, dict) or data.get("costData") is None:
        return []
    return _read_cost_data(data["costData"])[1]


def parse_cost_data(cost_data: Any) -> ManualCost:
    """Read a costData object.

    Raises:
        CostDataError: naming the first offending field.
    """
    manual, problems = _read_cost_data(cost_data)
    if problems:
        raise problems[0]
    assert manual is not None, "a costData without problems is read"
    return manual


def _read_cost_data(cost_data: Any) -> tuple[ManualCost | None, list[CostDataError]]:
    """Read a costData object, checking every field, so that all its problems are reported."""
    if not isinstance(cost_data, dict):
        return None, [CostDataError("", "must be an object with vendor and either cost or attributes", cost_data)]
    problems: list[CostDataError] = []
    vendor = cost_data.get("vendor")
    if vendor is not None and (not isinstance(vendor, str) or len(vendor) > _MAX_LABEL_LENGTH):
        problems.append(
            CostDataError("vendor", f"must be a string of at most {_MAX_LABEL_LENGTH} characters", vendor)
        )
    started_at = _collected(problems, _start_time, cost_data.get("start_time"))

    cost = cost_data.get("cost")
    attributes = cost_data.get("attributes")
    if cost is not None:
        amount = _read_amount(cost, "cost", problems)
        model = cost_data.get("gen_ai.response.model")
        if model is not None and (not isinstance(model, str) or len(model) > _MAX_LABEL_LENGTH):
            problems.append(CostDataError("gen_ai.response.model", "must be a model name string", model))
        if problems:
            return None, problems
        usage = UsageRecord(emitter="manual", vendor=vendor, model=model, operation=None, service_tier=None)
        return ManualCost(usage=usage, amount=amount, started_at=started_at), []

    if isinstance(attributes, dict):
        try:
            usage = normalize_span_usage(attributes)
        except UsageError as error:
            problems.append(CostDataError("attributes", str(error)))
        if problems:
            return None, problems
        usage.emitter = "manual"
        if vendor and not any(
            key in attributes for key in ("gen_ai.provider.name", "gen_ai.system", "llm.provider")
        ):
            usage.vendor = vendor
        return ManualCost(usage=usage, amount=None, started_at=started_at), []

    problems.append(
        CostDataError(
            "",
            "must carry either cost {amount, currency} or attributes with the model and token counts",
            cost_data,
        )
    )
    return None, problems


def _collected(problems: list[CostDataError], read: Callable[..., Any], *arguments: Any) -> Any:
    """Return `read(*arguments)`, or None after adding the problems that it raised to `problems`."""
    try:
        return read(*arguments)
    except CostDataError as error:
        problems.append(error)
    return None


def _read_amount(cost: Any, field: str, problems: list[CostDataError]) -> Decimal | None:
    """Read ``{"amount", "currency"}``: a USD amount in major units, rounded to 12 places.

    Adds a problem for each invalid field to `problems` and returns None when there is any.
    """
    if not isinstance(cost, dict):
        problems.append(CostDataError(field, "must be an object {amount, currency}", cost))
        return None
    currency = cost.get("currency")
    if not isinstance(currency, str) or currency.upper() not in SUPPORTED_CURRENCIES:
        problems.append(
            CostDataError(
                f"{field}.currency", "must be USD; costs in other currencies are not supported yet", currency
            )
        )
    amount = _collected(problems, checked_amount, cost.get("amount"), f"{field}.amount")
    return amount if not problems else None


def checked_amount(raw: Any, field: str) -> Decimal:
    """Return a cost amount as an exact Decimal in USD, or raise CostDataError."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str, Decimal)):
        raise CostDataError(field, "must be a number", raw)
    try:
        # str() first, so that a JSON number such as 0.1 becomes exactly 0.1.
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise CostDataError(field, "must be a number", raw) from None
    if not amount.is_finite() or amount < 0:
        raise CostDataError(field, "must be a finite number of at least 0", raw)
    if amount > MAX_COST_PER_CALL:
        raise CostDataError(field, f"must be at most {MAX_COST_PER_CALL}", raw)
    return round_cost(amount)


def _start_time(raw: Any) -> datetime | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise CostDataError("start_time", "must be an ISO 8601 timestamp string", raw)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise CostDataError("start_time", "must be an ISO 8601 timestamp", raw) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return to_utc(moment)
    except ValueError as error:
        raise CostDataError("start_time", str(error), raw) from None


def manual_price(manual: ManualCost, at: datetime, overrides: list[Any]) -> PriceResult:
    """Price a manual cost: the app's amount as given, or its usage like a span's."""
    if manual.amount is not None:
        return PriceResult(
            amount=manual.amount,
            status="priced",
            source="client",
            reference="client amount",
            model=manual.usage.model,
        )
    return price_usage(manual.usage, at, overrides)


def attach_costs_to_signals(
    session: Session,
    organization_id: str,
    signal_ids: Iterable[str],
    *,
    extra_cost_keys: set[attribution.ClaimKey] | None = None,
) -> int:
    """Record the costData of just-stored signals and attribute costs to them.

    `extra_cost_keys` are attribution keys of cost records stored in the same transaction.
    Returns the number of existing cost records linked. Flushes only; call it after any
    credit-account locks of the transaction (see `attribution`).
    """
    ids = list(dict.fromkeys(signal_ids))
    signals = _load_signals(session, organization_id, ids) if ids else []

    claims: list[attribution.Claim] = []
    manual_rows: list[dict[str, Any]] = []
    overrides: list[Any] | None = None
    for signal in signals:
        data = signal.data if isinstance(signal.data, dict) else {}
        paid = data.get("paid") if isinstance(data.get("paid"), dict) else {}
        if signal.trace_id and paid.get("enable_cost_tracing") is True:
            claims.append(attribution.Claim(attribution.trace_key(signal.trace_id), signal.id))
        if signal.paid_scope_id is not None:
            claims.append(
                attribution.Claim(attribution.scope_key(signal.customer_id, signal.paid_scope_id), signal.id)
            )
        if data.get("costData") is not None:
            if overrides is None:
                overrides = repository.load_overrides(session, organization_id)
            row = _cost_data_row(organization_id, signal, data["costData"], overrides)
            if row is not None:
                manual_rows.append(row)

    repository.insert_cost_rows(session, manual_rows)
    return attribution.attribute(session, organization_id, claims, extra_cost_keys or set())


def _load_signals(session: Session, organization_id: str, ids: list[str]) -> list[Signal]:
    return list(
        session.scalars(
            select(Signal).where(Signal.organization_id == organization_id, Signal.id.in_(ids))
        )
    )


def _cost_data_row(
    organization_id: str, signal: Signal, cost_data: Any, overrides: list[Any]
) -> dict[str, Any] | None:
    try:
        manual = parse_cost_data(cost_data)
    except CostDataError as error:
        # Ingestion is expected to reject such signals first; one that slipped through keeps
        # its signal and loses only the cost.
        log.warning(
            "costs.cost_data_invalid",
            extra={"organization_id": organization_id, "signal_id": signal.id, "field": error.field},
        )
        return None
    started_at = manual.started_at or signal.occurred_at
    price = manual_price(manual, started_at, overrides)
    return cost_row(
        organization_id=organization_id,
        source="signal",
        started_at=started_at,
        usage=manual.usage,
        price=price,
        idempotency_key=f"signal-cost-data:{signal.id}",
        customer_id=signal.customer_id,
        product_id=signal.product_id,
        signal_id=signal.id,
    )
