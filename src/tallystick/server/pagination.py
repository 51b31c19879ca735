"""Limit/offset pagination in the wire shape ``{data, pagination: {limit, offset, total, hasMore}}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tallystick.server.errors import bad_request
from tallystick.server.settings import get_settings


# The largest offset a list accepts. Databases take at most a signed 64-bit offset, and no
# list of one organization comes near this many items.
MAX_OFFSET = 10**9


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: Annotated[str | None, Query(description="Maximum number of items to return.")] = None,
    offset: Annotated[str | None, Query(description="Number of items to skip.")] = None,
) -> PageParams:
    settings = get_settings()
    return PageParams(
        limit=parse_int_parameter("limit", limit, settings.default_page_size, 1, settings.max_page_size),
        offset=parse_offset(offset),
    )


def parse_offset(raw: str | None) -> int:
    """Read an `offset` query parameter: 0 when absent, else 0 to MAX_OFFSET."""
    return parse_int_parameter("offset", raw, 0, 0, MAX_OFFSET)


def parse_int_parameter(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    """Read an integer query parameter, or raise a 400 naming it when it is not in low..high."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(name, "must be an integer", raw) from None
    if value < low:
        raise bad_request(name, f"must be at least {low}", value)
    if value > high:
        raise bad_request(name, f"must be at most {high}", value)
    return value


Page = Annotated[PageParams, Depends(page_params)]


def paginate(session: Session, statement: Select[Any], page: PageParams) -> tuple[list[Any], dict[str, Any]]:
    """Run `statement` for one page; return its rows and the pagination object."""
    total = session.scalar(select(func.count()).select_from(statement.order_by(None).subquery()))
    rows = list(session.scalars(statement.limit(page.limit).offset(page.offset)))
    total = int(total or 0)
    return rows, pagination_body(page, total)


def pagination_body(page: PageParams, total: int) -> dict[str, Any]:
    return {
        "limit": page.limit,
        "offset": page.offset,
        "total": total,
        "hasMore": page.offset + page.limit < total,
    }
