"""Wire models of orders, order lines, invoices and invoice lines, and their serializers.

Amounts are integers in minor units (cents for USD) of the order's or invoice's currency, the
same unit as catalog prices.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from tallystick.server.models import Invoice, InvoiceLine, Order, OrderLine
from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel

ORDER_STATUSES = ("draft", "paused", "active", "ended")
BillingFrequency = Literal["monthly", "quarterly", "semiAnnually", "annual", "custom"]
# Months in one billing period, by the order's wire billing frequency; custom reads a count.
FREQUENCY_MONTHS = {"monthly": 1, "quarterly": 3, "semiAnnually": 6, "annual": 12}


class PricePointsIn(RequestModel):
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    # The bound keeps unit price x quantity within the 64-bit money columns.
    unit_price: int = Field(ge=0, le=10**12, description="Minor units, such as cents.")
    min_quantity: int | None = None
    included_quantity: int | None = None
    tiers: list[dict[str, Any]] | None = None


class OrderCreditBenefitIn(RequestModel):
    id: str = Field(min_length=1, max_length=40)
    credits_currency_id: str | None = None
    recipient: Literal["organization", "seat"] | None = None
    amount: Decimal = Field(gt=0, max_digits=28, decimal_places=9)
    rollover_amount: Decimal | None = Field(default=None, ge=0, max_digits=28, decimal_places=9)
    rollover_duration: int | None = Field(default=None, ge=0)
    rollover_duration_unit: Literal["days", "months"] | None = None
    allocation_cadence: Literal["upfront", "monthly"] | None = None
    credit_grant_timing: Literal["on_order_activation", "on_payment", "on_invoice_posted"] | None = None


class OrderLinePricingIn(RequestModel):
    event_name: str | None = Field(default=None, max_length=255)
    charge_type: Literal["usage", "recurring", "oneTime", "seatBased"]
    price_points: PricePointsIn
    pricing_model: Literal[
        "perUnit", "volumePricing", "graduatedPricing", "prepaidCredits", "bracketedPrepaidCredits", "flat"
    ]
    billing_frequency: BillingFrequency | None = None
    billing_frequency_custom_months: int | None = Field(default=None, ge=1, le=120)
    billing_type: Literal["advance", "arrears"] | None = None
    signal_type: Literal["activity", "outcome"] | None = None
    credits_currency_id: str | None = None
    credit_cost: Decimal | None = Field(default=None, ge=0, max_digits=28, decimal_places=9)
    overage_unit_price: int | None = None
    credit_rollover_amount: Decimal | None = None
    credit_benefits: list[OrderCreditBenefitIn] | None = None
    pricing_input: dict[str, Any] | None = None
    credit_unit_brackets: list[dict[str, Any]] | None = None


class OrderLineAttributeIn(RequestModel):
    name: str = Field(min_length=1, max_length=500)
    quantity: int | None = Field(default=None, ge=1, le=1_000_000)
    pricing: OrderLinePricingIn


class OrderLineIn(RequestModel):
    product_id: str
    name: str | None = Field(default=None, max_length=500)
    description: str | None = Field(default=None, max_length=5000)
    start_date: datetime | None = None
    end_date: datetime | None = None
    attributes: list[OrderLineAttributeIn] | None = None
    line_type: Literal["STANDARD", "CREDIT"] | None = None


class BillingFrequencyOverrideIn(RequestModel):
    frequency: BillingFrequency
    custom_months: int | None = Field(default=None, ge=1, le=120)


class OrderUpdate(RequestModel):
    """Fields an order update may send. Dates, anchor and terms change only on draft orders."""

    name: str | None = Field(default=None, max_length=500)
    start_date: datetime | None = None
    end_date: datetime | None = None
    subscription_terms: int | None = Field(default=None, ge=1, le=1200)
    creation_state: Literal["draft", "active"] | None = None
    billing_anchor: int | None = Field(default=None, ge=1, le=31)
    payment_terms: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    billing_customer_id: str | None = None
    billing_contact_ids: list[str] | None = None
    auto_post_invoices: bool | None = None
    auto_send_billing_emails: bool | None = None
    auto_send_payment_emails: bool | None = None
    purchase_order_reference: str | None = Field(default=None, max_length=255)


class OrderCreate(OrderUpdate):
    customer_id: str
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    lines: list[OrderLineIn] | None = None
    billing_frequency_override: BillingFrequencyOverrideIn | None = None
CREATION_STATES = ("draft", "active")
INVOICE_STATUSES = ("building", "draft", "pending", "posted", "voided", "canceled", "error")
PAYMENT_STATUSES = ("pending", "paid", "partiallyPaid", "overdue", "error")


class OrderOut(ResponseModel):
    id: str
    customer_id: str
    billing_customer_id: str | None = None
    billing_contact_ids: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    end_date: datetime | None = None
    name: str
    start_date: datetime
    subscription_terms: int | None = None
    billed_amount_no_tax: int = Field(description="Posted invoices' totals before tax, in minor units.")
    billed_tax: int = Field(description="Tax on posted invoices, in minor units.")
    estimated_tax: int = Field(description="Estimated tax, in minor units.")
    order_amount: int = Field(description="Price of one billing period, in minor units.")
    pending_billing_amount: int = Field(description="Billed but unpaid, in minor units.")
    total_amount: int = Field(description="Price of one billing period, in minor units.")
    total_billed_amount: int = Field(description="Posted invoices' totals with tax, in minor units.")
    creation_state: str
    payment_terms: str | None = None
    number: int
    metadata: dict[str, Any] | None = None
    auto_post_invoices: bool | None = None
    auto_send_billing_emails: bool | None = None
    auto_send_payment_emails: bool | None = None
    version: int
    billing_frequency_overridden: bool = False
    purchase_order_reference: str | None = None
    billing_frequency_override: dict[str, Any] | None = None
    # Fields beyond the Paid wire model.
    status: str = Field(description="draft, active, paused or ended.")
    external_id: str | None = None
    product_id: str | None = None
    plan_id: str | None = None
    checkout_id: str | None = None
    currency: str
    billing_anchor: int = Field(description="Day of the month (1-31) on which periods start.")
    billing_frequency: str
    payment_method_id: str | None = None
    period_number: int = Field(description="The billing period in progress, from 1; 0 before the first.")
    period_start: datetime | None = None
    period_end: datetime | None = None
    next_billing_at: datetime | None = Field(default=None, description="When billing work is next due.")
    scheduled_change: dict[str, Any] | None = Field(
        default=None, description="A plan change taking effect at periodEnd: planId, name, periodAmount."
    )
    activated_at: datetime | None = None
    ended_at: datetime | None = None


class OrderListOut(ResponseModel):
    data: list[OrderOut]
    pagination: PaginationOut


class OrderLineOut(ResponseModel):
    id: str
    product_id: str
    name: str
    description: str | None = None
    start_date: datetime
    end_date: datetime | None = None
    line_type: str
    attributes: list[dict[str, Any]] = Field(
        description="The pricing lines as sold: pricing, unit price and credit benefits."
    )


class OrderLinesOut(ResponseModel):
    data: list[OrderLineOut]
    pagination: PaginationOut


class InvoiceOut(ResponseModel):
    id: str
    display_number: str | None = None
    order_id: str | None = None
    customer_id: str
    status: str
    payment_status: str
    source: str
    start_date: datetime
    end_date: datetime | None = None
    issue_date: datetime
    posted_date: datetime | None = None
    due_date: datetime | None = None
    currency: str
    tax_amount: int = Field(description="Minor units.")
    tax_rate: int
    tax_status: str
    invoice_total_excluding_tax: int = Field(description="Minor units.")
    invoice_total: int = Field(description="Minor units.")
    amount_due: int = Field(description="Minor units.")
    amount_paid: int = Field(description="Minor units.")
    amount_remaining: int = Field(description="Minor units.")
    credit_notes_total: int = Field(description="Minor units.")
    metadata: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    payment_link: str | None = None
    dispute_link: str | None = None
    public_url_token: str | None = None
    tax_exempt: bool = False
    billing_contact_id: str | None = None
    purchase_order_reference: str | None = None
    number: int
    paid_at: datetime | None = None
    billing_reason: str = Field(description="period, or upgrade for a mid-period plan change.")
    period_number: int | None = None
    payment_attempts: int = 0
    next_payment_attempt_at: datetime | None = None
    last_payment_error: str | None = None


class InvoiceListOut(ResponseModel):
    data: list[InvoiceOut]
    pagination: PaginationOut


class InvoiceLineOut(ResponseModel):
    id: str
    order_id: str | None = None
    order_line_id: str | None = None
    order_line_attribute_id: str | None = None
    start_date: datetime
    end_date: datetime
    payment_status: str
    quantity: int
    unit_price: int = Field(description="Minor units.")
    total_price_before_tax: int = Field(description="Minor units.")
    tax: int
    tax_rate: int
    total_price_after_tax: int = Field(description="Minor units.")
    currency: str
    description: str
    balance_amount: int = Field(description="Unpaid part, in minor units.")
    credited_amount: int
    created_at: datetime
    updated_at: datetime


class InvoiceLinesOut(ResponseModel):
    data: list[InvoiceLineOut]
    pagination: PaginationOut


def order_out(order: Order, billed: int = 0, unpaid: int = 0) -> OrderOut:
    """Serialize an order; `billed` and `unpaid` sum its posted invoices, in minor units."""
    return OrderOut(
        id=order.id,
        customer_id=order.customer_id,
        billing_customer_id=order.billing_customer_id,
        created_at=order.created_at,
        updated_at=order.updated_at,
        end_date=order.end_date,
        name=order.name,
        start_date=order.start_date,
        subscription_terms=order.subscription_terms,
        billed_amount_no_tax=billed,
        billed_tax=0,
        estimated_tax=0,
        order_amount=order.period_amount,
        pending_billing_amount=unpaid,
        total_amount=order.period_amount,
        total_billed_amount=billed,
        creation_state=order.creation_state,
        payment_terms=order.payment_terms,
        number=order.number,
        metadata=order.metadata_,
        auto_post_invoices=order.auto_post_invoices,
        auto_send_billing_emails=order.auto_send_billing_emails,
        auto_send_payment_emails=order.auto_send_payment_emails,
        version=order.version,
        billing_contact_ids=list(order.billing_contact_ids or []),
        billing_frequency_overridden=order.billing_frequency_override is not None,
        billing_frequency_override=order.billing_frequency_override,
        purchase_order_reference=order.purchase_order_reference,
        status=order.status,
        external_id=order.external_id,
        product_id=order.product_id,
        plan_id=order.plan_id,
        checkout_id=order.checkout_id,
        currency=order.currency,
        billing_anchor=order.billing_anchor,
        billing_frequency=order.billing_frequency,
        payment_method_id=order.payment_method_id,
        period_number=order.period_number,
        period_start=order.period_start,
        period_end=order.period_end,
        next_billing_at=order.billing_due_at,
        scheduled_change=(
            {key: order.scheduled_change.get(key) for key in ("planId", "name", "periodAmount")}
            if order.scheduled_change
            else None
        ),
        activated_at=order.activated_at,
        ended_at=order.ended_at,
    )


def order_line_out(line: OrderLine) -> OrderLineOut:
    return OrderLineOut(
        id=line.id,
        product_id=line.product_id,
        name=line.name,
        description=line.description,
        start_date=line.start_date,
        end_date=line.end_date,
        line_type=line.line_type,
        attributes=list(line.attributes or []),
    )


def invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.id,
        display_number=invoice.display_number,
        order_id=invoice.order_id,
        customer_id=invoice.customer_id,
        status=invoice.status,
        payment_status=invoice.payment_status,
        source=invoice.source,
        start_date=invoice.start_date,
        end_date=invoice.end_date,
        issue_date=invoice.issue_date,
        posted_date=invoice.posted_date,
        due_date=invoice.due_date,
        currency=invoice.currency,
        tax_amount=invoice.tax_amount,
        tax_rate=0,
        tax_status="not_applicable",
        invoice_total_excluding_tax=invoice.subtotal,
        invoice_total=invoice.total,
        amount_due=invoice.total,
        amount_paid=invoice.amount_paid,
        amount_remaining=invoice.total - invoice.amount_paid,
        credit_notes_total=0,
        metadata=invoice.metadata_,
        created_at=invoice.created_at,
        updated_at=invoice.updated_at,
        purchase_order_reference=invoice.purchase_order_reference,
        number=invoice.number,
        paid_at=invoice.paid_at,
        billing_reason=invoice.billing_reason,
        period_number=invoice.period_number,
        payment_attempts=invoice.payment_attempts,
        next_payment_attempt_at=invoice.next_payment_attempt_at,
        last_payment_error=invoice.last_payment_error,
    )


def invoice_line_out(line: InvoiceLine, invoice: Invoice) -> InvoiceLineOut:
    balance = 0 if invoice.payment_status == "paid" else line.amount
    return InvoiceLineOut(
        id=line.id,
        order_id=line.order_id,
        order_line_id=line.order_line_id,
        order_line_attribute_id=line.product_attribute_id,
        start_date=line.start_date,
        end_date=line.end_date,
        payment_status=invoice.payment_status,
        quantity=line.quantity,
        unit_price=line.unit_price,
        total_price_before_tax=line.amount,
        tax=0,
        tax_rate=0,
        total_price_after_tax=line.amount,
        currency=line.currency,
        description=line.description,
        balance_amount=balance,
        credited_amount=0,
        created_at=line.created_at,
        updated_at=line.updated_at,
    )
