"""The outbox: events recorded in the same transaction as the change that caused them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server import clock
from tallystick.server.models.base import Base, OrgScopedMixin
from tallystick.server.models.types import JsonObject


class OutboxEvent(OrgScopedMixin, Base):
    """An event such as billing-credits-depleted, waiting for delivery while `delivered_at` is null.

    Rows commit or roll back with the change they describe, so a delivered event always matches
    committed data. Delivery (webhooks) reads undelivered rows in `created_at` order.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_undelivered", "delivered_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_type: Mapped[str] = mapped_column("type", String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonObject)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    delivered_at: Mapped[datetime | None]
