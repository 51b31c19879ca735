"""HTTP routes to read orders, order lines, invoices and invoice lines."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from tallystick.server.deps import CurrentPrincipal, ReadSession, authenticate
from tallystick.server.filters import parse_choice_filter, parse_date_filter
from tallystick.server.orders import queries
from tallystick.server.orders.schemas import (
    CREATION_STATES,
    INVOICE_STATUSES,
    ORDER_STATUSES,
    PAYMENT_STATUSES,
    InvoiceLinesOut,
    InvoiceListOut,
    InvoiceOut,
    OrderLinesOut,
    OrderListOut,
    OrderOut,
    invoice_line_out,
    invoice_out,
    order_line_out,
    order_out,
)
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES

_common = {"dependencies": [Depends(authenticate)], "responses": ERROR_RESPONSES}
orders_router = Router(tags=["orders"], **_common)
invoices_router = Router(tags=["invoices"], **_common)

_DATE_HELP = "YYYY-MM-DD (UTC) or an RFC 3339 date-time."


@orders_router.get("/orders/", response_model=OrderListOut)
def list_orders(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: Annotated[str | None, Query(alias="externalCustomerId")] = None,
    external_id: Annotated[str | None, Query(alias="externalId")] = None,
    creation_state: Annotated[str | None, Query(alias="creationState", description="draft or active.")] = None,
    status: Annotated[str | None, Query(description="draft, paused, active or ended.")] = None,
    start_date_from: Annotated[str | None, Query(alias="startDateFrom", description=_DATE_HELP)] = None,
    start_date_to: Annotated[str | None, Query(alias="startDateTo", description=_DATE_HELP)] = None,
    end_date_from: Annotated[str | None, Query(alias="endDateFrom", description=_DATE_HELP)] = None,
    end_date_to: Annotated[str | None, Query(alias="endDateTo", description=_DATE_HELP)] = None,
) -> OrderListOut:
    """List orders, newest first. Amounts are in minor units of the order's currency."""
    statement = queries.orders_statement(
        principal.organization_id,
        customer_id=customer_id,
        external_customer_id=external_customer_id,
        external_id=external_id,
        creation_state=parse_choice_filter("creationState", creation_state, CREATION_STATES),
        status=parse_choice_filter("status", status, ORDER_STATUSES),
        start_from=parse_date_filter("startDateFrom", start_date_from),
        start_to=parse_date_filter("startDateTo", start_date_to, end_of_day=True),
        end_from=parse_date_filter("endDateFrom", end_date_from),
        end_to=parse_date_filter("endDateTo", end_date_to, end_of_day=True),
    )
    rows, pagination = paginate(session, statement, page)
    totals = queries.billed_totals(session, [order.id for order in rows])
    data = [order_out(order, *totals.get(order.id, (0, 0))) for order in rows]
    return OrderListOut.model_validate({"data": data, "pagination": pagination})


@orders_router.get("/orders/{order_id}", response_model=OrderOut)
def get_order(order_id: str, principal: CurrentPrincipal, session: ReadSession) -> OrderOut:
    order = queries.get_order(session, principal.organization_id, order_id)
    totals = queries.billed_totals(session, [order.id])
    return order_out(order, *totals.get(order.id, (0, 0)))


@orders_router.get("/orders/{order_id}/lines", response_model=OrderLinesOut)
def get_order_lines(
    order_id: str, principal: CurrentPrincipal, session: ReadSession, page: Page
) -> OrderLinesOut:
    """List an order's lines, each with the pricing lines and credit benefits it was sold with."""
    order = queries.get_order(session, principal.organization_id, order_id)
    rows, pagination = paginate(session, queries.order_lines_statement(order), page)
    return OrderLinesOut.model_validate(
        {"data": [order_line_out(line) for line in rows], "pagination": pagination}
    )


@invoices_router.get("/invoices/", response_model=InvoiceListOut)
def list_invoices(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    customer_id: Annotated[str | None, Query(alias="customerId")] = None,
    external_customer_id: Annotated[str | None, Query(alias="externalCustomerId")] = None,
    order_id: Annotated[str | None, Query(alias="orderId")] = None,
    status: Annotated[str | None, Query(description=", ".join(INVOICE_STATUSES) + ".")] = None,
    payment_status: Annotated[
        str | None, Query(alias="paymentStatus", description=", ".join(PAYMENT_STATUSES) + ".")
    ] = None,
    issue_date_from: Annotated[str | None, Query(alias="issueDateFrom", description=_DATE_HELP)] = None,
    issue_date_to: Annotated[str | None, Query(alias="issueDateTo", description=_DATE_HELP)] = None,
    due_date_from: Annotated[str | None, Query(alias="dueDateFrom", description=_DATE_HELP)] = None,
    due_date_to: Annotated[str | None, Query(alias="dueDateTo", description=_DATE_HELP)] = None,
    display_number: Annotated[str | None, Query(alias="displayNumber")] = None,
    purchase_order_reference: Annotated[str | None, Query(alias="purchaseOrderReference")] = None,
    currency: Annotated[str | None, Query(description="ISO 4217 code, such as USD.")] = None,
) -> InvoiceListOut:
    """List invoices, newest issue date first. Amounts are in minor units of the currency."""
    statement = queries.invoices_statement(
        principal.organization_id,
        customer_id=customer_id,
        external_customer_id=external_customer_id,
        order_id=order_id,
        status=parse_choice_filter("status", status, INVOICE_STATUSES),
        payment_status=parse_choice_filter("paymentStatus", payment_status, PAYMENT_STATUSES),
        issue_from=parse_date_filter("issueDateFrom", issue_date_from),
        issue_to=parse_date_filter("issueDateTo", issue_date_to, end_of_day=True),
        due_from=parse_date_filter("dueDateFrom", due_date_from),
        due_to=parse_date_filter("dueDateTo", due_date_to, end_of_day=True),
        display_number=display_number,
        purchase_order_reference=purchase_order_reference,
        currency=currency,
    )
    rows, pagination = paginate(session, statement, page)
    return InvoiceListOut.model_validate(
        {"data": [invoice_out(invoice) for invoice in rows], "pagination": pagination}
    )


@invoices_router.get("/invoices/{invoice_id}", response_model=InvoiceOut)
def get_invoice(invoice_id: str, principal: CurrentPrincipal, session: ReadSession) -> InvoiceOut:
    return invoice_out(queries.get_invoice(session, principal.organization_id, invoice_id))


@invoices_router.get("/invoices/{invoice_id}/lines", response_model=InvoiceLinesOut)
def get_invoice_lines(
    invoice_id: str, principal: CurrentPrincipal, session: ReadSession, page: Page
) -> InvoiceLinesOut:
    invoice = queries.get_invoice(session, principal.organization_id, invoice_id)
    rows, pagination = paginate(session, queries.invoice_lines_statement(invoice), page)
    return InvoiceLinesOut.model_validate(
        {"data": [invoice_line_out(line, invoice) for line in rows], "pagination": pagination}
    )
