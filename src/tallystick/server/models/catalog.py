"""Credit currencies, products with their pricing lines (product attributes), plans and benefits."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin
from tallystick.server.models.types import Credits, JsonObject


class CreditCurrency(OrgScopedMixin, TimestampMixin, Base):
    """A unit of prepaid credit, such as "Chat Credits" with the key chat_credits."""

    __tablename__ = "credit_currencies"
    __table_args__ = (UniqueConstraint("organization_id", "key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="active")
    archived_at: Mapped[datetime | None]


class Product(OrgScopedMixin, TimestampMixin, Base):
    __tablename__ = "products"
    __table_args__ = (
        Index(
            "uq_products_org_external_id",
            "organization_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(String(5000))
    active: Mapped[bool] = mapped_column(default=True)
    product_code: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    archived_at: Mapped[datetime | None]

    attributes: Mapped[list[ProductAttribute]] = relationship(
        back_populates="product", order_by="ProductAttribute.position", lazy="selectin"
    )


class PricingColumnsMixin:
    """A pricing line: the wire pricing object kept verbatim, plus the fields rating reads.

    `pricing` is stored as the client sent it (camelCase keys), so pricing types that tallystick
    does not rate yet still round-trip faithfully. The typed columns beside it are derived from
    it on every write and are what the rating code queries.
    """

    pricing: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)
    pricing_type: Mapped[str | None] = mapped_column(String(64))
    event_name: Mapped[str | None] = mapped_column(String(255), index=True)
    credits_currency_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("credit_currencies.id")
    )
    credit_cost: Mapped[Decimal | None] = mapped_column(Credits())


class ProductAttribute(PricingColumnsMixin, OrgScopedMixin, TimestampMixin, Base):
    """One pricing line of a product, such as a monthly fee or a per-message credit cost."""

    __tablename__ = "product_attributes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(default=True)
    tax_code: Mapped[str | None] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)

    product: Mapped[Product] = relationship(back_populates="attributes")
    credit_benefits: Mapped[list[CreditBenefit]] = relationship(
        primaryjoin="ProductAttribute.id == CreditBenefit.product_attribute_id",
        order_by="CreditBenefit.position",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class Plan(OrgScopedMixin, TimestampMixin, Base):
    """A sellable variant of a product that overrides its pricing lines and grants credits."""

    __tablename__ = "plans"
    __table_args__ = (
        Index(
            "uq_plans_org_external_id",
            "organization_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(40), ForeignKey("products.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(500))
    supported_currencies: Mapped[list[str]] = mapped_column(JsonObject, default=list)
    is_default: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")
    upgrade_path_order: Mapped[int | None]
    archived_at: Mapped[datetime | None]

    attributes: Mapped[list[PlanAttribute]] = relationship(
        back_populates="plan",
        order_by="PlanAttribute.position",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class PlanAttribute(PricingColumnsMixin, OrgScopedMixin, TimestampMixin, Base):
    """A plan's override of one product pricing line, with the credits the plan grants."""

    __tablename__ = "plan_attributes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("plans.id", ondelete="CASCADE"), index=True
    )
    product_attribute_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("product_attributes.id")
    )
    position: Mapped[int] = mapped_column(Integer, default=0)

    plan: Mapped[Plan] = relationship(back_populates="attributes")
    product_attribute: Mapped[ProductAttribute] = relationship(lazy="joined")
    credit_benefits: Mapped[list[CreditBenefit]] = relationship(
        primaryjoin="PlanAttribute.id == CreditBenefit.plan_attribute_id",
        order_by="CreditBenefit.position",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class CreditBenefit(OrgScopedMixin, TimestampMixin, Base):
    """Credits that a pricing line grants each allocation period (or once, up front)."""

    __tablename__ = "credit_benefits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_attribute_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("product_attributes.id", ondelete="CASCADE"), index=True
    )
    plan_attribute_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("plan_attributes.id", ondelete="CASCADE"), index=True
    )
    credits_currency_id: Mapped[str] = mapped_column(String(40), ForeignKey("credit_currencies.id"))
    amount: Mapped[Decimal] = mapped_column(Credits())
    recipient: Mapped[str] = mapped_column(String(16), default="organization")
    is_infinite_total: Mapped[bool] = mapped_column(default=False)
    allocation_cadence: Mapped[str] = mapped_column(String(16), default="monthly")
    credit_grant_timing: Mapped[str] = mapped_column(String(32), default="on_order_activation")
    # Price of one credit beyond the allowance, in cents of the plan's currency.
    overage_unit_price: Mapped[int | None]
    rollover_amount: Mapped[Decimal | None] = mapped_column(Credits())
    rollover_duration: Mapped[int | None]
    rollover_duration_unit: Mapped[str | None] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer, default=0)
