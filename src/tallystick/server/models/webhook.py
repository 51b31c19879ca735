"""Webhooks: per-event endpoint settings, the signing secret, deliveries and their attempts.

An outbox event (see `OutboxEvent`) becomes one `WebhookDelivery` when the webhook for its event
name is enabled. Each HTTP request for a delivery is one `WebhookDeliveryAttempt`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tallystick.server import clock
from tallystick.server.encryption import EncryptedString
from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin
from tallystick.server.models.types import Credits


class WebhookEndpoint(OrgScopedMixin, TimestampMixin, Base):
    """The settings of one webhook event, such as billing-checkout-completed, for one organization."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String(2048))
    enabled: Mapped[bool] = mapped_column(default=False)
    last_sent_at: Mapped[datetime | None]
    # Outcome of the latest request to `url`: success (a 2xx) or failed.
    last_status: Mapped[str | None] = mapped_column(String(16))


class WebhookSigningSecret(Base):
    """The organization's one webhook signing secret. HMAC needs the secret itself, so it is
    stored reversibly: encrypted when TALLYSTICK_ENCRYPTION_KEYS is set, else in clear."""

    __tablename__ = "webhook_signing_secrets"

    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(EncryptedString())
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class WebhookDelivery(OrgScopedMixin, TimestampMixin, Base):
    """The sending of one outbox event to its webhook, retried until a 2xx or `give_up_at`.

    `status` is pending, delivered, failed (retries ran out) or canceled (the webhook was
    disabled or lost its URL). A worker owns a pending delivery while `claimed_until` is in the
    future and its `claim_token` is set. When a worker dies, its claim lapses and the next
    worker sends the event again.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_org_created", "organization_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), ForeignKey("outbox_events.id", ondelete="CASCADE"))
    # The webhook event name, such as billing-invoice-paid.
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    give_up_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    claim_token: Mapped[str | None] = mapped_column(String(40))
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]


class WebhookDeliveryAttempt(OrgScopedMixin, Base):
    """One HTTP request of a delivery, with its outcome. Never updated."""

    __tablename__ = "webhook_delivery_attempts"
    __table_args__ = (Index("ix_webhook_delivery_attempts_delivery", "delivery_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(String(2048))
    started_at: Mapped[datetime]
    # HTTP status of the response; None when no response arrived (timeout, connection error).
    response_status: Mapped[int | None]
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    succeeded: Mapped[bool]


class LowBalanceThreshold(OrgScopedMixin, TimestampMixin, Base):
    """The available balance, in credits, at or below which billing-credits-low fires."""

    __tablename__ = "low_balance_thresholds"
    __table_args__ = (UniqueConstraint("organization_id", "credits_currency_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    credits_currency_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("credit_currencies.id", ondelete="CASCADE")
    )
    threshold: Mapped[Decimal] = mapped_column(Credits())
