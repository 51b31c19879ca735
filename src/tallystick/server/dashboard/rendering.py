"""Rendering of dashboard pages: the navigation, the operator's CSRF token and notices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from tallystick.server.dashboard.session import SignedIn
from tallystick.server.web import PAGE_HEADERS, templates
from tallystick.server.pagination import MAX_OFFSET

# (section key, label, path) of the navigation, in order.
NAV = [
    ("overview", "Overview", "/dashboard"),
    ("customers", "Customers", "/dashboard/customers"),
    ("catalog", "Catalog", "/dashboard/catalog"),
    ("signals", "Signals", "/dashboard/signals"),
    ("traces", "Traces", "/dashboard/traces"),
    ("billing", "Billing", "/dashboard/checkouts"),
    ("value", "Value types", "/dashboard/value-types"),
    ("webhooks", "Webhooks", "/dashboard/webhooks"),
    ("api_keys", "API keys", "/dashboard/api-keys"),
    ("payments", "Payments", "/dashboard/settings/payments"),
]

# Messages shown after a form succeeds, by the `notice` query parameter of the redirect. Only
# these fixed texts are shown, so a crafted link cannot put words on the page.
NOTICES = {
    "currency_created": "Credit currency created.",
    "currency_updated": "Credit currency saved.",
    "product_created": "Product created. Add its pricing lines below.",
    "product_updated": "Product saved.",
    "line_saved": "Pricing line saved.",
    "plan_created": "Plan created.",
    "plan_updated": "Plan saved.",
    "customer_created": "Customer created.",
    "grant_created": "Credits granted.",
    "webhook_saved": "Webhook saved.",
    "value_type_saved": "Value type saved as a new value model version; signals were evaluated again.",
    "redelivery_queued": "The delivery will be sent again shortly.",
    "key_revoked": "API key revoked. Requests with it now get 401.",
    "payments_saved": "Payment settings saved. New checkouts use them.",
}


def render(
    request: Request,
    template: str,
    signed_in: SignedIn,
    section: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """Render a dashboard page with its navigation; `section` marks the current nav entry."""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    full_context = {
        "nav": NAV,
        "section": section,
        "operator": signed_in,
        "csrf_token": signed_in.csrf_token,
        "notice": notice,
        **context,
    }
    return templates.TemplateResponse(request, template, full_context, status_code=status_code, headers=PAGE_HEADERS)


def redirect(path: str, notice: str | None = None) -> RedirectResponse:
    """Redirect a form post to `path` with a 303, so reloading the page does not post again."""
    if notice is not None:
        assert notice in NOTICES
        path += ("&" if "?" in path else "?") + urlencode({"notice": notice})
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class ListPage:
    """The position of one page in a long list, for the pager under the table."""

    offset: int
    limit: int
    total: int

    @classmethod
    def of(cls, pagination: dict[str, Any]) -> ListPage:
        return cls(offset=pagination["offset"], limit=pagination["limit"], total=pagination["total"])

    @property
    def has_more(self) -> bool:
        return self.offset + self.limit < self.total

    @property
    def first(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.offset + self.limit, self.total)

    @property
    def next_offset(self) -> int:
        return self.offset + self.limit

    @property
    def previous_offset(self) -> int:
        return max(self.offset - self.limit, 0)


def list_offset(offset: str | None = None) -> int:
    """Read the `offset` query parameter of a list page.

    Anything but a number reads as 0. An offset past MAX_OFFSET reads as MAX_OFFSET, an empty page.
    """
    try:
        value = int(offset or 0)
    except ValueError:
        return 0
    return min(max(value, 0), MAX_OFFSET)


ListOffset = Annotated[int, Depends(list_offset)]


def short_time(value: datetime | None) -> str:
    """Format a UTC time as "2026-01-31 14:05 UTC", or "" for None."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M UTC")


def nanos_time(value: str | int | None) -> str:
    """Format a Unix time in nanoseconds (as OTLP spans carry it) like short_time."""
    if not value:
        return ""
    return short_time(datetime.fromtimestamp(int(value) / 1_000_000_000, UTC))


templates.env.filters["short_time"] = short_time
templates.env.filters["nanos_time"] = nanos_time
