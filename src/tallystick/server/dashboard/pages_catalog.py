"""Catalog pages: credit currencies, products with their pricing lines, and plans with credit
benefits, created and edited through the catalog service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from tallystick.server.catalog import service as catalog
from tallystick.server.catalog.schemas import (
    CreditCurrencyCreate,
    CreditCurrencyUpdate,
    PlanCreate,
    PlanUpdate,
    ProductCreate,
    ProductUpdate,
)
from tallystick.server.dashboard import catalog_forms, forms
from tallystick.server.dashboard.rendering import redirect, render
from tallystick.server.dashboard.session import CheckedForm, CurrentOperator, SignedIn
from tallystick.server.deps import DbSession, ReadSession
from tallystick.server.errors import ApiError
from tallystick.server.models import CreditCurrency, Plan, Product
from tallystick.server.web import PageError

router = APIRouter(include_in_schema=False)

Problem = forms.FieldError | ApiError | ValidationError


def _errors(error: Problem, fields: dict[str, str], default_field: str) -> dict[str, str]:
    if isinstance(error, forms.FieldError):
        return {error.field: error.message}
    return forms.errors_of(error, fields, default_field)


# The catalog overview, with the currency and product forms


@router.get("/dashboard/catalog")
def catalog_page(request: Request, signed_in: CurrentOperator, session: ReadSession) -> Response:
    return _render_catalog(request, signed_in, session, status_code=200)


def _render_catalog(request: Request, signed_in: SignedIn, session: Session, *, status_code: int, **forms_state: Any) -> Response:
    organization_id = signed_in.organization_id
    products = list(session.scalars(catalog.products_statement(organization_id, name=None, active=None, archived=None)))
    plans = list(
        session.scalars(
            catalog.plans_statement(organization_id, product_id=None, external_product_id=None, include_archived=True)
        )
    )
    currencies = catalog.list_currencies(session, organization_id, None)
    context = {
        "currencies": currencies,
        "currency_names": {row.id: row.name for row in currencies},
        "products": products,
        "product_names": {row.id: row.name for row in products},
        "plans": plans,
        "currency_values": forms_state.get("currency_values", {}),
        "currency_errors": forms_state.get("currency_errors", {}),
        "product_values": forms_state.get("product_values", {"active": "on"}),
        "product_errors": forms_state.get("product_errors", {}),
    }
    return render(request, "dashboard/catalog.html", signed_in, "catalog", context, status_code=status_code)


@router.post("/dashboard/catalog/currencies")
def create_currency_form(request: Request, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    values = {key: form.get(key, "") for key in ("currency_name", "currency_key", "currency_description")}
    try:
        body = CreditCurrencyCreate(
            name=forms.required(form, "currency_name", "a name, such as Chat Credits"),
            key=forms.required(form, "currency_key", "a key, such as chat_credits"),
            description=forms.text(form, "currency_description"),
        )
        catalog.create_currency(session, signed_in.organization_id, body)
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, {"name": "currency_name", "key": "currency_key", "description": "currency_description"}, "currency_name")
        return _render_catalog(request, signed_in, session, status_code=400, currency_values=values, currency_errors=errors)
    return redirect("/dashboard/catalog", "currency_created")


@router.get("/dashboard/catalog/currencies/{currency_id}")
def currency_page(request: Request, currency_id: str, signed_in: CurrentOperator, session: ReadSession) -> Response:
    currency = _currency(session, signed_in, currency_id)
    values = {"currency_description": currency.description or "", "status": currency.status}
    return _render_currency(request, signed_in, currency, values, {}, status_code=200)


def _currency(session: Session, signed_in: SignedIn, currency_id: str) -> CreditCurrency:
    try:
        return catalog.get_currency(session, signed_in.organization_id, currency_id)
    except ApiError:
        raise PageError(
            404, "Credit currency not found", f"No credit currency with the id {currency_id} exists in this organization."
        ) from None


def _render_currency(
    request: Request, signed_in: SignedIn, currency: CreditCurrency, values: dict[str, str], errors: dict[str, str], *, status_code: int
) -> Response:
    context = {"currency": currency, "values": values, "errors": errors}
    return render(request, "dashboard/currency.html", signed_in, "catalog", context, status_code=status_code)


@router.post("/dashboard/catalog/currencies/{currency_id}")
def update_currency_form(request: Request, currency_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    """Edit a credit currency's description, or archive it; its name and key never change."""
    currency = _currency(session, signed_in, currency_id)
    values = {"currency_description": form.get("currency_description", ""), "status": form.get("status", "")}
    try:
        body = CreditCurrencyUpdate(description=forms.text(form, "currency_description"), status=form.get("status") or None)
        catalog.update_currency(session, currency, body)
    except (ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, {"description": "currency_description", "status": "status"}, "currency_description")
        currency = _currency(session, signed_in, currency_id)
        return _render_currency(request, signed_in, currency, values, errors, status_code=400)
    return redirect("/dashboard/catalog", "currency_updated")


@router.post("/dashboard/catalog/products")
def create_product_form(request: Request, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    values = {key: form.get(key, "") for key in ("product_name", "product_external_id", "product_description", "active")}
    try:
        body = ProductCreate(
            name=forms.required(form, "product_name", "the product's name"),
            external_id=forms.text(form, "product_external_id"),
            description=forms.text(form, "product_description"),
            active=form.get("active") == "on",
        )
        product = catalog.create_product(session, signed_in.organization_id, body)
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, {"name": "product_name", "externalId": "product_external_id", "external_id": "product_external_id"}, "product_name")
        return _render_catalog(request, signed_in, session, status_code=400, product_values=values, product_errors=errors)
    return redirect(f"/dashboard/catalog/products/{product.id}", "product_created")


# A product and its pricing lines


def _product(session: Session, signed_in: SignedIn, product_id: str) -> Product:
    try:
        return catalog.get_product(session, signed_in.organization_id, product_id)
    except ApiError:
        raise PageError(404, "Product not found", f"No product with the id {product_id} exists in this organization.") from None


@router.get("/dashboard/catalog/products/{product_id}")
def product_page(request: Request, product_id: str, signed_in: CurrentOperator, session: ReadSession) -> Response:
    return _render_product(request, signed_in, session, _product(session, signed_in, product_id), status_code=200)


def _render_product(
    request: Request, signed_in: SignedIn, session: Session, product: Product, *, status_code: int, **state: Any
) -> Response:
    currencies = catalog.list_currencies(session, signed_in.organization_id, "active")
    plans = list(
        session.scalars(
            catalog.plans_statement(signed_in.organization_id, product_id=product.id, external_product_id=None, include_archived=True)
        )
    )
    context = {
        "product": product,
        "plans": plans,
        "currency_names": {row.id: row.name for row in catalog.list_currencies(session, signed_in.organization_id, None)},
        "currency_options": [(row.id, row.name) for row in currencies],
        "line_types": list(catalog_forms.LINE_TYPES.items()),
        "frequencies": [(name, name) for name in catalog_forms.FORM_FREQUENCIES],
        "editable_types": catalog_forms.LINE_TYPES,
        "product_values": state.get("product_values")
        or {
            "product_name": product.name,
            "product_external_id": product.external_id or "",
            "product_description": product.description or "",
            "active": "on" if product.active else "",
        },
        "product_errors": state.get("product_errors", {}),
        "line_values": state.get("line_values", {"pricing_type": "RecurringPerUnit", "currency": "USD", "billing_frequency": "Monthly"}),
        "line_errors": state.get("line_errors", {}),
    }
    return render(request, "dashboard/product.html", signed_in, "catalog", context, status_code=status_code)


@router.post("/dashboard/catalog/products/{product_id}")
def update_product_form(request: Request, product_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    product = _product(session, signed_in, product_id)
    values = {key: form.get(key, "") for key in ("product_name", "product_external_id", "product_description", "active")}
    try:
        body = ProductUpdate(
            name=forms.required(form, "product_name", "the product's name"),
            external_id=forms.text(form, "product_external_id"),
            description=forms.text(form, "product_description"),
            active=form.get("active") == "on",
        )
        catalog.update_product(session, product, body)
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, {"name": "product_name", "externalId": "product_external_id", "external_id": "product_external_id"}, "product_name")
        product = _product(session, signed_in, product_id)
        return _render_product(request, signed_in, session, product, status_code=400, product_values=values, product_errors=errors)
    return redirect(f"/dashboard/catalog/products/{product.id}", "product_updated")


@router.post("/dashboard/catalog/products/{product_id}/lines")
def add_line_form(request: Request, product_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    product = _product(session, signed_in, product_id)
    values = dict(form)
    try:
        upsert = catalog_forms.line_from_form(form, None)
        catalog.update_product(session, product, ProductUpdate(product_attributes=[upsert]))
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, catalog_forms.LINE_ERROR_FIELDS, "pricing_type")
        product = _product(session, signed_in, product_id)
        return _render_product(request, signed_in, session, product, status_code=400, line_values=values, line_errors=errors)
    return redirect(f"/dashboard/catalog/products/{product.id}", "line_saved")


@router.get("/dashboard/catalog/products/{product_id}/lines/{line_id}")
def line_page(request: Request, product_id: str, line_id: str, signed_in: CurrentOperator, session: ReadSession) -> Response:
    product = _product(session, signed_in, product_id)
    line = _line(product, line_id)
    return _render_line(request, signed_in, session, product, line.id, catalog_forms.line_values(line), {}, status_code=200)


def _line(product: Product, line_id: str) -> Any:
    line = next((item for item in product.attributes if item.id == line_id), None)
    if line is None:
        raise PageError(404, "Pricing line not found", f"The product has no pricing line with the id {line_id}.")
    return line


def _render_line(
    request: Request, signed_in: SignedIn, session: Session, product: Product, line_id: str,
    values: dict[str, str], errors: dict[str, str], *, status_code: int,
) -> Response:
    currencies = catalog.list_currencies(session, signed_in.organization_id, "active")
    context = {
        "product": product,
        "line_id": line_id,
        "currency_options": [(row.id, row.name) for row in currencies],
        "line_types": list(catalog_forms.LINE_TYPES.items()),
        "frequencies": [(name, name) for name in catalog_forms.FORM_FREQUENCIES],
        "line_values": values,
        "line_errors": errors,
    }
    return render(request, "dashboard/line.html", signed_in, "catalog", context, status_code=status_code)


@router.post("/dashboard/catalog/products/{product_id}/lines/{line_id}")
def update_line_form(
    request: Request, product_id: str, line_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm
) -> Response:
    product = _product(session, signed_in, product_id)
    line = _line(product, line_id)
    try:
        upsert = catalog_forms.line_from_form(form, line.id)
        catalog.update_product(session, product, ProductUpdate(product_attributes=[upsert]))
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, catalog_forms.LINE_ERROR_FIELDS, "pricing_type")
        product = _product(session, signed_in, product_id)
        return _render_line(request, signed_in, session, product, line_id, dict(form), errors, status_code=400)
    return redirect(f"/dashboard/catalog/products/{product.id}", "line_saved")


# Plans


def _plan(session: Session, signed_in: SignedIn, plan_id: str) -> Plan:
    try:
        return catalog.get_plan(session, signed_in.organization_id, plan_id)
    except ApiError:
        raise PageError(404, "Plan not found", f"No plan with the id {plan_id} exists in this organization.") from None


@router.get("/dashboard/catalog/products/{product_id}/plans/new")
def new_plan_page(request: Request, product_id: str, signed_in: CurrentOperator, session: ReadSession) -> Response:
    product = _product(session, signed_in, product_id)
    values: dict[str, str] = {"currency": "USD"}
    for line in catalog_forms.priced_lines(product):
        prefill = catalog_forms.line_values(line)
        values["currency"] = prefill["currency"]
        values[f"price_{line.id}"] = prefill["price"]
    return _render_plan(request, signed_in, session, product, None, values, {}, status_code=200)


def _render_plan(
    request: Request, signed_in: SignedIn, session: Session, product: Product, plan: Plan | None,
    values: dict[str, str], errors: dict[str, str], *, status_code: int,
) -> Response:
    currencies = catalog.list_currencies(session, signed_in.organization_id, "active")
    context = {
        "product": product,
        "plan": plan,
        "lines": catalog_forms.priced_lines(product),
        "currency_options": [(row.id, row.name) for row in currencies],
        "cadences": list(catalog_forms.CADENCES.items()),
        "plan_values": values,
        "plan_errors": errors,
    }
    return render(request, "dashboard/plan.html", signed_in, "catalog", context, status_code=status_code)


@router.post("/dashboard/catalog/products/{product_id}/plans")
def create_plan_form(request: Request, product_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    product = _product(session, signed_in, product_id)
    try:
        body = PlanCreate(
            product_id=product.id,
            name=forms.required(form, "name", "the plan's name, such as Pro"),
            external_id=forms.text(form, "external_id"),
            attributes=catalog_forms.plan_attributes_from_form(form, product),
        )
        catalog.create_plan(session, signed_in.organization_id, body)
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, catalog_forms.plan_error_fields(product), "name")
        product = _product(session, signed_in, product_id)
        return _render_plan(request, signed_in, session, product, None, dict(form), errors, status_code=400)
    return redirect(f"/dashboard/catalog/products/{product.id}", "plan_created")


@router.get("/dashboard/catalog/plans/{plan_id}")
def plan_page(request: Request, plan_id: str, signed_in: CurrentOperator, session: ReadSession) -> Response:
    plan = _plan(session, signed_in, plan_id)
    product = _product(session, signed_in, plan.product_id)
    return _render_plan(request, signed_in, session, product, plan, catalog_forms.plan_values(plan), {}, status_code=200)


@router.post("/dashboard/catalog/plans/{plan_id}")
def update_plan_form(request: Request, plan_id: str, signed_in: CurrentOperator, session: DbSession, form: CheckedForm) -> Response:
    plan = _plan(session, signed_in, plan_id)
    product = _product(session, signed_in, plan.product_id)
    try:
        status = form.get("status") or plan.status
        if status not in ("active", "archived"):
            raise forms.FieldError("status", "Choose active or archived.")
        body = PlanUpdate(
            name=forms.required(form, "name", "the plan's name, such as Pro"),
            external_id=forms.text(form, "external_id"),
            status=status,
            attributes=catalog_forms.plan_attributes_from_form(form, product),
        )
        catalog.update_plan(session, plan, body)
    except (forms.FieldError, ApiError, ValidationError) as error:
        session.rollback()
        errors = _errors(error, catalog_forms.plan_error_fields(product), "name")
        plan = _plan(session, signed_in, plan_id)
        product = _product(session, signed_in, plan.product_id)
        return _render_plan(request, signed_in, session, product, plan, dict(form), errors, status_code=400)
    return redirect(f"/dashboard/catalog/products/{product.id}", "plan_updated")
