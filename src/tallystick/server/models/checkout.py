"""Checkouts: hosted purchase links on which a buyer picks a plan and pays."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin
from tallystick.server.models.types import JsonObject


class Checkout(OrgScopedMixin, TimestampMixin, Base):
    """A hosted checkout page offering products and plans to one buyer (or to anyone).

    `status` moves from active to completed, expired or archived and never back. An active
    checkout whose `expires_at` has passed counts as expired even before a write stores that.
    A reusable checkout (`single_use` false) stays active after each purchase.
    """

    __tablename__ = "checkouts"
    __table_args__ = (Index("ix_checkouts_org_status", "organization_id", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    # The hosted page's address, fixed when the checkout is created.
    url: Mapped[str] = mapped_column(String(2048))
    # The wire `products` as the client sent them: [{id, plans: [{id, features}] | null}].
    products: Mapped[list[dict[str, Any]]] = mapped_column(JsonObject)
    customer_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("customers.id"))
    external_customer_id: Mapped[str | None] = mapped_column(String(255))
    success_url: Mapped[str] = mapped_column(String(2048))
    cancel_url: Mapped[str | None] = mapped_column(String(2048))
    expires_at: Mapped[datetime]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    collect_address: Mapped[bool] = mapped_column(default=True)
    collect_phone: Mapped[bool] = mapped_column(default=False)
    single_use: Mapped[bool] = mapped_column(default=True)
    # The currency the client locked the checkout to, or None to offer every allowed one.
    currency: Mapped[str | None] = mapped_column(String(3))
    allowed_currencies: Mapped[list[str]] = mapped_column(JsonObject, default=list)
    custom_cards: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonObject)
    # The payment provider that takes payment on the hosted page, such as "test".
    payment_provider: Mapped[str] = mapped_column(String(32))
    # The latest order created through this checkout, and what the buyer picked for it.
    order_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("orders.id"))
    selected_product_id: Mapped[str | None] = mapped_column(String(40))
    selected_plan_id: Mapped[str | None] = mapped_column(String(40))
    completed_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
