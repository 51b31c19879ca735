"""Orders and what they bill: order lines, billing periods, credit allocations, invoices,
invoice lines, payments, payment methods and each organization's payment settings.

Money columns hold integer minor units (cents for USD) of the row's `currency`, an ISO 4217
code. An order line keeps a copy of the pricing lines and credit benefits it was sold with, so
later edits to the plan change neither the order's price nor the credits it grants.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tallystick.server import clock
from tallystick.server.encryption import EncryptedString
from tallystick.server.models.base import Base, OrgScopedMixin, TimestampMixin
from tallystick.server.models.types import Credits, JsonObject


class Order(OrgScopedMixin, TimestampMixin, Base):
    """A customer's subscription to one product, optionally on one plan.

    Billing periods start at `start_date` and last `billing_period_months` each; `billing_anchor`
    is the day of the month (1-31) on which later periods start. `billing_due_at` is the earliest
    instant at which the order has billing work to do, such as a period to start, a month's
    credits to allocate, a payment to retry or an end to record. The renewal task and balance
    reads look orders up by it.
    """

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("organization_id", "number"),
        Index(
            "uq_orders_org_external_id",
            "organization_id",
            "external_id",
            unique=True,
            sqlite_where=text("external_id IS NOT NULL"),
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        Index("ix_orders_customer_product", "organization_id", "customer_id", "product_id", "status"),
        Index("ix_orders_billing_due_at", "billing_due_at"),
        Index("ix_orders_customer_billing_due_at", "organization_id", "customer_id", "billing_due_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Sequential per organization, starting at 1.
    number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(500))
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"), index=True)
    billing_customer_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("customers.id"))
    product_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("products.id"))
    plan_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("plans.id"))
    # The checkout that created the order, when a buyer bought it on the hosted page.
    checkout_id: Mapped[str | None] = mapped_column(String(40), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    # draft, active, paused or ended.
    status: Mapped[str] = mapped_column(String(16), default="draft")
    # The wire `creationState`: draft or active.
    creation_state: Mapped[str] = mapped_column(String(16), default="draft")
    currency: Mapped[str] = mapped_column(String(3))
    start_date: Mapped[datetime]
    end_date: Mapped[datetime | None]
    billing_anchor: Mapped[int] = mapped_column(Integer)
    # The wire billing frequency: monthly, quarterly, semiAnnually, annual or custom.
    billing_frequency: Mapped[str] = mapped_column(String(16), default="monthly")
    billing_period_months: Mapped[int] = mapped_column(Integer, default=1)
    # The wire billingFrequencyOverride ({frequency, customMonths}) a sales-led order was sold with.
    billing_frequency_override: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)
    billing_contact_ids: Mapped[list[str] | None] = mapped_column(JsonObject)
    subscription_terms: Mapped[int | None] = mapped_column(Integer)
    payment_terms: Mapped[str | None] = mapped_column(String(64))
    # The price of one billing period in minor units, before tax.
    period_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    payment_method_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("payment_methods.id")
    )
    activated_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    purchase_order_reference: Mapped[str | None] = mapped_column(String(255))
    auto_post_invoices: Mapped[bool] = mapped_column(default=True)
    auto_send_billing_emails: Mapped[bool] = mapped_column(default=False)
    auto_send_payment_emails: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The billing period in progress: its number (from 1; 0 before the first) and bounds.
    period_number: Mapped[int] = mapped_column(Integer, default=0)
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    # Billing events up to this instant have been processed; None before the first period.
    billing_cursor: Mapped[datetime | None]
    billing_due_at: Mapped[datetime | None]
    # A plan change that takes effect when the current period ends: {planId, name, currency,
    # billingFrequency, periodMonths, periodAmount, attributes, requestedAt}.
    scheduled_change: Mapped[dict[str, Any] | None] = mapped_column(JsonObject)
    ended_at: Mapped[datetime | None]

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", order_by="OrderLine.position", lazy="selectin"
    )


class OrderLine(OrgScopedMixin, TimestampMixin, Base):
    """One product of an order, with a copy of its pricing lines as sold.

    `attributes` is a list of objects with the keys productAttributeId, planAttributeId (or
    null), name, pricing (the wire pricing object), unitPrice, recurring and creditBenefits
    (each with id, creditsCurrencyId, amount as a decimal string, allocationCadence,
    creditGrantTiming and the rollover fields). A plan change ends the line (`end_date`) and
    adds a line with the new plan's copy, and a line bills and grants only until it ends.
    """

    __tablename__ = "order_lines"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[str] = mapped_column(String(40), ForeignKey("products.id"))
    name: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(String(5000))
    # STANDARD, CREDIT, PRORATION_CREDIT or PRORATION_CHARGE.
    line_type: Mapped[str] = mapped_column(String(32), default="STANDARD")
    start_date: Mapped[datetime]
    end_date: Mapped[datetime | None]
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JsonObject, default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)

    order: Mapped[Order] = relationship(back_populates="lines")


class BillingPeriod(OrgScopedMixin, Base):
    """One started billing period of an order. The row is the period's claim: (order, number)
    is unique, so a period is started, invoiced and charged once across all processes."""

    __tablename__ = "billing_periods"
    __table_args__ = (UniqueConstraint("order_id", "number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(40), ForeignKey("orders.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    start_date: Mapped[datetime]
    end_date: Mapped[datetime]
    invoice_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("invoices.id"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class CreditAllocation(OrgScopedMixin, Base):
    """Credits one benefit of an order line granted for one slot of one billing period.

    A slot is the whole period for an upfront benefit, or one month of it for a monthly one.
    The unique key (order, period, order line, benefit, slot) makes each allocation happen
    once. `kind` is allowance, or upgrade for the difference granted when a plan change raised
    the allowance mid-slot. When the benefit keeps a rollover amount, `rolled_over_at` records
    that the unused credits were carried over (`rollover_grant_id`, None when nothing was left).
    """

    __tablename__ = "credit_allocations"
    __table_args__ = (
        UniqueConstraint("order_id", "period_number", "order_line_id", "credit_benefit_id", "slot"),
        Index("ix_credit_allocations_rollover_due", "order_id", "rolled_over_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(40), ForeignKey("orders.id", ondelete="CASCADE"))
    order_line_id: Mapped[str] = mapped_column(String(40), ForeignKey("order_lines.id"))
    period_number: Mapped[int] = mapped_column(Integer)
    credit_benefit_id: Mapped[str] = mapped_column(String(40))
    slot: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default="allowance")
    credits_currency_id: Mapped[str] = mapped_column(String(40), ForeignKey("credit_currencies.id"))
    amount: Mapped[Decimal] = mapped_column(Credits())
    starts_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    grant_id: Mapped[str] = mapped_column(String(40), ForeignKey("credit_grants.id"))
    # Most unused credits carried past `expires_at`, and until when; None when nothing rolls over.
    rollover_amount: Mapped[Decimal | None] = mapped_column(Credits())
    rollover_until: Mapped[datetime | None]
    rolled_over_at: Mapped[datetime | None]
    rollover_grant_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("credit_grants.id"))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class Invoice(OrgScopedMixin, TimestampMixin, Base):
    """A bill for one billing period of an order, or for a mid-period upgrade; amounts in minor
    units of `currency`.

    Renewal invoices are charged to the order's saved payment method. A declined charge is
    retried on a fixed schedule: `payment_attempts` counts the charges tried and
    `next_payment_attempt_at` is the next one, None once paid or out of retries.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("organization_id", "number"),
        Index("ix_invoices_org_issue_date", "organization_id", "issue_date"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Sequential per organization, starting at 1; `display_number` is its printed form.
    number: Mapped[int] = mapped_column(Integer)
    display_number: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("orders.id"), index=True)
    # building, draft, pending, posted, voided, canceled or error.
    status: Mapped[str] = mapped_column(String(16), default="draft")
    # pending, paid, partiallyPaid, overdue or error.
    payment_status: Mapped[str] = mapped_column(String(16), default="pending")
    # order_based or manual.
    source: Mapped[str] = mapped_column(String(16), default="order_based")
    currency: Mapped[str] = mapped_column(String(3))
    # The billing period the invoice covers.
    start_date: Mapped[datetime]
    end_date: Mapped[datetime | None]
    issue_date: Mapped[datetime]
    posted_date: Mapped[datetime | None]
    due_date: Mapped[datetime | None]
    subtotal: Mapped[int] = mapped_column(BigInteger, default=0)
    tax_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JsonObject)
    purchase_order_reference: Mapped[str | None] = mapped_column(String(255))
    # period (a billing period's charge) or upgrade (the prorated difference of a plan change).
    billing_reason: Mapped[str] = mapped_column(String(16), default="period")
    # The billing period the invoice belongs to, when it is an order's.
    period_number: Mapped[int | None] = mapped_column(Integer)
    payment_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_payment_attempt_at: Mapped[datetime | None]
    # The idempotency key of a charge whose result is unknown. The next attempt reuses it, so a
    # charge that went through is not made twice.
    payment_idempotency_key: Mapped[str | None] = mapped_column(String(255))
    last_payment_error: Mapped[str | None] = mapped_column(String(500))

    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", lazy="selectin"
    )


class InvoiceLine(OrgScopedMixin, TimestampMixin, Base):
    """One charge on an invoice: `quantity` times `unit_price`, in minor units."""

    __tablename__ = "invoice_lines"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("orders.id"))
    order_line_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("order_lines.id"))
    # The product pricing line charged (the wire `orderLineAttributeId`).
    product_attribute_id: Mapped[str | None] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(String(1000))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    unit_price: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    start_date: Mapped[datetime]
    end_date: Mapped[datetime]
    position: Mapped[int] = mapped_column(Integer, default=0)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class PaymentMethod(OrgScopedMixin, TimestampMixin, Base):
    """A customer's reusable way to pay, stored at its payment provider.

    Only the card brand and last four digits are kept; the provider holds the rest under
    `provider_method_id`, which is what renewals charge.
    """

    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("organization_id", "provider", "provider_method_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_method_id: Mapped[str] = mapped_column(String(255))
    # The provider's customer the method is attached to, for providers that need one (Stripe).
    provider_customer_id: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16), default="card")
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    # active or detached.
    status: Mapped[str] = mapped_column(String(16), default="active")


class Payment(OrgScopedMixin, Base):
    """Money received for an invoice, in minor units of `currency`.

    A provider reports each payment under its own id, so (provider, provider_payment_id) is
    unique: a second report of the same payment finds the first instead of paying twice.
    `idempotency_key` does the same for one submission of the hosted payment form.
    """

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("organization_id", "provider", "provider_payment_id"),
        Index(
            "uq_payments_org_idempotency_key",
            "organization_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"), index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("invoices.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("orders.id"))
    checkout_id: Mapped[str | None] = mapped_column(String(40))
    payment_method_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("payment_methods.id")
    )
    provider: Mapped[str] = mapped_column(String(32))
    provider_payment_id: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # succeeded or refunded.
    status: Mapped[str] = mapped_column(String(16), default="succeeded")
    paid_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


class PaymentSettings(Base):
    """One organization's payment provider and that provider's credentials.

    `provider` is "test" (the embedded test mode) or "stripe". The Stripe keys are stored as
    given, so the database must be protected like the Stripe dashboard; they are never
    returned by the API.
    """

    __tablename__ = "payment_settings"

    organization_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(32), default="test")
    # Encrypted at rest when TALLYSTICK_ENCRYPTION_KEYS is set.
    stripe_secret_key: Mapped[str | None] = mapped_column(EncryptedString())
    stripe_webhook_secret: Mapped[str | None] = mapped_column(EncryptedString())
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)


class TestClock(OrgScopedMixin, TimestampMixin, Base):
    """A clock for test mode: its customers' billing runs at `frozen_time`, which moves only when
    the clock is advanced, so renewals, expiries and retries can be tried without waiting."""

    __test__ = False  # not a pytest test class, despite its name
    __tablename__ = "test_clocks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    frozen_time: Mapped[datetime]
    # ready, or advancing while an advance runs.
    status: Mapped[str] = mapped_column(String(16), default="ready")
    deleted_at: Mapped[datetime | None]


class TestClockCustomer(OrgScopedMixin, Base):
    """A customer whose time is a test clock's; a customer belongs to at most one clock."""

    __test__ = False
    __tablename__ = "test_clock_customers"

    customer_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    test_clock_id: Mapped[str] = mapped_column(String(40), ForeignKey("test_clocks.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
