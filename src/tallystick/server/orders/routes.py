"""HTTP routes of orders (create, read, update, delete, activate, cancel), order lines,
invoices and invoice lines."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query

from tallystick.server import clock
from tallystick.server.billing import invoices as billing_invoices
from tallystick.server.billing.allocations import allocate_due
from tallystick.server.billing.collection import charge_in_progress
from tallystick.server.billing.renewals import lock_order
from tallystick.server.billing.test_clocks import customer_time
from tallystick.server.deps import (
    CurrentPrincipal,
    DbSession,
    ReadSession,
    authenticate,
)
from tallystick.server.errors import ApiError, bad_request
from tallystick.server.filters import ExternalCustomerFilter, parse_choice_filter, parse_date_filter
from tallystick.server.models import Order
from tallystick.server.orders import queries, service
from tallystick.server.orders.schemas import (
    CREATION_STATES,
    INVOICE_STATUSES,
    ORDER_STATUSES,
    PAYMENT_STATUSES,
    InvoiceLinesOut,
    InvoiceListOut,
    InvoiceOut,
    OrderCreate,
    OrderLinesOut,
    OrderListOut,
    OrderOut,
    OrderUpdate,
    invoice_line_out,
    invoice_out,
    order_line_out,
    order_out,
)
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, EmptyResponse, RequestModel

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
    external_customer_id: ExternalCustomerFilter = None,
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


def _order_response(session: Any, order: Order) -> OrderOut:
    totals = queries.billed_totals(session, [order.id])
    return order_out(order, *totals.get(order.id, (0, 0)))


def _locked_order(session: Any, organization_id: str, order_id: str) -> Order:
    """Return the organization's order with its row locked until the request's transaction ends."""
    order = queries.get_order(session, organization_id, order_id)
    locked = lock_order(session, order.id)
    assert locked is not None
    return locked


@orders_router.post("/orders/", status_code=201, response_model=OrderOut)
def create_order(body: OrderCreate, principal: CurrentPrincipal, session: DbSession) -> OrderOut:
    """Create a sales-led order for a customer, as a draft or (creationState active) activated.

    Each line sells a product at its default plan, or at its own pricing when it has none.
    A line's `attributes` replace the pricing of the product's pricing lines with the same
    name. Amounts are in minor units. `billingAnchor` (1-31) is the day of the month periods
    start on, by default the start date's; `subscriptionTerms` counts billing periods and sets
    `endDate` when none is sent. An order activated with a start date in the past is billed
    from its start: see `POST /orders/{id}/activate`.
    """
    with customer_time(session, body.customer_id) as now:
        order = service.create_sales_order(session, principal.organization_id, body, now)
    return _order_response(session, order)


@orders_router.get("/orders/{order_id}", response_model=OrderOut)
def get_order(order_id: str, principal: CurrentPrincipal, session: ReadSession) -> OrderOut:
    order = queries.get_order(session, principal.organization_id, order_id)
    return _order_response(session, order)


@orders_router.put("/orders/{order_id}", response_model=OrderOut)
def update_order(order_id: str, body: OrderUpdate, principal: CurrentPrincipal, session: DbSession) -> OrderOut:
    """Update an order. startDate, billingAnchor and subscriptionTerms change only on drafts;
    endDate on an active order schedules its end. creationState active activates a draft."""
    order = _locked_order(session, principal.organization_id, order_id)
    with customer_time(session, order.customer_id) as now:
        service.update_order(session, order, body, now)
    return _order_response(session, order)


@orders_router.delete("/orders/{order_id}", response_model=EmptyResponse)
def delete_order(order_id: str, principal: CurrentPrincipal, session: DbSession) -> EmptyResponse:
    """Delete a draft order. Active and ended orders cannot be deleted; cancel them instead."""
    order = _locked_order(session, principal.organization_id, order_id)
    service.delete_order(session, order)
    return EmptyResponse()


@orders_router.post("/orders/{order_id}/activate", response_model=OrderOut)
def activate_order(order_id: str, principal: CurrentPrincipal, session: DbSession) -> OrderOut:
    """Activate a draft order. No request body.

    An order whose start date is in the past is backdated. Every billing period since the
    start is started in order with its credits, each allocation as of its own start. The
    invoices of elapsed periods stay drafts and the current one is posted. The customer's
    unrated signals for the order's products since the start date are then rated against the
    new grants in time order. on_payment credits wait until their invoice is paid.
    """
    order = _locked_order(session, principal.organization_id, order_id)
    with customer_time(session, order.customer_id) as now:
        service.activate_order(session, order, now)
    return _order_response(session, order)


@orders_router.post("/orders/{order_id}/cancel", response_model=OrderOut)
def cancel_order(order_id: str, principal: CurrentPrincipal, session: DbSession) -> OrderOut:
    """End an active order when its current billing period ends. Not part of the Paid API.

    Nothing is refunded; granted credits stay usable until they expire. Setting `endDate`
    again (or to null) with `PUT /orders/{id}` before then undoes the cancellation.
    """
    order = _locked_order(session, principal.organization_id, order_id)
    with customer_time(session, order.customer_id) as now:
        service.cancel_order(session, order, now)
    return _order_response(session, order)


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
    external_customer_id: ExternalCustomerFilter = None,
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


class InvoiceUpdate(RequestModel):
    metadata: dict[str, Any] | None = None


@invoices_router.put("/invoices/{invoice_id}", response_model=InvoiceOut)
def update_invoice(invoice_id: str, body: InvoiceUpdate, principal: CurrentPrincipal, session: DbSession) -> InvoiceOut:
    """Replace an invoice's metadata, the only field clients may change."""
    invoice = queries.get_invoice(session, principal.organization_id, invoice_id)
    if "metadata" in body.provided():
        invoice.metadata_ = body.metadata
        invoice.updated_at = clock.now()
        session.flush()
    return invoice_out(invoice)


@invoices_router.post("/invoices/{invoice_id}/post", response_model=InvoiceOut)
def post_invoice(invoice_id: str, principal: CurrentPrincipal, session: DbSession) -> InvoiceOut:
    """Post a draft invoice, such as an elapsed period's after backdated activation, and grant
    its on_invoice_posted credits. Not part of the Paid API."""
    invoice = queries.get_invoice(session, principal.organization_id, invoice_id)
    if invoice.status != "draft":
        raise bad_request("id", f"only a draft invoice can be posted; this one is {invoice.status}", invoice.id)
    order = _locked_order(session, principal.organization_id, invoice.order_id) if invoice.order_id else None
    with customer_time(session, invoice.customer_id) as now:
        billing_invoices.post_invoice(session, invoice, now)
        if order is not None and order.status == "active" and invoice.period_number is not None:
            allocate_due(session, order, invoice.period_number, now)
    return invoice_out(invoice)


@invoices_router.post("/invoices/{invoice_id}/mark-paid", response_model=InvoiceOut)
def mark_invoice_paid(invoice_id: str, principal: CurrentPrincipal, session: DbSession) -> InvoiceOut:
    """Record that a posted invoice was paid outside tallystick (such as by bank transfer), and
    grant its on_payment credits. Not part of the Paid API."""
    invoice = queries.get_invoice(session, principal.organization_id, invoice_id)
    if invoice.status != "posted":
        raise bad_request("id", f"only a posted invoice can be paid; this one is {invoice.status}", invoice.id)
    if invoice.payment_status == "paid":
        return invoice_out(invoice)
    if invoice.order_id is None:
        raise bad_request("id", "only invoices of orders can be marked paid", invoice.id)
    order = _locked_order(session, principal.organization_id, invoice.order_id)
    # Read again under the order's lock: a renewal charge may have been stored meanwhile.
    session.refresh(invoice)
    if invoice.payment_status == "paid":
        return invoice_out(invoice)
    with customer_time(session, invoice.customer_id) as now:
        if charge_in_progress(invoice, now):
            raise ApiError(
                409,
                "payment_in_progress",
                "A charge of this invoice to the saved payment method is in progress; read the invoice "
                "again in a few minutes before marking it paid.",
            )
        billing_invoices.record_payment(
            session,
            invoice=invoice,
            order=order,
            provider="manual",
            provider_payment_id=f"manual_{invoice.id}",
            payment_method=None,
            paid_at=now,
        )
    return invoice_out(invoice)


@invoices_router.get("/invoices/{invoice_id}/lines", response_model=InvoiceLinesOut)
def get_invoice_lines(
    invoice_id: str, principal: CurrentPrincipal, session: ReadSession, page: Page
) -> InvoiceLinesOut:
    invoice = queries.get_invoice(session, principal.organization_id, invoice_id)
    rows, pagination = paginate(session, queries.invoice_lines_statement(invoice), page)
    return InvoiceLinesOut.model_validate(
        {"data": [invoice_line_out(line, invoice) for line in rows], "pagination": pagination}
    )
