"""Parsing of query-string filters shared by list endpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Query

from tallystick.server.errors import bad_request
from tallystick.server.schemas import to_utc

ExternalCustomerFilter = Annotated[
    str | None,
    Query(
        alias="externalCustomerId",
        description=(
            "The live customer with this external id, the one GET /customers/external/{id} returns. "
            "A deleted customer's rows are listed by customerId."
        ),
    ),
]


def parse_date_filter(name: str, raw: str | None, *, end_of_day: bool = False) -> datetime | None:
    """Parse ``YYYY-MM-DD`` (as UTC) or an RFC 3339 date-time; None when absent.

    A bare date used as an upper bound (`end_of_day`) means the whole of that day.
    """
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if end_of_day:
                moment = moment.replace(hour=23, minute=59, second=59, microsecond=999_999)
            return moment
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(name, "must be a date (YYYY-MM-DD) or an RFC 3339 date-time", raw) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return to_utc(moment)
    except ValueError as error:
        raise bad_request(name, str(error), raw) from None


def parse_bool_filter(name: str, raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_request(name, "must be true or false", raw)


def parse_choice_filter(name: str, raw: str | None, choices: tuple[str, ...]) -> str | None:
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise bad_request(name, f"must be one of {', '.join(choices)}", raw)
    return raw
