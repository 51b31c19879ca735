"""Every API router, in the order they are mounted under /api/v2."""

from __future__ import annotations

from fastapi import APIRouter


def all_routers() -> list[APIRouter]:
    # Imported here so that importing the app module does not load every domain.
    from tallystick.server.billing.routes import router as billing_router
    from tallystick.server.catalog.routes import currencies_router, plans_router, products_router
    from tallystick.server.checkout.routes import router as checkouts_router
    from tallystick.server.costs.routes import router as costs_router
    from tallystick.server.customers.routes import router as customers_router
    from tallystick.server.ledger.hold_routes import router as holds_router
    from tallystick.server.ledger.routes import router as ledger_router
    from tallystick.server.orders.routes import invoices_router, orders_router
    from tallystick.server.portal.routes import router as portal_router
    from tallystick.server.signals.routes import router as signals_router
    from tallystick.server.value.routes import router as value_router
    from tallystick.server.webhooks.routes import router as webhooks_router

    # FastAPI 0.165 matches a request against the routes one by one, in this order: about
    # 200 routes at up to 6 µs each on the 2-core benchmark machine (docs/benchmarks.md). The
    # routes that serve the most requests (signals, balances and holds) therefore come first.
    # No path of one router matches a route of another (tests/test_routing.py checks this),
    # so the order changes no response.
    return [signals_router, ledger_router, holds_router, currencies_router, products_router, plans_router, customers_router, costs_router, webhooks_router, checkouts_router, orders_router, invoices_router, value_router, billing_router, portal_router]


def page_routers() -> list[APIRouter]:
    """Routers of the server-rendered pages, mounted at the server root."""
    from tallystick.server.checkout.pages import router as checkout_pages_router
    from tallystick.server.checkout.providers.stripe_webhooks import router as stripe_webhooks_router
    from tallystick.server.dashboard import dashboard_router
    from tallystick.server.portal.pages import router as portal_pages_router
    from tallystick.server.value.pages import router as value_pages_router

    return [checkout_pages_router, value_pages_router, stripe_webhooks_router, dashboard_router(), portal_pages_router]
