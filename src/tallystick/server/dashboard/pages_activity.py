"""The signals and traces explorers, with filters in the query string."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tallystick.server.costs.reports import TraceFilters, list_traces
from tallystick.server.dashboard import customer_view, forms
from tallystick.server.dashboard.rendering import ListOffset, ListPage, render
from tallystick.server.dashboard.session import CurrentOperator
from tallystick.server.deps import ReadSession
from tallystick.server.signals.queries import SignalFilters, list_signals

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
TRACE_STATUSES = ("priced", "unpriced")


def _filter_values(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    return {name: request.query_params.get(name, "").strip()[:255] for name in names}


def _date_range(values: dict[str, str], errors: dict[str, str]):  # type: ignore[no-untyped-def]
    """Read the `from` and `to` dates; `to` includes its whole day."""
    start = end = None
    try:
        start = forms.day_start(values, "from")
    except forms.FieldError as error:
        errors[error.field] = error.message
    try:
        end = forms.day_start(values, "to")
        if end is not None:
            end += timedelta(days=1) - timedelta(microseconds=1)
    except forms.FieldError as error:
        errors[error.field] = error.message
    return start, end


def _query_prefix(values: dict[str, str]) -> str:
    """Return the filters as a query string prefix for the pager links."""
    kept = {name: value for name, value in values.items() if value}
    return urlencode(kept) + "&" if kept else ""


@router.get("/dashboard/signals")
def signals_page(request: Request, signed_in: CurrentOperator, session: ReadSession, offset: ListOffset) -> Response:
    values = _filter_values(request, ("event", "customer", "product", "from", "to"))
    errors: dict[str, str] = {}
    start, end = _date_range(values, errors)
    filters = SignalFilters(
        event_name=values["event"] or None,
        external_customer_id=values["customer"] or None,
        external_product_id=values["product"] or None,
        occurred_from=start,
        occurred_to=end,
    )
    rows, total = list_signals(session, signed_in.organization_id, filters, PAGE_SIZE, offset)
    context = {
        "values": values,
        "errors": errors,
        "signals": customer_view.signal_views(session, signed_in.organization_id, rows),
        "page": ListPage(offset=offset, limit=PAGE_SIZE, total=total),
        "base_query": _query_prefix(values),
        "filtered": any(values.values()),
    }
    return render(request, "dashboard/signals.html", signed_in, "signals", context)


@router.get("/dashboard/traces")
def traces_page(request: Request, signed_in: CurrentOperator, session: ReadSession, offset: ListOffset) -> Response:
    values = _filter_values(request, ("customer", "product", "status", "from", "to"))
    errors: dict[str, str] = {}
    start, end = _date_range(values, errors)
    if values["status"] not in ("", *TRACE_STATUSES):
        errors["status"] = "Choose priced or unpriced."
        values["status"] = ""
    filters = TraceFilters(
        start=start,
        end=end,
        external_customer_id=values["customer"] or None,
        external_product_id=values["product"] or None,
        status=values["status"] or None,
    )
    result = list_traces(session, signed_in.organization_id, filters, limit=PAGE_SIZE, offset=offset)
    context = {
        "values": values,
        "errors": errors,
        "traces": result.traces,
        "statuses": [(status, status) for status in TRACE_STATUSES],
        "page": ListPage(offset=result.meta.offset, limit=PAGE_SIZE, total=result.meta.total),
        "base_query": _query_prefix(values),
        "filtered": any(values.values()),
    }
    return render(request, "dashboard/traces.html", signed_in, "traces", context)
