"""Reading dashboard form fields: decimals, prices, dates, and turning the domain services'
errors into messages shown under the fields."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from babel.numbers import get_currency_precision
from pydantic import ValidationError

from tallystick.server.errors import ApiError, format_location


class FieldError(ValueError):
    """A form field's value is invalid; `field` is the form field name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def text(form: dict[str, str], name: str) -> str | None:
    """Return the stripped field value, or None when it is empty."""
    value = form.get(name, "").strip()
    return value or None


def required(form: dict[str, str], name: str, label: str) -> str:
    value = text(form, name)
    if value is None:
        raise FieldError(name, f"Enter {label}.")
    return value


def decimal(form: dict[str, str], name: str, *, label: str) -> Decimal | None:
    """Parse a decimal such as "1,000.5"; None when empty."""
    raw = text(form, name)
    if raw is None:
        return None
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise FieldError(name, f"Enter {label} as a number, such as 1000 or 0.5.") from None
    if not value.is_finite():
        raise FieldError(name, f"Enter {label} as a number, such as 1000 or 0.5.")
    return value


# Largest price a form accepts, in minor units: the bound orders put on unit prices, so that a
# price times a quantity stays within the 64-bit money columns.
MAX_PRICE_MINOR_UNITS = 10**12


def price_minor_units(form: dict[str, str], name: str, currency: str) -> int | None:
    """Parse a price in major units ("79" or "79.00") into minor units of `currency` (7900)."""
    value = decimal(form, name, label="the price")
    if value is None:
        return None
    # Babel gives unknown codes two places; the pricing line's own check rejects bad codes.
    places = get_currency_precision(currency)
    minor = value.scaleb(places)
    if value < 0 or minor != minor.to_integral_value():
        raise FieldError(name, f"Enter a price of at least 0 with at most {places} decimal places, such as 79.00.")
    if minor > MAX_PRICE_MINOR_UNITS:
        raise FieldError(name, f"Enter a price of at most {MAX_PRICE_MINOR_UNITS // 10**places:,} {currency}.")
    return int(minor)


def day_start(form: dict[str, str], name: str) -> datetime | None:
    """Parse a date field (YYYY-MM-DD) as the start of that day in UTC; None when empty."""
    raw = text(form, name)
    if raw is None:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise FieldError(name, "Enter a date such as 2030-01-31.") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def errors_of(error: ApiError | ValidationError, fields: dict[str, str], default_field: str) -> dict[str, str]:
    """Map a service error to {form field: message}.

    `fields` maps API field paths (such as "amount" or "attributes[0].pricing.creditCost") to
    form field names; a problem on another path is shown under `default_field`.
    """
    problems: list[tuple[str, str]] = []
    if isinstance(error, ValidationError):
        for item in error.errors():
            path = format_location([part for part in item["loc"] if not (isinstance(part, str) and part[:1].isupper())])
            problems.append((path, str(item.get("msg", "is invalid"))))
    elif error.fields:
        problems = [(str(item.get("field", "")), str(item.get("message", error.message))) for item in error.fields]
    else:
        problems = [("", error.message)]

    messages: dict[str, str] = {}
    for path, message in problems:
        field = _match(path, fields) or default_field
        messages.setdefault(field, _sentence(message))
    return messages


def _match(path: str, fields: dict[str, str]) -> str | None:
    for prefix, field in fields.items():
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return field
    return None


def _sentence(message: str) -> str:
    message = message.strip()
    if message.lower().startswith("value error, "):
        message = message[len("value error, ") :]
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
