"""Customer pages: the searchable list, creation, a customer's detail, manual grants and portal
links."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.catalog.service import list_currencies
from tallystick.server.checkout.routes import public_root
from tallystick.server.customers.schemas import CustomerCreate
from tallystick.server.customers.service import create_customer
from tallystick.server.dashboard import customer_view, forms, queries
from tallystick.server.dashboard.rendering import ListOffset, ListPage, redirect, render
from tallystick.server.dashboard.session import CheckedForm, CurrentOperator, SignedIn
from tallystick.server.deps import DbSession, ReadSession
from tallystick.server.errors import ApiError
from tallystick.server.ledger import service as ledger
from tallystick.server.ledger.schemas import GRANT_AMOUNT_PLACES
from tallystick.server.pagination import PageParams, paginate
from tallystick.server.portal.service import create_portal, portal_url
from tallystick.server.value.links import sign_access
from tallystick.server.web import PageError

router = APIRouter(include_in_schema=False)

# How long the receipt links of a customer page open the receipts, published or not.
OPERATOR_RECEIPT_ACCESS = timedelta(hours=12)

PAGE_SIZE = 50


@router.get("/dashboard/customers")
def customers_page(
    request: Request, signed_in: CurrentOperator, session: ReadSession, offset: ListOffset, q: str | None = None
) -> Response:
    return _render_list(request, signed_in, session, q, offset, values={}, errors={}, status_code=200)


def _render_list(
    request: Request,
    signed_in: SignedIn,
    session: Session,
    search: str | None,
    offset: int,
    *,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int,
) -> Response:
    search = (search or "").strip()[:200] or None
    page = PageParams(limit=PAGE_SIZE, offset=offset)
    customers, pagination = paginate(session, queries.customer_search(signed_in.organization_id, search), page)
    balances = queries.account_balances(
        session, signed_in.organization_id, clock.now(), customer_ids=[customer.id for customer in customers]
    )
    currencies = queries.currencies_by_id(session, signed_in.organization_id)
    available: dict[str, list[tuple[str, Any]]] = {}
    for balance in balances:
        currency = currencies.get(balance.currency_id)
        available.setdefault(balance.customer_id, []).append((currency.name if currency else balance.currency_id, balance.available))
    context = {
        "customers": customers,
        "available": available,
        "search": search or "",
        "page": ListPage.of(pagination),
        "base_query": urlencode({"q": search}) + "&" if search else "",
        "values": values,
        "errors": errors,
    }
    return render(request, "dashboard/customers.html", signed_in, "customers", context, status_code=status_code)


@router.post("/dashboard/customers")
def create_customer_form(request: Request, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    values = {key: form.get(key, "") for key in ("name", "external_id", "email")}
    try:
        body = CustomerCreate(
            name=forms.required(form, "name", "the customer's name"),
            external_id=forms.text(form, "external_id"),
            email=forms.text(form, "email"),
        )
        customer = create_customer(session, signed_in.organization_id, body)
    except forms.FieldError as error:
        return _render_list(request, signed_in, session, None, 0, values=values, errors={error.field: error.message}, status_code=400)
    except (ApiError, ValidationError) as error:
        errors = forms.errors_of(error, {"externalId": "external_id", "external_id": "external_id", "email": "email"}, "name")
        session.rollback()
        return _render_list(request, signed_in, session, None, 0, values=values, errors=errors, status_code=400)
    return redirect(f"/dashboard/customers/{customer.id}", "customer_created")


@router.get("/dashboard/customers/{customer_id}")
def customer_page(request: Request, customer_id: str, signed_in: CurrentOperator, session: ReadSession) -> Response:
    return _render_customer(request, signed_in, session, customer_id, status_code=200)


def _render_customer(
    request: Request,
    signed_in: SignedIn,
    session: Session,
    customer_id: str,
    *,
    status_code: int,
    grant_values: dict[str, str] | None = None,
    grant_errors: dict[str, str] | None = None,
    new_portal_url: str | None = None,
) -> Response:
    organization_id = signed_in.organization_id
    customer = customer_view.customer_of(session, organization_id, customer_id)
    if customer is None:
        raise PageError(404, "Customer not found", f"No customer with the id {customer_id} exists in this organization.")

    now = clock.now()
    receipts = customer_view.value_receipts(session, organization_id, customer.id)
    # Links that open unpublished receipts too, for as long as an operator keeps a page open.
    access_until = now + OPERATOR_RECEIPT_ACCESS
    secret = request.app.state.secret_key
    context = {
        "customer": customer,
        "now": now,
        "orders": customer_view.order_views(session, organization_id, customer.id, now),
        "balances": customer_view.balance_cards(session, organization_id, customer.id, now),
        "usage_charts": customer_view.usage_charts(session, organization_id, customer.id, now),
        "entries": customer_view.ledger_entries(session, organization_id, customer.id),
        "pending": customer_view.pending_consumption(session, organization_id, customer.id),
        "signals": customer_view.recent_signals(session, organization_id, customer.id),
        "traces": customer_view.recent_traces(session, organization_id, customer.id),
        "value": customer_view.delivered_value(session, organization_id, customer.id),
        "receipts": receipts,
        "receipt_access": {receipt.id: sign_access(secret, receipt.id, access_until) for receipt in receipts},
        "invoices": customer_view.invoices(session, organization_id, customer.id),
        "currency_options": [(row.id, row.name) for row in list_currencies(session, organization_id, "active")],
        "currency_names": {row.id: row.name for row in queries.currencies_by_id(session, organization_id).values()},
        "grant_values": grant_values or {},
        "grant_errors": grant_errors or {},
        "portal_url": new_portal_url,
    }
    return render(request, "dashboard/customer.html", signed_in, "customers", context, status_code=status_code)


@router.post("/dashboard/customers/{customer_id}/grants")
def grant_form(request: Request, customer_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Grant credits by hand: a manual grant, which settles pending consumption first."""
    customer = customer_view.customer_of(session, signed_in.organization_id, customer_id)
    if customer is None:
        raise PageError(404, "Customer not found", f"No customer with the id {customer_id} exists in this organization.")
    values = {key: form.get(key, "") for key in ("currency_id", "amount", "expires_on", "description")}

    try:
        currency_id = forms.required(form, "currency_id", "a credit currency")
        amount = forms.decimal(form, "amount", label="the amount")
        if amount is None:
            raise forms.FieldError("amount", "Enter the number of credits to grant.")
        expires_at = forms.day_start(form, "expires_on")
        if expires_at is not None and expires_at <= clock.now():
            raise forms.FieldError("expires_on", "Choose an expiry date in the future, or leave it empty.")
        active = {row.id for row in list_currencies(session, signed_in.organization_id, "active")}
        if currency_id not in active:
            raise forms.FieldError("currency_id", "Choose an active credit currency.")
        ledger.check_credit_amount("amount", amount, places=GRANT_AMOUNT_PLACES)
        ledger.grant(
            session,
            organization_id=signed_in.organization_id,
            customer_id=customer.id,
            currency_id=currency_id,
            amount=amount,
            expires_at=expires_at,
            source="manual",
            origin_code="manual",
            description=forms.text(form, "description"),
        )
    except forms.FieldError as error:
        return _render_customer(
            request, signed_in, session, customer.id, status_code=400, grant_values=values, grant_errors={error.field: error.message}
        )
    except ApiError as error:
        session.rollback()
        errors = forms.errors_of(error, {"amount": "amount", "expiresAt": "expires_on"}, "amount")
        return _render_customer(request, signed_in, session, customer.id, status_code=400, grant_values=values, grant_errors=errors)
    return redirect(f"/dashboard/customers/{customer.id}", "grant_created")


@router.post("/dashboard/customers/{customer_id}/portal-links")
def portal_link_form(request: Request, customer_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Create a customer portal link and show it on the customer's page."""
    customer = customer_view.customer_of(session, signed_in.organization_id, customer_id)
    if customer is None:
        raise PageError(404, "Customer not found", f"No customer with the id {customer_id} exists in this organization.")
    portal = create_portal(session, customer, return_url=None, expires_at=None, now=clock.now())
    url = portal_url(public_root(request), request.app.state.secret_key, portal)
    return _render_customer(request, signed_in, session, customer.id, status_code=200, new_portal_url=url)
