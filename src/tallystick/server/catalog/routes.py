"""HTTP routes of the catalog: credit currencies, products and plans."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query

from tallystick.server.catalog import service
from tallystick.server.catalog.schemas import (
    CreditBenefitOut,
    CreditCurrencyCreate,
    CreditCurrencyListOut,
    CreditCurrencyOut,
    CreditCurrencyUpdate,
    PlanAttributeOut,
    PlanCreate,
    PlanListOut,
    PlanOut,
    PlanUpdate,
    PlanUpgradePathOut,
    PlanUpgradePathUpdate,
    ProductAttributeOut,
    ProductCreate,
    ProductDetailOut,
    ProductListOut,
    ProductOut,
    ProductUpdate,
    charge_type,
    pricing_model,
)
from tallystick.server.deps import CurrentPrincipal, DbSession, ReadSession, authenticate
from tallystick.server.filters import parse_bool_filter, parse_choice_filter
from tallystick.server.ledger.schemas import credits_text
from tallystick.server.models import CreditBenefit, CreditCurrency, Plan, Product
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, decimal_to_number

_common = {"dependencies": [Depends(authenticate)], "responses": ERROR_RESPONSES}
currencies_router = Router(tags=["credit currencies"], **_common)
products_router = Router(tags=["products"], **_common)
plans_router = Router(tags=["plans"], **_common)


# Serialisation


def currency_out(currency: CreditCurrency) -> CreditCurrencyOut:
    return CreditCurrencyOut(
        id=currency.id,
        name=currency.name,
        key=currency.key,
        status=currency.status,
        description=currency.description,
        archived_at=currency.archived_at,
        created_at=currency.created_at,
        updated_at=currency.updated_at,
    )


def pricing_out(pricing: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the stored pricing object with the output-only fields the wire format requires."""
    if pricing is None:
        return None
    pricing_type = pricing.get("pricingType", "")
    return {
        **pricing,
        "chargeType": charge_type(pricing_type),
        "pricingModel": pricing_model(pricing_type),
        "pricePoints": pricing.get("pricePoints") or [],
    }


def benefit_out(benefit: CreditBenefit) -> CreditBenefitOut:
    return CreditBenefitOut(
        id=benefit.id,
        credits_currency_id=benefit.credits_currency_id,
        amount=decimal_to_number(benefit.amount),
        amount_decimal=credits_text(benefit.amount) if benefit.amount else "0",
        recipient=benefit.recipient,
        is_infinite_total=benefit.is_infinite_total,
        allocation_cadence=benefit.allocation_cadence,
        credit_grant_timing=benefit.credit_grant_timing,
        overage_unit_price=benefit.overage_unit_price,
        rollover_amount=decimal_to_number(benefit.rollover_amount),
        rollover_duration=benefit.rollover_duration,
        rollover_duration_unit=benefit.rollover_duration_unit,
    )


def product_out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.id,
        name=product.name,
        description=product.description,
        created_at=product.created_at,
        updated_at=product.updated_at,
        active=product.active,
        product_code=product.product_code,
        external_id=product.external_id,
        archived_at=product.archived_at,
        metadata=product.metadata_,
    )


def product_detail_out(product: Product) -> ProductDetailOut:
    return ProductDetailOut(
        **product_out(product).model_dump(),
        product_attributes=[
            ProductAttributeOut(
                product_attribute_id=line.id,
                name=line.name,
                active=line.active,
                pricing=pricing_out(line.pricing),
                credit_benefits=[benefit_out(benefit) for benefit in line.credit_benefits],
                tax_code=line.tax_code,
            )
            for line in product.attributes
        ],
    )


def plan_out(plan: Plan) -> PlanOut:
    return PlanOut(
        id=plan.id,
        product_id=plan.product_id,
        name=plan.name,
        external_id=plan.external_id,
        supported_currencies=list(plan.supported_currencies or []),
        is_default=plan.is_default,
        status=plan.status,
        upgrade_path_order=plan.upgrade_path_order,
        archived_at=plan.archived_at,
        created_at=plan.created_at,
        updated_at=plan.updated_at,
        attributes=[
            PlanAttributeOut(
                product_attribute_id=attribute.product_attribute_id,
                name=attribute.product_attribute.name,
                active=attribute.product_attribute.active,
                pricing=pricing_out(attribute.pricing),
                credit_benefits=[benefit_out(benefit) for benefit in attribute.credit_benefits],
            )
            for attribute in plan.attributes
        ],
    )


# Credit currencies


@currencies_router.post("/credits/currencies", status_code=201, response_model=CreditCurrencyOut)
def create_credit_currency(
    body: CreditCurrencyCreate, principal: CurrentPrincipal, session: DbSession
) -> CreditCurrencyOut:
    """Create a credit currency. `key` is unique in the organization and cannot change."""
    return currency_out(service.create_currency(session, principal.organization_id, body))


@currencies_router.get("/credits/currencies", response_model=CreditCurrencyListOut)
def list_credit_currencies(
    principal: CurrentPrincipal,
    session: ReadSession,
    status: Annotated[str | None, Query(description="active, archived or all (the default).")] = None,
) -> CreditCurrencyListOut:
    chosen = parse_choice_filter("status", status, ("active", "archived", "all"))
    currencies = service.list_currencies(session, principal.organization_id, chosen)
    return CreditCurrencyListOut(data=[currency_out(currency) for currency in currencies])


@currencies_router.put("/credits/currencies/{currency_id}", response_model=CreditCurrencyOut)
def update_credit_currency(
    currency_id: str, body: CreditCurrencyUpdate, principal: CurrentPrincipal, session: DbSession
) -> CreditCurrencyOut:
    """Change a credit currency's description, or archive and restore it with `status`."""
    currency = service.get_currency(session, principal.organization_id, currency_id)
    return currency_out(service.update_currency(session, currency, body))


# Products


@products_router.post("/products/", status_code=201, response_model=ProductOut)
def create_product(body: ProductCreate, principal: CurrentPrincipal, session: DbSession) -> ProductOut:
    """Create a product. Pricing lines are added with an update (`productAttributes`)."""
    return product_out(service.create_product(session, principal.organization_id, body))


@products_router.get("/products/", response_model=ProductListOut)
def list_products(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    name: Annotated[str | None, Query(description="Case-insensitive substring of the name.")] = None,
    active: Annotated[str | None, Query(description="true or false.")] = None,
    archived: Annotated[str | None, Query(description="true or false.")] = None,
) -> ProductListOut:
    """List products, newest first."""
    statement = service.products_statement(
        principal.organization_id,
        name=name,
        active=parse_bool_filter("active", active),
        archived=parse_bool_filter("archived", archived),
    )
    rows, pagination = paginate(session, statement, page)
    return ProductListOut.model_validate({"data": [product_out(row) for row in rows], "pagination": pagination})


@products_router.get("/products/external/{external_id}", response_model=ProductDetailOut)
def get_product_by_external_id(external_id: str, principal: CurrentPrincipal, session: ReadSession) -> ProductDetailOut:
    return product_detail_out(service.get_product_by_external_id(session, principal.organization_id, external_id))


@products_router.put("/products/external/{external_id}", response_model=ProductDetailOut)
def update_product_by_external_id(
    external_id: str, body: ProductUpdate, principal: CurrentPrincipal, session: DbSession
) -> ProductDetailOut:
    product = service.get_product_by_external_id(session, principal.organization_id, external_id)
    return product_detail_out(service.update_product(session, product, body))


@products_router.get("/products/{product_id}", response_model=ProductDetailOut)
def get_product(product_id: str, principal: CurrentPrincipal, session: ReadSession) -> ProductDetailOut:
    return product_detail_out(service.get_product(session, principal.organization_id, product_id))


@products_router.put("/products/{product_id}", response_model=ProductDetailOut)
def update_product(
    product_id: str, body: ProductUpdate, principal: CurrentPrincipal, session: DbSession
) -> ProductDetailOut:
    """Update a product. `productAttributes` are upserted: a line with `productAttributeId` is
    replaced, one without is added, and lines not mentioned are kept."""
    product = service.get_product(session, principal.organization_id, product_id)
    return product_detail_out(service.update_product(session, product, body))


# Plans


@plans_router.post("/plans/", status_code=201, response_model=PlanOut)
def create_plan(body: PlanCreate, principal: CurrentPrincipal, session: DbSession) -> PlanOut:
    """Create a plan of a product: each attribute overrides one of the product's pricing lines
    and may carry credit benefits."""
    return plan_out(service.create_plan(session, principal.organization_id, body))


@plans_router.get("/plans/", response_model=PlanListOut)
def list_plans(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    product_id: Annotated[str | None, Query(alias="productId")] = None,
    external_product_id: Annotated[str | None, Query(alias="externalProductId")] = None,
    include_archived: Annotated[
        str | None, Query(alias="includeArchived", description="true (the default) or false.")
    ] = None,
) -> PlanListOut:
    """List plans, newest first; archived plans are included unless includeArchived=false."""
    include = parse_bool_filter("includeArchived", include_archived)
    statement = service.plans_statement(
        principal.organization_id,
        product_id=product_id,
        external_product_id=external_product_id,
        include_archived=include is not False,
    )
    rows, pagination = paginate(session, statement, page)
    return PlanListOut.model_validate({"data": [plan_out(row) for row in rows], "pagination": pagination})


@plans_router.put("/plans/upgrade-path", response_model=PlanUpgradePathOut)
def update_plan_upgrade_path(
    body: PlanUpgradePathUpdate, principal: CurrentPrincipal, session: DbSession
) -> PlanUpgradePathOut:
    """Set the upgrade order of a product's plans, one group per billing frequency."""
    plans = service.update_upgrade_path(session, principal.organization_id, body)
    return PlanUpgradePathOut(data=[plan_out(plan) for plan in plans])


@plans_router.get("/plans/external/{external_id}", response_model=PlanOut)
def get_plan_by_external_id(external_id: str, principal: CurrentPrincipal, session: ReadSession) -> PlanOut:
    return plan_out(service.get_plan_by_external_id(session, principal.organization_id, external_id))


@plans_router.put("/plans/external/{external_id}", response_model=PlanOut)
def update_plan_by_external_id(
    external_id: str, body: PlanUpdate, principal: CurrentPrincipal, session: DbSession
) -> PlanOut:
    plan = service.get_plan_by_external_id(session, principal.organization_id, external_id)
    return plan_out(service.update_plan(session, plan, body))


@plans_router.get("/plans/{plan_id}", response_model=PlanOut)
def get_plan(plan_id: str, principal: CurrentPrincipal, session: ReadSession) -> PlanOut:
    return plan_out(service.get_plan(session, principal.organization_id, plan_id))


@plans_router.put("/plans/{plan_id}", response_model=PlanOut)
def update_plan(plan_id: str, body: PlanUpdate, principal: CurrentPrincipal, session: DbSession) -> PlanOut:
    """Update a plan. Sent `attributes` replace all of the plan's attributes; `status`
    archived or active archives or restores it."""
    plan = service.get_plan(session, principal.organization_id, plan_id)
    return plan_out(service.update_plan(session, plan, body))
