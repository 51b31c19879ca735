from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin
from tallystick.server.models.types import JsonObject


class Customer(OrgScopedMixin, TimestampMixin, Base):
    """A buyer of the organization's product, addressed by id or by the app's external id."""

    __tablename__ = "customers"
    __table_args__ = (
        # External ids are unique among live customers; a deleted customer frees its id.
        Index(
            "uq_customers_org_external_id",
            "organization_id",
            "external_id",
            unique=True,
            sqlite_where=text("deleted_at IS NULL AND external_id IS NOT NULL"),
            postgresql_where=text("deleted_at IS NULL AND external_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(500))
    legal_name: Mapped[str | None] = mapped_column(String(500))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(64))
    website: Mapped[str | None] = mapped_column(String(2048))
    billing_address: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)
    creation_state: Mapped[str] = mapped_column(String(16), default="active")
    status: Mapped[str] = mapped_column(String(16), default="active")
    churn_date: Mapped[datetime | None]
    vat_number: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    default_currency: Mapped[str] = mapped_column(String(3), default="USD")
    deleted_at: Mapped[datetime | None]
