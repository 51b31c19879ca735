"""SQL of orders and invoices: lookups, list statements and billed totals."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from tallystick.server.customers.service import live_customer_id_by_external_id
from tallystick.server.errors import not_found
from tallystick.server.models import Invoice, InvoiceLine, Order, OrderLine


def get_order(session: Session, organization_id: str, order_id: str) -> Order:
    """Return the organization's order or raise the API's 404."""
    order = session.scalar(
        select(Order).where(Order.organization_id == organization_id, Order.id == order_id)
    )
    if order is None:
        raise not_found("Order", "id", order_id)
    return order


def get_invoice(session: Session, organization_id: str, invoice_id: str) -> Invoice:
    """Return the organization's invoice or raise the API's 404."""
    invoice = session.scalar(
        select(Invoice).where(Invoice.organization_id == organization_id, Invoice.id == invoice_id)
    )
    if invoice is None:
        raise not_found("Invoice", "id", invoice_id)
    return invoice


def active_orders(
    session: Session, organization_id: str, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Order]:
    """Return the active order of each (customer id, product id) pair that has one.

    When a pair has several active orders, the most recently started one is returned.
    """
    wanted = set(pairs)
    if not wanted:
        return {}
    customer_ids = {customer_id for customer_id, _ in wanted}
    rows = session.scalars(
        select(Order)
        .where(
            Order.organization_id == organization_id,
            Order.status == "active",
            Order.customer_id.in_(customer_ids),
        )
        .order_by(Order.start_date, Order.number)
    )
    found: dict[tuple[str, str], Order] = {}
    for order in rows:
        key = (order.customer_id, order.product_id or "")
        if key in wanted:
            found[key] = order
    return found


def billed_totals(session: Session, order_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Return (billed, unpaid) in minor units per order id, over its posted invoices."""
    if not order_ids:
        return {}
    rows = session.execute(
        select(
            Invoice.order_id,
            func.sum(Invoice.total),
            func.sum(case((Invoice.payment_status != "paid", Invoice.total - Invoice.amount_paid), else_=0)),
        )
        .where(Invoice.order_id.in_(order_ids), Invoice.status == "posted")
        .group_by(Invoice.order_id)
    )
    return {order_id: (int(billed or 0), int(unpaid or 0)) for order_id, billed, unpaid in rows}


def orders_statement(
    organization_id: str,
    *,
    customer_id: str | None = None,
    external_customer_id: str | None = None,
    external_id: str | None = None,
    creation_state: str | None = None,
    status: str | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    end_from: datetime | None = None,
    end_to: datetime | None = None,
) -> Select[tuple[Order]]:
    statement = select(Order).where(Order.organization_id == organization_id)

    if customer_id:
        statement = statement.where(Order.customer_id == customer_id)
    if external_customer_id:
        statement = statement.where(
            Order.customer_id.in_(live_customer_id_by_external_id(organization_id, external_customer_id))
        )
    if external_id:
        statement = statement.where(Order.external_id == external_id)
    if creation_state:
        statement = statement.where(Order.creation_state == creation_state)
    if status:
        statement = statement.where(Order.status == status)
    if start_from:
        statement = statement.where(Order.start_date >= start_from)
    if start_to:
        statement = statement.where(Order.start_date <= start_to)
    if end_from:
        statement = statement.where(Order.end_date >= end_from)
    if end_to:
        statement = statement.where(Order.end_date <= end_to)

    return statement.order_by(Order.created_at.desc(), Order.number.desc())


def order_lines_statement(order: Order) -> Select[tuple[OrderLine]]:
    return (
        select(OrderLine)
        .where(OrderLine.organization_id == order.organization_id, OrderLine.order_id == order.id)
        .order_by(OrderLine.position, OrderLine.id)
    )


def invoices_statement(
    organization_id: str,
    *,
    customer_id: str | None = None,
    external_customer_id: str | None = None,
    order_id: str | None = None,
    status: str | None = None,
    payment_status: str | None = None,
    issue_from: datetime | None = None,
    issue_to: datetime | None = None,
    due_from: datetime | None = None,
    due_to: datetime | None = None,
    display_number: str | None = None,
    purchase_order_reference: str | None = None,
    currency: str | None = None,
) -> Select[tuple[Invoice]]:
    statement = select(Invoice).where(Invoice.organization_id == organization_id)

    if customer_id:
        statement = statement.where(Invoice.customer_id == customer_id)
    if external_customer_id:
        statement = statement.where(
            Invoice.customer_id.in_(live_customer_id_by_external_id(organization_id, external_customer_id))
        )
    if order_id:
        statement = statement.where(Invoice.order_id == order_id)
    if status:
        statement = statement.where(Invoice.status == status)
    if payment_status:
        statement = statement.where(Invoice.payment_status == payment_status)
    if issue_from:
        statement = statement.where(Invoice.issue_date >= issue_from)
    if issue_to:
        statement = statement.where(Invoice.issue_date <= issue_to)
    if due_from:
        statement = statement.where(Invoice.due_date >= due_from)
    if due_to:
        statement = statement.where(Invoice.due_date <= due_to)
    if display_number:
        statement = statement.where(Invoice.display_number == display_number)
    if purchase_order_reference:
        statement = statement.where(Invoice.purchase_order_reference == purchase_order_reference)
    if currency:
        statement = statement.where(Invoice.currency == currency.upper())

    return statement.order_by(Invoice.issue_date.desc(), Invoice.number.desc())


def invoice_lines_statement(invoice: Invoice) -> Select[tuple[InvoiceLine]]:
    return (
        select(InvoiceLine)
        .where(InvoiceLine.organization_id == invoice.organization_id, InvoiceLine.invoice_id == invoice.id)
        .order_by(InvoiceLine.position, InvoiceLine.id)
    )
