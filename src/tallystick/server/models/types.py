"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

class JsonDocument(TypeDecorator[Any]):
    """A JSON value: JSONB on PostgreSQL (compact, indexable), JSON text on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


JsonObject = JsonDocument


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no offset, so values are normalised to UTC on the way in and stamped UTC on
    the way out. Naive values are rejected rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; attach a timezone")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ScaledDecimal(TypeDecorator[Decimal]):
    """An exact decimal stored as a 64-bit integer count of 10**-places units.

    SQLite has no exact decimal type, and sums of a NUMERIC column there go through floats, so
    both backends store integers and SQL sums stay exact. A value with more decimal places than
    the column keeps raises instead of being rounded silently: callers round first, with the
    rounding helper of their domain.
    """

    impl = BigInteger
    cache_ok = True

    def __init__(self, places: int) -> None:
        super().__init__()
        self.places = places
        self._factor = Decimal(10) ** places

    def __repr__(self) -> str:
        # Alembic renders column types with repr(), so this must rebuild the same type.
        return f"{type(self).__name__}(places={self.places})"

    def process_bind_param(self, value: Decimal | int | None, dialect: Any) -> int | None:
        if value is None:
            return None
        scaled = Decimal(value) * self._factor
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {self.places} decimal places")
        return int(scaled)

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)).scaleb(-self.places)


# Credit quantities: grants, consumption, balances. Nine places keep fractional credit costs
# such as 0.000001 credits per token exact, and leave room for 9.2 billion credits per row.
CREDIT_PLACES = 9


def Credits() -> ScaledDecimal:  # noqa: N802 - reads as a column type
    return ScaledDecimal(CREDIT_PLACES)
