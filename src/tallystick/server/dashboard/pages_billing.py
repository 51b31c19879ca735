"""Billing pages: checkouts, orders, invoices, and the payment provider settings."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.billing import routes as billing_routes
from tallystick.server.billing.routes import PaymentSettingsUpdate
from tallystick.server.checkout import service as checkouts
from tallystick.server.checkout.providers import PROVIDER_NAMES, payment_settings
from tallystick.server.checkout.schemas import CHECKOUT_STATUSES
from tallystick.server.dashboard import forms, queries
from tallystick.server.dashboard.customer_view import next_renewal
from tallystick.server.dashboard.rendering import ListOffset, ListPage, redirect, render
from tallystick.server.dashboard.session import CheckedForm, CurrentOperator, SignedIn
from tallystick.server.deps import DbSession, Principal, ReadSession
from tallystick.server.errors import ApiError
from tallystick.server.orders.queries import invoices_statement, orders_statement
from tallystick.server.pagination import PageParams, paginate

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
ORDER_STATUSES = ("draft", "active", "paused", "ended")
INVOICE_PAYMENT_STATUSES = ("pending", "paid", "partiallyPaid", "overdue", "error")
PROVIDER_LABELS = {"test": "Test mode (no money moves)", "stripe": "Stripe"}


def _choice(value: str | None, choices: tuple[str, ...]) -> str | None:
    return value if value in choices else None


@router.get("/dashboard/checkouts")
def checkouts_page(
    request: Request, signed_in: CurrentOperator, session: ReadSession, offset: ListOffset, status: str | None = None
) -> Response:
    now = clock.now()
    chosen = _choice(status, CHECKOUT_STATUSES)
    statement = checkouts.checkouts_statement(signed_in.organization_id, chosen, now)
    rows, pagination = paginate(session, statement, PageParams(limit=PAGE_SIZE, offset=offset))
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
    request: Request, signed_in: CurrentOperator, session: ReadSession, offset: ListOffset, status: str | None = None
) -> Response:
    now = clock.now()
    chosen = _choice(status, ORDER_STATUSES)
    statement = orders_statement(signed_in.organization_id, status=chosen)
    rows, pagination = paginate(session, statement, PageParams(limit=PAGE_SIZE, offset=offset))
    organization_id = signed_in.organization_id
    customers = queries.customers_by_id(session, organization_id, {row.customer_id for row in rows})
    plan_ids = {row.plan_id for row in rows if row.plan_id}
    product_ids = {row.product_id for row in rows if row.product_id}
    plans = queries.plan_names(session, organization_id, plan_ids)
    products = queries.product_names(session, organization_id, product_ids)
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
    request: Request, signed_in: CurrentOperator, session: ReadSession, offset: ListOffset, payment: str | None = None
) -> Response:
    chosen = _choice(payment, INVOICE_PAYMENT_STATUSES)
    statement = invoices_statement(signed_in.organization_id, payment_status=chosen)
    rows, pagination = paginate(session, statement, PageParams(limit=PAGE_SIZE, offset=offset))
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
    return _render_payments(request, signed_in, session, values={}, errors={}, status_code=200)


def _render_payments(
    request: Request, signed_in: SignedIn, session: Session, *, values: dict[str, str], errors: dict[str, str], status_code: int
) -> Response:
    settings = payment_settings(session, signed_in.organization_id)
    current = billing_routes.get_payment_settings(request, _principal(signed_in), session)
    context = {
        "settings": current,
        "provider": values.get("provider") or (settings.provider if settings is not None else "test"),
        "providers": [(name, PROVIDER_LABELS.get(name, name)) for name in PROVIDER_NAMES],
        "errors": errors,
    }
    return render(request, "dashboard/payments.html", signed_in, "payments", context, status_code=status_code)


def _principal(signed_in: SignedIn) -> Principal:
    # The payment settings rules live in the REST routes, which act for a principal. The
    # dashboard calls them for the operator's organization, with no API key involved.
    return Principal(organization_id=signed_in.organization_id, api_key_id="")


@router.post("/dashboard/settings/payments")
def update_payment_settings_form(request: Request, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Choose the provider of new checkouts; empty key fields keep the stored keys."""
    fields: dict[str, str] = {"provider": form.get("provider", "")}
    for name in ("stripe_secret_key", "stripe_webhook_secret"):
        value = forms.text(form, name)
        if value is not None:
            fields[name] = value
    try:
        body = PaymentSettingsUpdate(**fields)
        billing_routes.update_payment_settings(body, request, _principal(signed_in), session)
    except (ApiError, ValidationError) as error:
        session.rollback()
        errors = forms.errors_of(
            error,
            {"stripeSecretKey": "stripe_secret_key", "stripe_secret_key": "stripe_secret_key",
             "stripeWebhookSecret": "stripe_webhook_secret", "stripe_webhook_secret": "stripe_webhook_secret"},
            "provider",
        )
        return _render_payments(request, signed_in, session, values={"provider": fields["provider"]}, errors=errors, status_code=400)
    log.info("dashboard.payment_settings_updated", extra={"operator_id": signed_in.operator_id, "provider": body.provider})
    return redirect("/dashboard/settings/payments", "payments_saved")
