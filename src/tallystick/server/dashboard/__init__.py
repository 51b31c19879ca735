"""The operator dashboard at /dashboard: server-rendered pages behind an operator sign-in."""

from __future__ import annotations

from fastapi import APIRouter


def dashboard_router() -> APIRouter:
    """Return one router with every dashboard page."""
    from tallystick.server.dashboard import (
        pages_activity,
        pages_auth,
        pages_billing,
        pages_catalog,
        pages_customers,
        pages_overview,
        pages_settings,
    )

    router = APIRouter(include_in_schema=False)
    for module in (pages_auth, pages_overview, pages_customers, pages_catalog, pages_activity, pages_billing, pages_settings):
        router.include_router(module.router)
    return router
