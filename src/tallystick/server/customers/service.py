"""Customer rules: creation, lookup by id or external id, updates and deletion."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.customers.schemas import CustomerCreate, CustomerUpdate, email_problem
from tallystick.server.errors import bad_request, conflict_as_bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models import Customer

log = logging.getLogger(__name__)


def live_customers(organization_id: str) -> Select[tuple[Customer]]:
    """Select the organization's customers that are not deleted."""
    return select(Customer).where(
        Customer.organization_id == organization_id, Customer.deleted_at.is_(None)
    )


def live_customer_id_by_external_id(organization_id: str, external_id: str) -> Select[tuple[str]]:
    """Select the id of the live customer with `external_id`, the one the API resolves it to.

    List filters by external id use it because a deleted customer's external id may belong to a
    new customer now. A deleted customer's rows stay readable by its customer id.
    """
    return select(Customer.id).where(
        Customer.organization_id == organization_id,
        Customer.external_id == external_id,
        Customer.deleted_at.is_(None),
    )


# Built once, with bound parameters, since every request by customer runs one of them.
_LIVE_CUSTOMER = select(Customer).where(
    Customer.organization_id == bindparam("organization_id"), Customer.deleted_at.is_(None)
)
_CUSTOMER_BY_ID = _LIVE_CUSTOMER.where(Customer.id == bindparam("customer_id"))
_CUSTOMER_BY_EXTERNAL_ID = _LIVE_CUSTOMER.where(Customer.external_id == bindparam("external_id"))


def find_customer(session: Session, organization_id: str, customer_id: str) -> Customer | None:
    return session.scalar(_CUSTOMER_BY_ID, {"organization_id": organization_id, "customer_id": customer_id})


def find_customer_by_external_id(
    session: Session, organization_id: str, external_id: str
) -> Customer | None:
    return session.scalar(_CUSTOMER_BY_EXTERNAL_ID, {"organization_id": organization_id, "external_id": external_id})


def get_customer(session: Session, organization_id: str, customer_id: str) -> Customer:
    """Return the customer or raise the API's 404."""
    customer = find_customer(session, organization_id, customer_id)
    if customer is None:
        raise not_found("Customer", "id", customer_id)
    return customer


def get_customer_by_external_id(session: Session, organization_id: str, external_id: str) -> Customer:
    customer = find_customer_by_external_id(session, organization_id, external_id)
    if customer is None:
        raise not_found("Customer", "externalId", external_id)
    return customer


def get_or_create_by_external_id(
    session: Session, organization_id: str, external_id: str
) -> tuple[Customer, bool]:
    """Return the customer with `external_id`, creating it (named after the id) if missing.

    A concurrent request may create the same customer first; the savepoint lets this one fall
    back to reading that row instead of failing the whole transaction.
    """
    customer = find_customer_by_external_id(session, organization_id, external_id)
    if customer is not None:
        return customer, False
    customer = Customer(
        id=new_id("customer"),
        organization_id=organization_id,
        external_id=external_id,
        name=external_id,
        creation_state="active",
    )
    try:
        with session.begin_nested():
            session.add(customer)
            session.flush()
    except IntegrityError:
        existing = find_customer_by_external_id(session, organization_id, external_id)
        if existing is None:
            raise
        return existing, False
    log.info(
        "customer.created",
        extra={"organization_id": organization_id, "customer_id": customer.id, "source": "signal"},
    )
    return customer, True


def create_customer(session: Session, organization_id: str, body: CustomerCreate) -> Customer:
    if body.external_id is not None:
        _ensure_external_id_free(session, organization_id, body.external_id)
    customer = Customer(
        id=new_id("customer"),
        organization_id=organization_id,
        external_id=body.external_id,
        name=body.name,
        legal_name=body.legal_name,
        email=body.email,
        phone=body.phone,
        website=body.website,
        billing_address=_address(body),
        creation_state=body.creation_state or "active",
        vat_number=body.vat_number,
        metadata_=body.metadata,
        default_currency=(body.default_currency or "USD").upper(),
    )
    session.add(customer)
    session.flush()
    if body.test_clock_id is not None:
        _attach_test_clock(session, customer, body.test_clock_id)
    log.info("customer.created", extra={"organization_id": organization_id, "customer_id": customer.id})
    return customer


def update_customer(session: Session, customer: Customer, body: CustomerUpdate) -> Customer:
    """Apply the fields the client sent. A null clears optional fields; name cannot be cleared."""
    sent = body.provided()
    if "name" in sent and body.name is None:
        raise bad_request("name", "cannot be null")
    if "email" in sent and body.email != customer.email:
        problem = email_problem(body.email)
        if problem is not None:
            raise bad_request("email", problem, body.email)
    if "external_id" in sent and body.external_id != customer.external_id:
        if body.external_id is not None:
            _ensure_external_id_free(session, customer.organization_id, body.external_id)
        customer.external_id = body.external_id

    simple_fields = ("name", "legal_name", "email", "phone", "website", "vat_number", "churn_date")
    for field in simple_fields:
        if field in sent:
            setattr(customer, field, getattr(body, field))
    if "creation_state" in sent and body.creation_state is not None:
        customer.creation_state = body.creation_state
    if "metadata" in sent:
        customer.metadata_ = body.metadata
    if "billing_address" in sent:
        customer.billing_address = _address(body)
    if "churn_date" in sent:
        customer.status = "churned" if body.churn_date is not None else "active"
    if "test_clock_id" in sent:
        _attach_test_clock(session, customer, body.test_clock_id)
    customer.updated_at = clock.now()
    session.flush()
    return customer


def _attach_test_clock(session: Session, customer: Customer, clock_id: str | None) -> None:
    # Imported here: billing depends on this module.
    from tallystick.server.billing.test_clocks import attach_customer

    attach_customer(session, customer.organization_id, customer.id, clock_id)


def delete_customer(session: Session, customer: Customer) -> None:
    """Mark the customer deleted. Its ledger history stays; its external id becomes free."""
    customer.deleted_at = clock.now()
    session.flush()
    log.info(
        "customer.deleted",
        extra={"organization_id": customer.organization_id, "customer_id": customer.id},
    )


def list_statement(
    organization_id: str,
    *,
    name: str | None = None,
    status: str | None = None,
    creation_state: str | None = None,
    external_id: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> Select[tuple[Customer]]:
    statement = live_customers(organization_id)

    if name:
        statement = statement.where(Customer.name.ilike(f"%{_escape_like(name)}%", escape="\\"))
    if status:
        statement = statement.where(Customer.status == status)
    if creation_state:
        statement = statement.where(Customer.creation_state == creation_state)
    if external_id:
        statement = statement.where(Customer.external_id == external_id)
    if created_from:
        statement = statement.where(Customer.created_at >= created_from)
    if created_to:
        statement = statement.where(Customer.created_at <= created_to)

    return statement.order_by(Customer.created_at.desc(), Customer.id.desc())


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _ensure_external_id_free(session: Session, organization_id: str, external_id: str) -> None:
    if find_customer_by_external_id(session, organization_id, external_id) is not None:
        raise conflict_as_bad_request("externalId", external_id, "a customer with this externalId")


def _address(body: CustomerCreate | CustomerUpdate) -> dict[str, Any] | None:
    if body.billing_address is None:
        return None
    return body.billing_address.model_dump(by_alias=True, exclude_none=True)
