"""Catalog rules: credit currencies, products with pricing lines, plans and credit benefits."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.catalog.schemas import (
    CreditBenefitInput,
    CreditCurrencyCreate,
    CreditCurrencyUpdate,
    PlanAttributeInput,
    PlanCreate,
    PlanUpdate,
    PlanUpgradePathUpdate,
    PricingInput,
    ProductAttributeUpsert,
    ProductCreate,
    ProductUpdate,
)
from tallystick.server.errors import bad_request, conflict_as_bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models import (
    CreditBenefit,
    CreditCurrency,
    Plan,
    PlanAttribute,
    Product,
    ProductAttribute,
)
from tallystick.server.models.catalog import PricingColumnsMixin

log = logging.getLogger(__name__)


# Credit currencies


def create_currency(session: Session, organization_id: str, body: CreditCurrencyCreate) -> CreditCurrency:
    existing = session.scalar(
        select(CreditCurrency).where(
            CreditCurrency.organization_id == organization_id, CreditCurrency.key == body.key
        )
    )
    if existing is not None:
        raise conflict_as_bad_request("key", body.key, "a credit currency with this key")
    currency = CreditCurrency(
        id=new_id("credit_currency"),
        organization_id=organization_id,
        name=body.name,
        key=body.key,
        description=body.description,
    )
    session.add(currency)
    session.flush()
    log.info(
        "credit_currency.created",
        extra={"organization_id": organization_id, "credit_currency_id": currency.id},
    )
    return currency


def list_currencies(session: Session, organization_id: str, status: str | None) -> list[CreditCurrency]:
    statement = select(CreditCurrency).where(CreditCurrency.organization_id == organization_id)
    if status in ("active", "archived"):
        statement = statement.where(CreditCurrency.status == status)
    return list(session.scalars(statement.order_by(CreditCurrency.created_at, CreditCurrency.id)))


def get_currency(session: Session, organization_id: str, currency_id: str) -> CreditCurrency:
    currency = session.scalar(
        select(CreditCurrency).where(
            CreditCurrency.organization_id == organization_id, CreditCurrency.id == currency_id
        )
    )
    if currency is None:
        raise not_found("Credit currency", "id", currency_id)
    return currency


def find_currency_by_key(session: Session, organization_id: str, key: str) -> CreditCurrency | None:
    return session.scalar(
        select(CreditCurrency).where(
            CreditCurrency.organization_id == organization_id, CreditCurrency.key == key
        )
    )


def update_currency(session: Session, currency: CreditCurrency, body: CreditCurrencyUpdate) -> CreditCurrency:
    sent = body.provided()
    if "description" in sent:
        currency.description = body.description
    if body.status is not None and body.status != currency.status:
        currency.status = body.status
        currency.archived_at = clock.now() if body.status == "archived" else None
    currency.updated_at = clock.now()
    session.flush()
    return currency


# Products


def create_product(session: Session, organization_id: str, body: ProductCreate) -> Product:
    if body.external_id is not None:
        _ensure_product_external_id_free(session, organization_id, body.external_id)
    product = Product(
        id=new_id("product"),
        organization_id=organization_id,
        name=body.name,
        description=body.description,
        # The Paid v2 API creates products inactive unless the request sets `active`.
        active=bool(body.active),
        product_code=body.product_code,
        external_id=body.external_id,
        metadata_=body.metadata,
    )
    session.add(product)
    session.flush()
    log.info("product.created", extra={"organization_id": organization_id, "product_id": product.id})
    return product


def products_statement(
    organization_id: str, *, name: str | None, active: bool | None, archived: bool | None
) -> Select[tuple[Product]]:
    statement = select(Product).where(Product.organization_id == organization_id)

    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(Product.name.ilike(f"%{escaped}%", escape="\\"))
    if active is not None:
        statement = statement.where(Product.active.is_(active))
    if archived is True:
        statement = statement.where(Product.archived_at.is_not(None))
    elif archived is False:
        statement = statement.where(Product.archived_at.is_(None))

    return statement.order_by(Product.created_at.desc(), Product.id.desc())


def get_product(session: Session, organization_id: str, product_id: str) -> Product:
    product = session.scalar(
        select(Product).where(Product.organization_id == organization_id, Product.id == product_id)
    )
    if product is None:
        raise not_found("Product", "id", product_id)
    return product


def find_product_by_external_id(session: Session, organization_id: str, external_id: str) -> Product | None:
    return session.scalar(
        select(Product).where(
            Product.organization_id == organization_id, Product.external_id == external_id
        )
    )


def get_product_by_external_id(session: Session, organization_id: str, external_id: str) -> Product:
    product = find_product_by_external_id(session, organization_id, external_id)
    if product is None:
        raise not_found("Product", "externalId", external_id)
    return product


def update_product(session: Session, product: Product, body: ProductUpdate) -> Product:
    """Apply sent fields; upsert `productAttributes` (lines not mentioned are kept)."""
    sent = body.provided()
    if "name" in sent and body.name is None:
        raise bad_request("name", "cannot be null")
    if "external_id" in sent and body.external_id != product.external_id:
        if body.external_id is not None:
            _ensure_product_external_id_free(session, product.organization_id, body.external_id)
        product.external_id = body.external_id

    for field in ("name", "description", "product_code"):
        if field in sent:
            setattr(product, field, getattr(body, field))
    if "active" in sent and body.active is not None:
        product.active = body.active
    if "metadata" in sent:
        product.metadata_ = body.metadata

    if body.product_attributes is not None:
        for index, upsert in enumerate(body.product_attributes):
            _upsert_product_attribute(session, product, upsert, f"productAttributes[{index}]")

    product.updated_at = clock.now()
    session.flush()
    session.refresh(product)
    return product


def _upsert_product_attribute(
    session: Session, product: Product, upsert: ProductAttributeUpsert, field: str
) -> None:
    organization_id = product.organization_id
    if upsert.product_attribute_id is not None:
        attribute = next(
            (item for item in product.attributes if item.id == upsert.product_attribute_id), None
        )
        if attribute is None:
            raise bad_request(
                f"{field}.productAttributeId",
                "is not a pricing line of this product",
                upsert.product_attribute_id,
            )
    else:
        attribute = ProductAttribute(
            id=new_id("product_attribute"),
            organization_id=organization_id,
            product_id=product.id,
            position=len(product.attributes),
        )
        product.attributes.append(attribute)

    attribute.name = upsert.name
    if upsert.active is not None:
        attribute.active = upsert.active
    elif attribute.active is None:
        attribute.active = True
    attribute.tax_code = upsert.tax_code
    apply_pricing(session, organization_id, attribute, upsert.pricing, f"{field}.pricing")
    # Sent benefits replace the line's benefits; omitted benefits are kept.
    if upsert.credit_benefits is not None:
        attribute.credit_benefits = build_benefits(
            session, organization_id, upsert.credit_benefits, f"{field}.creditBenefits",
            product_attribute_id=attribute.id,
        )
    attribute.updated_at = clock.now()


def apply_pricing(
    session: Session, organization_id: str, line: PricingColumnsMixin, pricing: PricingInput, field: str
) -> None:
    """Store the pricing object as sent and derive the columns that rating reads."""
    if pricing.credits_currency_id is not None:
        _require_currency(session, organization_id, pricing.credits_currency_id, f"{field}.creditsCurrencyId")
    line.pricing = pricing_to_json(pricing)
    line.pricing_type = pricing.pricing_type
    line.event_name = pricing.event_name
    line.credits_currency_id = pricing.credits_currency_id
    line.credit_cost = pricing.credit_cost


def pricing_to_json(pricing: PricingInput) -> dict[str, Any]:
    """Return the pricing object as the client sent it, with decimals as JSON numbers."""
    return _json_numbers(pricing.model_dump(by_alias=True, exclude_unset=True))


def _json_numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    return value


def build_benefits(
    session: Session,
    organization_id: str,
    inputs: list[CreditBenefitInput],
    field: str,
    *,
    product_attribute_id: str | None = None,
    plan_attribute_id: str | None = None,
) -> list[CreditBenefit]:
    benefits = []
    for index, item in enumerate(inputs):
        _require_currency(session, organization_id, item.credits_currency_id, f"{field}[{index}].creditsCurrencyId")
        benefits.append(
            CreditBenefit(
                id=new_id("credit_benefit"),
                organization_id=organization_id,
                product_attribute_id=product_attribute_id,
                plan_attribute_id=plan_attribute_id,
                credits_currency_id=item.credits_currency_id,
                amount=item.amount,
                recipient=item.recipient or "organization",
                is_infinite_total=bool(item.is_infinite_total),
                allocation_cadence=item.allocation_cadence or "monthly",
                credit_grant_timing=item.credit_grant_timing or "on_order_activation",
                overage_unit_price=item.overage_unit_price,
                rollover_amount=item.rollover_amount,
                rollover_duration=item.rollover_duration,
                rollover_duration_unit=item.rollover_duration_unit,
                position=index,
            )
        )
    return benefits


def _require_currency(session: Session, organization_id: str, currency_id: str, field: str) -> CreditCurrency:
    currency = session.scalar(
        select(CreditCurrency).where(
            CreditCurrency.organization_id == organization_id, CreditCurrency.id == currency_id
        )
    )
    if currency is None:
        raise bad_request(field, "is not a credit currency of this organization", currency_id, code="unknown_currency")
    return currency


def _ensure_product_external_id_free(session: Session, organization_id: str, external_id: str) -> None:
    if find_product_by_external_id(session, organization_id, external_id) is not None:
        raise conflict_as_bad_request("externalId", external_id, "a product with this externalId")


# Plans


def create_plan(session: Session, organization_id: str, body: PlanCreate) -> Plan:
    product = session.scalar(
        select(Product).where(Product.organization_id == organization_id, Product.id == body.product_id)
    )
    if product is None:
        raise bad_request("productId", "is not a product of this organization", body.product_id, code="unknown_product")
    if body.external_id is not None:
        _ensure_plan_external_id_free(session, organization_id, body.external_id)

    plan = Plan(
        id=new_id("plan"),
        organization_id=organization_id,
        product_id=product.id,
        name=body.name,
        external_id=body.external_id,
        supported_currencies=body.supported_currencies or _currencies_of(body.attributes),
        is_default=bool(body.is_default),
        status="active",
    )
    session.add(plan)
    plan.attributes = _build_plan_attributes(session, plan, product, body.attributes)
    if plan.is_default:
        _clear_other_defaults(session, plan)
    session.flush()
    log.info("plan.created", extra={"organization_id": organization_id, "plan_id": plan.id})
    return plan


def _build_plan_attributes(
    session: Session, plan: Plan, product: Product, inputs: list[PlanAttributeInput]
) -> list[PlanAttribute]:
    lines_by_id = {line.id: line for line in product.attributes}
    seen: set[str] = set()
    attributes = []
    for index, item in enumerate(inputs):
        field = f"attributes[{index}]"
        line = lines_by_id.get(item.product_attribute_id)
        if line is None:
            raise bad_request(
                f"{field}.productAttributeId",
                f"is not a pricing line of product {product.id}",
                item.product_attribute_id,
            )
        if item.product_attribute_id in seen:
            raise bad_request(f"{field}.productAttributeId", "appears twice in this plan", item.product_attribute_id)
        seen.add(item.product_attribute_id)
        attribute = PlanAttribute(
            id=new_id("plan_attribute"),
            organization_id=plan.organization_id,
            plan_id=plan.id,
            product_attribute_id=line.id,
            position=index,
        )
        attribute.product_attribute = line
        apply_pricing(session, plan.organization_id, attribute, item.pricing, f"{field}.pricing")
        attribute.credit_benefits = build_benefits(
            session, plan.organization_id, item.credit_benefits or [], f"{field}.creditBenefits",
            plan_attribute_id=attribute.id,
        )
        attributes.append(attribute)
    return attributes


def _currencies_of(inputs: list[PlanAttributeInput]) -> list[str]:
    codes: list[str] = []
    for item in inputs:
        for point in item.pricing.price_points or []:
            code = point.currency.upper()
            if code not in codes:
                codes.append(code)
    return codes


def plans_statement(
    organization_id: str,
    *,
    product_id: str | None,
    external_product_id: str | None,
    include_archived: bool,
) -> Select[tuple[Plan]]:
    statement = select(Plan).where(Plan.organization_id == organization_id)

    if product_id:
        statement = statement.where(Plan.product_id == product_id)
    if external_product_id:
        statement = statement.join(Product, Product.id == Plan.product_id).where(
            Product.external_id == external_product_id
        )
    if not include_archived:
        statement = statement.where(Plan.status == "active")

    return statement.order_by(Plan.created_at.desc(), Plan.id.desc())


def get_plan(session: Session, organization_id: str, plan_id: str) -> Plan:
    plan = session.scalar(select(Plan).where(Plan.organization_id == organization_id, Plan.id == plan_id))
    if plan is None:
        raise not_found("Plan", "id", plan_id)
    return plan


def find_plan_by_external_id(session: Session, organization_id: str, external_id: str) -> Plan | None:
    return session.scalar(
        select(Plan).where(Plan.organization_id == organization_id, Plan.external_id == external_id)
    )


def get_plan_by_external_id(session: Session, organization_id: str, external_id: str) -> Plan:
    plan = find_plan_by_external_id(session, organization_id, external_id)
    if plan is None:
        raise not_found("Plan", "externalId", external_id)
    return plan


def update_plan(session: Session, plan: Plan, body: PlanUpdate) -> Plan:
    """Apply sent fields; sent `attributes` replace the plan's whole set."""
    sent = body.provided()
    if "external_id" in sent and body.external_id != plan.external_id:
        if body.external_id is not None:
            _ensure_plan_external_id_free(session, plan.organization_id, body.external_id)
        plan.external_id = body.external_id
    if "name" in sent:
        plan.name = body.name
    if body.supported_currencies is not None:
        plan.supported_currencies = body.supported_currencies
    if body.is_default is not None:
        plan.is_default = body.is_default
        if plan.is_default:
            _clear_other_defaults(session, plan)
    if body.status is not None and body.status != plan.status:
        plan.status = body.status
        plan.archived_at = clock.now() if body.status == "archived" else None
    if body.attributes is not None:
        product = session.get(Product, plan.product_id)
        assert product is not None  # plans.product_id is a foreign key
        plan.attributes.clear()
        session.flush()
        plan.attributes = _build_plan_attributes(session, plan, product, body.attributes)
        if "supported_currencies" not in sent:
            plan.supported_currencies = _currencies_of(body.attributes)

    plan.updated_at = clock.now()
    session.flush()
    return plan


def update_upgrade_path(session: Session, organization_id: str, body: PlanUpgradePathUpdate) -> list[Plan]:
    """Order the product's plans for upgrades: position in its group, cheapest first."""
    product = session.scalar(
        select(Product).where(Product.organization_id == organization_id, Product.id == body.product_id)
    )
    if product is None:
        raise bad_request("productId", "is not a product of this organization", body.product_id, code="unknown_product")
    plans = {plan.id: plan for plan in session.scalars(select(Plan).where(Plan.product_id == product.id))}
    ordered: list[Plan] = []
    for group_index, group in enumerate(body.groups):
        for position, plan_id in enumerate(group.plan_ids):
            plan = plans.get(plan_id)
            if plan is None:
                raise bad_request(
                    f"groups[{group_index}].planIds[{position}]",
                    f"is not a plan of product {product.id}",
                    plan_id,
                )
            plan.upgrade_path_order = position
            plan.updated_at = clock.now()
            ordered.append(plan)
    session.flush()
    return ordered


def _clear_other_defaults(session: Session, plan: Plan) -> None:
    """Keep at most one default plan per product."""
    others = session.scalars(
        select(Plan).where(Plan.product_id == plan.product_id, Plan.id != plan.id, Plan.is_default.is_(True))
    )
    for other in others:
        other.is_default = False


def _ensure_plan_external_id_free(session: Session, organization_id: str, external_id: str) -> None:
    if find_plan_by_external_id(session, organization_id, external_id) is not None:
        raise conflict_as_bad_request("externalId", external_id, "a plan with this externalId")


