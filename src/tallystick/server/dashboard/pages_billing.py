"""Billing pages: checkouts, orders, invoices, and the payment provider settings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from tallystick.server import clock
from tallystick.server.checkout import service as checkouts
from tallystick.server.checkout.providers import provider_for_organization
from tallystick.server.checkout.schemas import CHECKOUT_STATUSES
from tallystick.server.dashboard import queries
from tallystick.server.dashboard.customer_view import next_renewal
from tallystick.server.dashboard.rendering import ListPage, render
from tallystick.server.dashboard.session import CurrentOperator
from tallystick.server.deps import ReadSession
from tallystick.server.models import Plan, Product
from tallystick.server.orders.queries import invoices_statement, orders_statement
from tallystick.server.pagination import PageParams, paginate

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
ORDER_STATUSES = ("draft", "active", "paused", "ended")
INVOICE_PAYMENT_STATUSES = ("pending", "paid", "partiallyPaid", "overdue", "error")


def _choice(value: str | None, choices: tuple[str, ...]) -> str | None:
    return value if value in choices else None


@router.get("/dashboard/checkouts")
def checkouts_page(
    request: Request, signed_in: CurrentOperator, session: ReadSession, status: str | None = None, offset: int = 0
) -> Response:
    now = clock.now()
    chosen = _choice(status, CHECKOUT_STATUSES)
    statement = checkouts.checkouts_statement(signed_in.organization_id, chosen, now)
    rows, pagination = paginate(session, statement, PageParams(limit=PAGE_SIZE, offset=max(offset, 0)))
    customers = queries.customers_by_id(session, signed_in.organization_id, {row.customer_id for row in rows if row.customer_id})
    context = {
        "checkouts": [(row, checkouts.effective_status(row, now)) for row in rows],
        "customers": customers,
        "statuses": CHECKOUT_STATUSES,
        "status": chosen or "",
        "page": ListPage.of(pagination),
        "base_query": f"status={chosen}&" if chosen else "",
    }
    return render(request, "dashboard/checkouts.html", signed_in, "billing", context)


@router.get("/dashboard/orders")
def orders_page(
    request: Request, signed_in: CurrentOperator, session: ReadSession, status: str | None = None, offset: int = 0
) -> Response:
    now = clock.now()
    chosen = _choice(status, ORDER_STATUSES)
    statement = orders_statement(signed_in.organization_id, status=chosen)
    rows, pagination = paginate(session, statement, PageParams(limit=PAGE_SIZE, offset=max(offset, 0)))
    organization_id = signed_in.organization_id
    customers = queries.customers_by_id(session, organization_id, {row.customer_id for row in rows})
    plan_ids = {row.plan_id for row in rows if row.plan_id}
    product_ids = {row.product_id for row in rows if row.product_id}
    plans = {row.id: row.name for row in session.scalars(select(Plan).where(Plan.organization_id == organization_id, Plan.id.in_(plan_ids)))}
    products = {
        row.id: row.name
        for row in session.scalars(select(Product).where(Product.organization_id == organization_id, Product.id.in_(product_ids)))
    }
    context = {
        "orders": [(row, next_renewal(row, now)) for row in rows],
        "customers": customers,
        "plans": plans,
        "products": products,
        "statuses": ORDER_STATUSES,
        "status": chosen or "",
        "page": ListPage.of(pagination),
        "base_query": f"status={chosen}&" if chosen else "",
    }
    return render(request, "dashboard/orders.html", signed_in, "billing", context)


@router.get("/dashboard/invoices")
def invoices_page(
    request: Request, signed_in: CurrentOperator, session: ReadSession, payment: str | None = None, offset: int = 0
) -> Response:
    chosen = _choice(payment, INVOICE_PAYMENT_STATUSES)
    statement = invoices_statement(signed_in.organization_id, payment_status=chosen)
    rows, pagination = paginate(session, statement, PageParams(limit=PAGE_SIZE, offset=max(offset, 0)))
    context = {
        "invoices": rows,
        "customers": queries.customers_by_id(session, signed_in.organization_id, {row.customer_id for row in rows}),
        "statuses": INVOICE_PAYMENT_STATUSES,
        "status": chosen or "",
        "page": ListPage.of(pagination),
        "base_query": f"payment={chosen}&" if chosen else "",
    }
    return render(request, "dashboard/invoices.html", signed_in, "billing", context)


@router.get("/dashboard/settings/payments")
def payment_settings_page(request: Request, signed_in: CurrentOperator, session: ReadSession) -> Response:
    # NOTE: only the embedded test provider exists so far, so this page shows it and cannot
    # switch providers; Stripe keys belong here once the Stripe provider exists.
    context = {"provider": provider_for_organization(session, signed_in.organization_id)}
    return render(request, "dashboard/payments.html", signed_in, "payments", context)
