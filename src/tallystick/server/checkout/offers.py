"""The choices a checkout offers: a product's plans, or the product itself when it has none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.models import Plan, Product


class OfferError(Exception):
    """A checkout's products or plans cannot be offered; names the wire field and value."""

    def __init__(self, field: str, message: str, value: str, code: str = "validation_error") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.value = value
        self.code = code


@dataclass(frozen=True)
class Offer:
    """One choice on the page: a plan of a product, or the product's own pricing."""

    product: Product
    plan: Plan | None
    features: tuple[str, ...]
    # The wire field that named this choice, for error messages, such as products[0].plans[1].id.
    field: str

    @property
    def key(self) -> str:
        """The value the page's form sends for this choice: the plan id, else the product id."""
        return self.plan.id if self.plan is not None else self.product.id

    @property
    def title(self) -> str:
        if self.plan is None:
            return self.product.name
        return self.plan.name or self.plan.external_id or self.plan.id


def load_offers(
    session: Session, organization_id: str, products: list[dict[str, Any]], *, require_active: bool
) -> list[Offer]:
    """Resolve a checkout's wire `products` into offers, in the order given.

    A product without `plans` offers its active plans (in upgrade path order, then oldest
    first), or its own pricing when it has none. `require_active` rejects archived plans and
    inactive products, as creation does; a page keeps offering what the checkout was created
    with.
    """
    offers: list[Offer] = []
    seen_products: set[str] = set()
    for index, item in enumerate(products):
        field = f"products[{index}].id"
        product = session.scalar(
            select(Product).where(Product.organization_id == organization_id, Product.id == item["id"])
        )
        if product is None:
            raise OfferError(field, "is not a product of this organization", item["id"], code="unknown_product")
        if product.id in seen_products:
            raise OfferError(field, "appears twice in this checkout", item["id"])
        seen_products.add(product.id)
        if require_active and (not product.active or product.archived_at is not None):
            raise OfferError(field, "is an inactive or archived product", item["id"])

        if item.get("plans") is None:
            offers.extend(_default_offers(session, product, field))
        else:
            offers.extend(_listed_offers(session, product, item["plans"], index, require_active))
    return offers


def _default_offers(session: Session, product: Product, field: str) -> list[Offer]:
    plans = list(
        session.scalars(
            select(Plan)
            .where(
                Plan.organization_id == product.organization_id,
                Plan.product_id == product.id,
                Plan.status == "active",
            )
            .order_by(Plan.upgrade_path_order.is_(None), Plan.upgrade_path_order, Plan.created_at, Plan.id)
        )
    )
    if not plans:
        return [Offer(product=product, plan=None, features=(), field=field)]
    return [Offer(product=product, plan=plan, features=(), field=field) for plan in plans]


def _listed_offers(
    session: Session, product: Product, plans: list[dict[str, Any]], index: int, require_active: bool
) -> list[Offer]:
    offers = []
    seen: set[str] = set()
    for position, item in enumerate(plans):
        field = f"products[{index}].plans[{position}].id"
        plan = session.scalar(
            select(Plan).where(
                Plan.organization_id == product.organization_id,
                Plan.product_id == product.id,
                Plan.id == item["id"],
            )
        )
        if plan is None:
            raise OfferError(field, f"is not a plan of product {product.id}", item["id"])
        if plan.id in seen:
            raise OfferError(field, "appears twice in this product", item["id"])
        seen.add(plan.id)
        if require_active and plan.status != "active":
            raise OfferError(field, "is an archived plan", item["id"])
        offers.append(
            Offer(product=product, plan=plan, features=tuple(item.get("features") or ()), field=field)
        )
    return offers
