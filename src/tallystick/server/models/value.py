"""Delivered value: value model versions, per-signal values and value receipts.

A value model version contains the organization's whole value configuration (value types,
formulas, signal bindings, overrides) as the wire JSON. Each signal's delivered value is
evaluated against the active version and stored once per value type, so totals are SQL sums.

Quantities are exact decimals in the value type's unit with nine places (`ScaledDecimal(9)`).
Per-signal monetary values are decimal minor units (cents for USD) with six places, so a
fraction of a cent per signal is kept and only a receipt line rounds to whole cents.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin
from tallystick.server.models.types import JsonObject, ScaledDecimal

# Decimal places of a delivered quantity (minutes saved, tickets resolved, ...).
VALUE_QUANTITY_PLACES = 9
# Decimal places of a per-signal monetary value in minor units: 1e-6 cent.
VALUE_MONEY_PLACES = 6


def ValueQuantity() -> ScaledDecimal:  # noqa: N802 - reads as a column type
    return ScaledDecimal(VALUE_QUANTITY_PLACES)


def ValueMoney() -> ScaledDecimal:  # noqa: N802 - reads as a column type
    return ScaledDecimal(VALUE_MONEY_PLACES)


class ValueModelVersion(OrgScopedMixin, Base):
    """One version of an organization's value model; at most one is active at a time.

    Versions are never edited: every change uploads a new version, which becomes active and
    archives the previous one.
    """

    __tablename__ = "value_model_versions"
    __table_args__ = (UniqueConstraint("organization_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # 1, 2, 3, ... per organization.
    version: Mapped[int] = mapped_column(Integer)
    # active or archived.
    status: Mapped[str] = mapped_column(String(16))
    # The value model content in its wire form (camelCase keys), as validated.
    content: Mapped[dict[str, Any]] = mapped_column(JsonObject)
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    effective_from: Mapped[datetime | None]
    effective_to: Mapped[datetime | None]


class SignalValueEvaluation(Base):
    """The value model version a signal was last evaluated against.

    A signal whose event name the active version covers, and that has no row here for that
    version, is stale: its values are computed before any total that includes it.
    """

    __tablename__ = "signal_value_evaluations"
    __table_args__ = (Index("ix_signal_value_evaluations_org_version", "organization_id", "value_model_version_id"),)

    signal_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("signals.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    value_model_version_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("value_model_versions.id", ondelete="CASCADE")
    )
    evaluated_at: Mapped[datetime]


class SignalValue(Base):
    """The delivered value of one signal for one value type: known, or unknown with a reason.

    Customer, product, event name and time are copied from the signal so that totals over a
    customer and a period read this table alone.
    """

    __tablename__ = "signal_values"
    __table_args__ = (
        Index("ix_signal_values_org_customer_occurred_at", "organization_id", "customer_id", "occurred_at"),
        Index("ix_signal_values_org_version", "organization_id", "value_model_version_id"),
    )

    signal_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("signals.id", ondelete="CASCADE"), primary_key=True
    )
    value_type_slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    customer_id: Mapped[str] = mapped_column(String(40))
    product_id: Mapped[str | None] = mapped_column(String(40))
    event_name: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[datetime]
    value_model_version_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("value_model_versions.id", ondelete="CASCADE")
    )
    # known or unknown.
    status: Mapped[str] = mapped_column(String(16))
    # In the value type's unit; NULL when unknown.
    quantity: Mapped[Decimal | None] = mapped_column(ValueQuantity())
    # Minor units of the model currency: the quantity itself for monetary value types, its
    # monetary conversion for others, NULL when there is neither or the value is unknown.
    money: Mapped[Decimal | None] = mapped_column(ValueMoney())
    # Why the value is unknown: a stable code (such as missing_field) and a sentence.
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    # The variable values used, with where each came from (fixed, data field, override).
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)


class ValueReceipt(OrgScopedMixin, TimestampMixin, Base):
    """A customer-facing summary of the value delivered to a customer over a period.

    A draft is repopulated on refresh and when a new value model version is uploaded; a sealed
    receipt (status posted) keeps its lines forever.
    """

    __tablename__ = "value_receipts"
    __table_args__ = (
        UniqueConstraint("public_url_token"),
        Index("ix_value_receipts_org_customer", "organization_id", "customer_id"),
        # Receipts made by the sync endpoint are unique per natural key, so two concurrent
        # syncs for one period give the customer one receipt.
        Index(
            "uq_value_receipts_org_sync_key",
            "organization_id",
            "sync_key",
            unique=True,
            sqlite_where=text("sync_key IS NOT NULL"),
            postgresql_where=text("sync_key IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    product_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("products.id"))
    order_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("orders.id"))
    currency: Mapped[str] = mapped_column(String(3))
    # The period covered: signals with start_date <= occurred_at < end_date.
    start_date: Mapped[datetime]
    end_date: Mapped[datetime]
    # draft or posted (sealed).
    status: Mapped[str] = mapped_column(String(16), default="draft")
    sealed_at: Mapped[datetime | None]
    public_url_token: Mapped[str] = mapped_column(String(64))
    is_published: Mapped[bool] = mapped_column(default=False)
    published_at: Mapped[datetime | None]
    publish_expires_at: Mapped[datetime | None]
    archived_at: Mapped[datetime | None]
    generated_at: Mapped[datetime | None]
    # The value model version the lines were computed with; NULL when there was none.
    value_model_version_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("value_model_versions.id")
    )
    value_model_version: Mapped[int | None] = mapped_column(Integer)
    # Sum of the lines' rounded monetary values, in minor units of `currency`.
    total_delivered_value: Mapped[int] = mapped_column(BigInteger, default=0)
    sync_key: Mapped[str | None] = mapped_column(String(255))


class ValueReceiptLine(Base):
    """One value type's total on a value receipt, with the inputs that produced it."""

    __tablename__ = "value_receipt_lines"

    receipt_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("value_receipts.id", ondelete="CASCADE"), primary_key=True
    )
    value_type_slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000))
    # The value type's unit: kind (monetary, duration, count, percentage or custom), and
    # for durations the time unit, for custom units the unit name and its display label.
    unit: Mapped[dict[str, Any]] = mapped_column(JsonObject)
    # sum, or mean for percentages.
    aggregation: Mapped[str] = mapped_column(String(16))
    # Total (or mean) of the known values, in the unit; zero when none is known.
    quantity: Mapped[Decimal] = mapped_column(ValueQuantity())
    # Monetary value in whole minor units of the receipt currency, rounded once per line.
    money: Mapped[int | None] = mapped_column(BigInteger)
    signal_count: Mapped[int] = mapped_column(Integer)
    unknown_count: Mapped[int] = mapped_column(Integer)
    # Count of unknown values per reason code, such as {"malformed_field": 2}.
    unknown_reasons: Mapped[dict[str, Any]] = mapped_column(JsonObject)
    # How the value is calculated for this customer: per event, the formula and each variable
    # with its binding (fixed value, data field, customer override, segment table).
    inputs: Mapped[list[Any]] = mapped_column(JsonObject)
