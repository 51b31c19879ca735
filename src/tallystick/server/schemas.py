"""Base classes for wire models: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class RequestModel(BaseModel):
    """A request body. Unknown keys are ignored, since paid-python lets callers add extras."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", str_strip_whitespace=False
    )

    def provided(self) -> set[str]:
        """Return the Python names of the fields the client sent, null or not."""
        return set(self.model_fields_set)


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
}




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
