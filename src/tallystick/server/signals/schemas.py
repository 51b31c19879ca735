"""Wire models of signals, and parsing of one signal of a bulk request into a SignalInput."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from tallystick.server.costs.money_schemas import CostSummaryOut, MoneyOut
from tallystick.server.errors import format_location, more_problems_suffix, problem_reason, show_value
from tallystick.server.field_hints import MAX_HINTS, field_location, misspelling_hint
from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel, check_path_segment, to_utc

# Most signals one POST /signals/bulk request may carry.
MAX_SIGNALS_PER_REQUEST = 1000

MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class SignalInput:
    """One validated signal, as the ingestion service takes it from any transport.

    Exactly one of `customer_id` and `external_customer_id` is set; at most one of `product_id`
    and `external_product_id`. `timestamp` is aware; None means "when it was received".
    """

    event_name: str
    customer_id: str | None = None
    external_customer_id: str | None = None
    product_id: str | None = None
    external_product_id: str | None = None
    timestamp: datetime | None = None
    data: dict[str, Any] | None = None
    idempotency_key: str | None = None
    external_customer_unit_id: str | None = None
    hold_id: str | None = None


@dataclass(frozen=True)
class SignalError:
    """The reason one signal of a batch was not stored: a stable code, the field and a message.

    `fields` contains each bad field as (field path, message) when the signal has more than one,
    the first being `field`. It is empty when the error names one field or none.
    """

    code: str
    message: str
    field: str | None = None
    fields: tuple[tuple[str, str], ...] = ()


class CustomerRef(RequestModel):
    customer_id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    external_customer_id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)

    _external_customer_id_check = field_validator("external_customer_id")(check_path_segment)

    @model_validator(mode="after")
    def _exactly_one(self) -> CustomerRef:
        if (self.customer_id is None) == (self.external_customer_id is None):
            raise ValueError("send exactly one of customerId or externalCustomerId")
        return self


class ProductRef(RequestModel):
    product_id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    external_product_id: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)

    @model_validator(mode="after")
    def _exactly_one(self) -> ProductRef:
        if (self.product_id is None) == (self.external_product_id is None):
            raise ValueError("send exactly one of productId or externalProductId")
        return self


class CustomerUnitRef(RequestModel):
    external_customer_unit_id: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


class SignalIn(RequestModel):
    """One element of `signals` in POST /signals/bulk."""

    event_name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    customer: CustomerRef
    customer_unit: CustomerUnitRef | None = None
    attribution: ProductRef | None = None
    timestamp: str | None = Field(
        default=None, description="When the event happened, RFC 3339 with a timezone offset."
    )
    data: dict[str, Any] | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    # Not part of the Paid wire format: the id of a credit hold that this signal settles.
    hold_id: str | None = Field(default=None, min_length=1, max_length=40)

    @field_validator("timestamp")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            parse_timestamp(value)
        return value


class BulkSignalsIn(RequestModel):
    # Elements are validated one by one, so that one malformed signal fails alone.
    signals: list[Any] = Field(
        description=f"The signals to ingest, at most {MAX_SIGNALS_PER_REQUEST} per request."
    )


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 date-time that carries a timezone offset (``Z`` or ``+05:00``), as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time, such as 2026-01-31T23:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("must include a timezone offset, such as Z or +05:00")
    return to_utc(moment)


def parse_signal(raw: Any, index: int) -> SignalInput | SignalError:
    """Validate element `index` of a bulk request; return the signal or why it is invalid."""
    try:
        parsed = SignalIn.model_validate(raw)
    except ValidationError as error:
        return _validation_error(error, index, raw)

    customer = parsed.customer
    attribution = parsed.attribution
    return SignalInput(
        event_name=parsed.event_name,
        customer_id=customer.customer_id,
        external_customer_id=customer.external_customer_id,
        product_id=attribution.product_id if attribution else None,
        external_product_id=attribution.external_product_id if attribution else None,
        timestamp=parse_timestamp(parsed.timestamp) if parsed.timestamp is not None else None,
        data=parsed.data,
        idempotency_key=parsed.idempotency_key,
        external_customer_unit_id=(
            parsed.customer_unit.external_customer_unit_id if parsed.customer_unit else None
        ),
        hold_id=parsed.hold_id,
    )


def signal_storage_problem(signal: SignalInput) -> tuple[str, str] | None:
    """Find a value of `signal` that cannot be stored; return its wire field path and why."""
    fields = {
        "eventName": signal.event_name,
        "customer.customerId": signal.customer_id,
        "customer.externalCustomerId": signal.external_customer_id,
        "attribution.productId": signal.product_id,
        "attribution.externalProductId": signal.external_product_id,
        "customerUnit.externalCustomerUnitId": signal.external_customer_unit_id,
        "idempotencyKey": signal.idempotency_key,
        "holdId": signal.hold_id,
    }
    for name, value in fields.items():
        problem = unstorable_value(value)
        if problem is not None:
            return name, problem[1]
    problem = unstorable_value(signal.data, ("data",))
    if problem is not None:
        return format_location(problem[0]), problem[1]
    return None


def unstorable_value(value: Any, location: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """Find a value that PostgreSQL cannot store in text or jsonb; return its location and why.

    PostgreSQL rejects NUL characters in text and in jsonb strings, and JSON has no NaN or
    Infinity (Python's JSON parser accepts them), so such signals are rejected on every backend.
    """
    if isinstance(value, str):
        return (location, "must not contain NUL characters (\\u0000)") if "\x00" in value else None
    if isinstance(value, float):
        return None if math.isfinite(value) else (location, f"{value} is not a JSON number")
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return (location, f"key {key!r} must not contain NUL characters (\\u0000)")
            problem = unstorable_value(item, (*location, key))
            if problem is not None:
                return problem
    if isinstance(value, list):
        for position, item in enumerate(value):
            problem = unstorable_value(item, (*location, position))
            if problem is not None:
                return problem
    return None


def idempotency_key_of(raw: Any) -> str | None:
    """Return the idempotency key of a raw signal, if it has a usable one, for error reports."""
    if isinstance(raw, dict):
        key = raw.get("idempotencyKey")
        if isinstance(key, str):
            return key
    return None


def _validation_error(error: ValidationError, index: int, raw: Any) -> SignalError:
    problems = error.errors(include_url=False)
    fields = tuple(
        _problem_field(problem, index, raw, hint=position < MAX_HINTS) for position, problem in enumerate(problems)
    )
    field, message = fields[0]
    message += more_problems_suffix(len(fields))
    return SignalError("validation_error", message, field, fields if len(fields) > 1 else ())


def _problem_field(problem: Any, index: int, raw: Any, *, hint: bool) -> tuple[str, str]:
    """Return the field path of one pydantic problem and a message that names it and its value.

    With `hint`, a missing field's message suggests a misspelled key that the signal carries.
    """
    location = field_location(problem)
    field = format_location(["signals", index, *location])
    reason = problem_reason(problem)
    if problem.get("type") == "missing":
        if hint:
            reason += misspelling_hint(raw, SignalIn, list(problem.get("loc", ())))
        return field, f"Invalid {field}: {reason}"
    return field, f"Invalid {field} {show_value(problem.get('input'))}: {reason}"


class FieldProblemOut(ResponseModel):
    field: str = Field(description="Path of the bad field, such as signals[2].eventName.")
    message: str
    value: Any = Field(
        default=None,
        description="The value sent when it is a string (cut to 200 characters), number or boolean; else null.",
    )


class BulkSignalErrorOut(ResponseModel):
    index: int = Field(description="Position of the signal in the request's `signals` array.")
    idempotency_key: str | None = None
    code: str = Field(description="Stable snake_case reason, such as customer_not_found.")
    field: str | None = Field(default=None, description="The offending field, such as signals[2].eventName.")
    message: str
    fields: list[FieldProblemOut] = Field(
        default_factory=list,
        description="Every bad field of the signal; `field` is the first. A signal failed for "
        "another reason lists itself, as signals[2].",
    )


class BulkSignalWarningOut(ResponseModel):
    index: int = Field(description="Position of the signal in the request's `signals` array.")
    code: str = Field(
        description="Stable snake_case code: no_pricing_line (the signal consumed no credits) or "
        "hold_ended (its holdId names a hold that had already ended)."
    )
    message: str


class BulkSignalsOut(ResponseModel):
    ingested: int = Field(description="Signals stored by this request.")
    duplicates: int = Field(
        description="Signals whose idempotencyKey was already used in this organization, or "
        "earlier in the same request; they change nothing."
    )
    failed: int = Field(description="Signals rejected; see `errors`. They change nothing.")
    errors: list[BulkSignalErrorOut] = Field(
        default_factory=list, description="One entry per failed signal."
    )
    warnings: list[BulkSignalWarningOut] = Field(
        default_factory=list,
        description="Stored signals that may not do what was meant, such as an event name that "
        "matches no prepaid-credits pricing line and so consumes nothing.",
    )


class SignalOut(ResponseModel):
    """A stored signal, in the Paid SignalListItem shape plus what rating it consumed."""

    id: str
    name: str = Field(description="The signal's eventName.")
    customer_id: str | None = None
    external_customer_id: str | None = None
    product_id: str | None = None
    external_product_id: str | None = None
    trace_id: str | None = None
    data: dict[str, Any] | None = None
    created_at: datetime = Field(description="When the event happened (the signal's timestamp).")
    received_at: datetime
    idempotency_key: str | None = None
    credits_consumed: str = Field(description="Credits drawn from grants, as a decimal string.")
    credits_pending: str = Field(
        description="Credits not covered by grants, recorded as pending consumption, as a decimal string."
    )
    credit_currency_id: str | None = None
    credit_currency_key: str | None = None
    cost: CostSummaryOut | None = Field(
        default=None, description="Sum of the AI costs attributed to the signal, in USD."
    )
    revenue: MoneyOut | None = Field(
        default=None, description="Money value of the credits the signal consumed, in USD."
    )
    margin: MoneyOut | None = Field(default=None, description="Revenue minus cost, in USD.")


class SignalListOut(ResponseModel):
    data: list[SignalOut]
    pagination: PaginationOut
