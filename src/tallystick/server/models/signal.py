"""Signals: billable events as received, with what rating them consumed."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server.models.base import Base
from tallystick.server.models.types import Credits, JsonObject


class Signal(Base):
    """One billable event, such as a chat message, stored once per idempotency key.

    tallystick never updates or deletes a signal row after its transaction commits; rows go
    only when their organization is deleted. An idempotency key therefore stays claimed for
    the life of the organization, far beyond the 35 days within which clients may retry.

    Only the organization id has a foreign key. Ingestion resolves the customer, product,
    pricing line and currency in the transaction that inserts the row, and those rows are
    never deleted except with their organization (a deleted customer is only marked so). On
    PostgreSQL each foreign key cost a lookup and a lock of the parent row per inserted
    signal, about 40% of the insert of a 1,000-signal batch.
    """

    __tablename__ = "signals"
    __table_args__ = (
        # The idempotency claim: inserting the row claims the key, in the same transaction as
        # the ledger entries of the signal. NULL keys never conflict, on SQLite and PostgreSQL.
        UniqueConstraint("organization_id", "idempotency_key"),
        Index("ix_signals_org_occurred_at", "organization_id", "occurred_at"),
        Index("ix_signals_customer_occurred_at", "customer_id", "occurred_at"),
        Index("ix_signals_product_id", "product_id"),
        # Cost attribution looks signals up by trace and by paid_scope_id; most signals have
        # neither, so the indexes skip those rows.
        Index(
            "ix_signals_org_trace_id",
            "organization_id",
            "trace_id",
            sqlite_where=text("trace_id IS NOT NULL"),
            postgresql_where=text("trace_id IS NOT NULL"),
        ),
        Index(
            "ix_signals_org_paid_scope_id",
            "organization_id",
            "paid_scope_id",
            sqlite_where=text("paid_scope_id IS NOT NULL"),
            postgresql_where=text("paid_scope_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Declared here rather than through OrgScopedMixin: the composite indexes above start with
    # the organization id, so the mixin's single-column index would only slow inserts down.
    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE")
    )
    customer_id: Mapped[str] = mapped_column(String(40))
    product_id: Mapped[str | None] = mapped_column(String(40))
    event_name: Mapped[str] = mapped_column(String(255))
    # When the event happened: the signal's timestamp, or received_at when it had none.
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    external_customer_unit_id: Mapped[str | None] = mapped_column(String(255))
    # OTLP trace id as 32 lowercase hex digits, for signals that arrived as trace spans.
    trace_id: Mapped[str | None] = mapped_column(String(32))
    # data.paid.paid_scope_id from paid-python's cost_attributed_signal: the cost spans with
    # the same paid_scope_id attribute belong to this signal.
    paid_scope_id: Mapped[int | None] = mapped_column(BigInteger)

    # The pricing line that rated the signal; both NULL when no line matched.
    product_attribute_id: Mapped[str | None] = mapped_column(String(40))
    # No foreign key: updating a plan replaces its plan attributes, and the signals rated by
    # the old ones keep their ids.
    plan_attribute_id: Mapped[str | None] = mapped_column(String(40))
    credit_currency_id: Mapped[str | None] = mapped_column(String(40))
    # Credits drawn from grants, and credits left uncovered as pending consumption. Their sum
    # is what the pricing line charged for the signal.
    credits_consumed: Mapped[Decimal] = mapped_column(Credits(), default=Decimal(0))
    credits_pending: Mapped[Decimal] = mapped_column(Credits(), default=Decimal(0))
