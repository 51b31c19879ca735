"""The dashboard's overview page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tallystick.server import clock
from tallystick.server.dashboard.overview import DEFAULT_PERIOD, PERIODS, build_overview
from tallystick.server.dashboard.rendering import render
from tallystick.server.dashboard.session import CurrentOperator
from tallystick.server.deps import ReadSession

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
def overview_page(request: Request, signed_in: CurrentOperator, session: ReadSession, days: str | None = None) -> Response:
    # Only the offered periods are shown; any other value shows the default one.
    period = next((choice for choice in PERIODS if str(choice) == days), DEFAULT_PERIOD)
    overview = build_overview(session, signed_in.organization_id, clock.now(), period)
    return render(request, "dashboard/overview.html", signed_in, "overview", {"overview": overview, "periods": PERIODS})
