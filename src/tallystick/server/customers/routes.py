"""HTTP routes of customers: CRUD by id and by external id, and customer state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.billing.customer_state import open_checkout_links, state_orders
from tallystick.server.billing.renewals import refresh_for_read
from tallystick.server.customers import service
from tallystick.server.customers.schemas import (
    CREATION_STATES,
    CUSTOMER_STATUSES,
    BillingAddressOut,
    CustomerCreate,
    CustomerListOut,
    CustomerOut,
    CustomerStateCreditBalance,
    CustomerStateCredits,
    CustomerStateCustomer,
    CustomerStateOut,
    CustomerStateSeats,
    CustomerUpdate,
)
from tallystick.server.db import Store
from tallystick.server.deps import (
    CurrentPrincipal,
    CurrentStore,
    DbSession,
    ReadSession,
    authenticate,
)
from tallystick.server.filters import parse_choice_filter, parse_date_filter
from tallystick.server.ledger.service import customer_balances
from tallystick.server.models import Customer, TestClockCustomer
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, EmptyResponse

router = Router(tags=["customers"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)


def customer_out(customer: Customer, test_clock_id: str | None = None) -> CustomerOut:
    address = customer.billing_address
    return CustomerOut(
        id=customer.id,
        name=customer.name,
        legal_name=customer.legal_name,
        email=customer.email or "",
        phone=customer.phone or "",
        website=customer.website or "",
        external_id=customer.external_id,
        billing_address=BillingAddressOut.model_validate(address) if address else None,
        creation_state=customer.creation_state,
        status=customer.status,
        churn_date=customer.churn_date,
        vat_number=customer.vat_number,
        metadata=customer.metadata_,
        default_currency=customer.default_currency,
        connections={},
        created_at=customer.created_at,
        updated_at=customer.updated_at,
        test_clock_id=test_clock_id,
    )


def _customer_with_clock(session: Session, customer: Customer) -> CustomerOut:
    return customer_out(customer, _test_clock_ids(session, [customer.id]).get(customer.id))


def _test_clock_ids(session: Session, customer_ids: list[str]) -> dict[str, str]:
    """Return the test clock id of each of the customers that live on one."""
    if not customer_ids:
        return {}
    rows = session.execute(
        select(TestClockCustomer.customer_id, TestClockCustomer.test_clock_id).where(
            TestClockCustomer.customer_id.in_(customer_ids)
        )
    )
    return {customer_id: clock_id for customer_id, clock_id in rows}


@router.post("/customers/", status_code=201, response_model=CustomerOut)
def create_customer(body: CustomerCreate, principal: CurrentPrincipal, session: DbSession) -> CustomerOut:
    """Create a customer. `externalId` is unique among the organization's customers."""
    return _customer_with_clock(session, service.create_customer(session, principal.organization_id, body))


@router.get("/customers/", response_model=CustomerListOut)
def list_customers(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    name: Annotated[str | None, Query(description="Case-insensitive substring of the name.")] = None,
    status: Annotated[str | None, Query(description="active or churned.")] = None,
    creation_state: Annotated[str | None, Query(alias="creationState")] = None,
    created_at_from: Annotated[str | None, Query(alias="createdAtFrom")] = None,
    created_at_to: Annotated[str | None, Query(alias="createdAtTo")] = None,
    external_id: Annotated[str | None, Query(alias="externalId")] = None,
) -> CustomerListOut:
    """List customers, newest first."""
    statement = service.list_statement(
        principal.organization_id,
        name=name,
        status=parse_choice_filter("status", status, CUSTOMER_STATUSES),
        creation_state=parse_choice_filter("creationState", creation_state, CREATION_STATES),
        external_id=external_id,
        created_from=parse_date_filter("createdAtFrom", created_at_from),
        created_to=parse_date_filter("createdAtTo", created_at_to, end_of_day=True),
    )
    rows, pagination = paginate(session, statement, page)
    clock_ids = _test_clock_ids(session, [row.id for row in rows])
    return CustomerListOut.model_validate(
        {"data": [customer_out(row, clock_ids.get(row.id)) for row in rows], "pagination": pagination}
    )


# Routes with the literal "external" segment come before "{id}" routes, so that
# /customers/external/... is never read as a customer id.


@router.get("/customers/external/{external_id}", response_model=CustomerOut)
def get_customer_by_external_id(external_id: str, principal: CurrentPrincipal, session: ReadSession) -> CustomerOut:
    customer = service.get_customer_by_external_id(session, principal.organization_id, external_id)
    return _customer_with_clock(session, customer)


@router.put("/customers/external/{external_id}", response_model=CustomerOut)
def update_customer_by_external_id(
    external_id: str, body: CustomerUpdate, principal: CurrentPrincipal, session: DbSession
) -> CustomerOut:
    """Update a customer addressed by its current external id; `externalId` in the body renames it."""
    customer = service.get_customer_by_external_id(session, principal.organization_id, external_id)
    return _customer_with_clock(session, service.update_customer(session, customer, body))


@router.delete("/customers/external/{external_id}", response_model=EmptyResponse)
def delete_customer_by_external_id(external_id: str, principal: CurrentPrincipal, session: DbSession) -> EmptyResponse:
    customer = service.get_customer_by_external_id(session, principal.organization_id, external_id)
    service.delete_customer(session, customer)
    return EmptyResponse()


@router.get("/customers/external/{external_id}/state", response_model=CustomerStateOut)
def get_customer_state_by_external_id(
    external_id: str, principal: CurrentPrincipal, session: ReadSession, store: CurrentStore
) -> CustomerStateOut:
    customer = service.get_customer_by_external_id(session, principal.organization_id, external_id)
    return customer_state(store, session, customer)


@router.get("/customers/{customer_id}", response_model=CustomerOut)
def get_customer(customer_id: str, principal: CurrentPrincipal, session: ReadSession) -> CustomerOut:
    customer = service.get_customer(session, principal.organization_id, customer_id)
    return _customer_with_clock(session, customer)


@router.put("/customers/{customer_id}", response_model=CustomerOut)
def update_customer(
    customer_id: str, body: CustomerUpdate, principal: CurrentPrincipal, session: DbSession
) -> CustomerOut:
    customer = service.get_customer(session, principal.organization_id, customer_id)
    return _customer_with_clock(session, service.update_customer(session, customer, body))


@router.delete("/customers/{customer_id}", response_model=EmptyResponse)
def delete_customer(customer_id: str, principal: CurrentPrincipal, session: DbSession) -> EmptyResponse:
    """Delete a customer. Its ledger history is kept; its external id can be reused."""
    customer = service.get_customer(session, principal.organization_id, customer_id)
    service.delete_customer(session, customer)
    return EmptyResponse()


@router.get("/customers/{customer_id}/state", response_model=CustomerStateOut)
def get_customer_state(
    customer_id: str, principal: CurrentPrincipal, session: ReadSession, store: CurrentStore
) -> CustomerStateOut:
    """Return the customer's orders, seats, open checkout links and credit balances."""
    customer = service.get_customer(session, principal.organization_id, customer_id)
    return customer_state(store, session, customer)


def customer_state(store: Store, session: Session, customer: Customer) -> CustomerStateOut:
    # Billing periods that started since the last renewal are granted first, in a transaction
    # of their own, so the state never shows a stale period. The renewal's charge is made when
    # that transaction commits, so on_payment credits it grants are in the state too.
    now = refresh_for_read(store, session, customer.organization_id, customer.id)
    balances = [
        CustomerStateCreditBalance(
            credits_currency_id=currency.id,
            currency_name=currency.name,
            currency_key=currency.key,
            balance=float(view.available),
        )
        for currency, view in customer_balances(session, customer.organization_id, customer.id, now)
    ]
    address = customer.billing_address
    return CustomerStateOut(
        customer=CustomerStateCustomer(
            id=customer.id,
            name=customer.name,
            external_id=customer.external_id,
            billing_address=BillingAddressOut.model_validate(address) if address else None,
        ),
        default_currency=customer.default_currency,
        orders=state_orders(session, customer),
        seats=CustomerStateSeats(),
        checkout_links=open_checkout_links(session, customer, now),
        credits=CustomerStateCredits(balances=balances),
        timestamp=now,
    )
