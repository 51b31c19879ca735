"""Base classes for wire models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError


class RequestModel(BaseModel):
    """A request body. Unknown keys are ignored, since paid-python lets callers add extras, but
    a key that differs from a field's name only in case, underscores or hyphens is rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", str_strip_whitespace=False
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_misspelled_keys(cls, data: Any) -> Any:
        # Ignored, `unitvalue` would leave the field `unitValue` unset without a word, and a
        # grant would be stored without its unit value. Models that keep unknown keys
        # (extra="allow") return them as sent, so they are left alone.
        if not isinstance(data, dict) or cls.model_config.get("extra") == "allow":
            return data
        spellings = _spellings(cls)
        if spellings.accepted.issuperset(data) and spellings.python_names.isdisjoint(data):
            return data
        for key, value in data.items():
            if not isinstance(key, str):
                continue
            wire_name = spellings.by_normalized.get(_normalized(key))
            if wire_name is None or key == wire_name:
                continue
            if key not in spellings.accepted:
                raise _key_error(key, value, f"unknown field; did you mean '{wire_name}'?")
            if wire_name in data and data[wire_name] != value:
                raise _key_error(key, value, f"conflicts with '{wire_name}'; send only '{wire_name}'")
        return data

    def provided(self) -> set[str]:
        """Return the Python names of the fields the client sent, null or not."""
        return set(self.model_fields_set)


@dataclass(frozen=True)
class _Spellings:
    accepted: frozenset[str]  # every key the model reads: wire names and Python names
    python_names: frozenset[str]  # Python names that differ from their wire name
    by_normalized: dict[str, str]  # normalized spelling -> wire name


def accepted_keys(model: type[BaseModel]) -> frozenset[str]:
    """Return every body key that a field of `model` reads: wire names, aliases and Python names."""
    return _spellings(model).accepted


def field_keys(name: str, field: FieldInfo) -> set[str]:
    """Return the keys that the field `name` reads: its Python name, wire name and alias choices."""
    keys = {name, _wire_name(name, field)}
    if isinstance(field.validation_alias, AliasChoices):
        keys.update(choice for choice in field.validation_alias.choices if isinstance(choice, str))
    return keys


def _wire_name(name: str, field: FieldInfo) -> str:
    return field.validation_alias if isinstance(field.validation_alias, str) else field.alias or name


@cache
def _spellings(model: type[BaseModel]) -> _Spellings:
    accepted: set[str] = set()
    python_names: set[str] = set()
    by_normalized: dict[str, str] = {}
    for name, field in model.model_fields.items():
        wire_name = _wire_name(name, field)
        accepted.update(field_keys(name, field))
        if name != wire_name:
            python_names.add(name)
        by_normalized[_normalized(wire_name)] = wire_name
    return _Spellings(frozenset(accepted), frozenset(python_names), by_normalized)


def _normalized(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _key_error(key: str, value: Any, message: str) -> ValidationError:
    error = PydanticCustomError("misspelled_field", message)
    return ValidationError.from_exception_data("body", [InitErrorDetails(type=error, loc=(key,), input=value)])


class ResponseModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class PaginationOut(ResponseModel):
    limit: int
    offset: int
    total: int
    has_more: bool


class EmptyResponse(ResponseModel):
    """The body of deletes: an empty JSON object, since every 2xx carries JSON."""


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, naming the field and value involved.")
    code: str = Field(description="Stable snake_case error code, such as not_found.")
    details: str | None = Field(default=None, description="More detail, when there is any.")
    fields: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field problems: field path, message and rejected value."
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid request; the message names the field."},
    401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key."},
    404: {"model": ErrorBody, "description": "No such object in this organization."},
    429: {"model": ErrorBody, "description": "Rate limited (when the server sets a rate limit); retry after Retry-After."},
    503: {"model": ErrorBody, "description": "The database is unavailable (retry after Retry-After), or the server is misconfigured."},
}




# The message of a date-time whose UTC form Python cannot represent, such as
# 9999-12-31T23:59:59-01:00: the database stores UTC, so such a value cannot be stored.
OUT_OF_UTC_RANGE = "is out of range: in UTC it falls outside the years 1 to 9999"


def to_utc(value: datetime) -> datetime:
    """Convert an aware date-time to UTC, or raise ValueError (with OUT_OF_UTC_RANGE) when
    the result would fall outside the years 1 to 9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(OUT_OF_UTC_RANGE) from None


def check_utc_range(value: datetime | None) -> datetime | None:
    """Return `value` unchanged when the database can store it; see `to_utc`."""
    if value is not None and value.tzinfo is not None:
        to_utc(value)
    return value


# A date-time of a request body that is stored: its UTC form must exist.
StorableDatetime = Annotated[datetime, AfterValidator(check_utc_range)]


def check_path_segment(value: str | None) -> str | None:
    """Check an external id that clients put in URL paths, such as /customers/external/{id}.

    HTTP clients and servers resolve "." and ".." segments before routing, and "/" splits the
    segment, so such an id could be stored but never addressed.
    """
    if value is None:
        return value
    if "/" in value:
        raise ValueError("must not contain '/', since it is used in URL paths")
    if value in (".", ".."):
        raise ValueError(f"must not be '{value}', since it is used in URL paths")
    return value


def decimal_to_number(value: Decimal | None) -> int | float | None:
    """Render an exact decimal where the wire format demands a JSON number.

    Whole values become integers, which JSON carries exactly; others become the nearest float.
    Endpoints that must stay exact add a decimal-string sibling field as well.
    """
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)
