"""Checkout rules: creation, listing, status, expiry and archiving.

Payment and completion are in `completion`. Functions here only flush; the caller owns the
transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from tallystick.server import events
from tallystick.server.checkout.offers import Offer, OfferError, load_offers
from tallystick.server.checkout.providers import provider_for_organization
from tallystick.server.checkout.schemas import (
    CheckoutCreate,
    PlanRefOut,
    SelectedProductOut,
    checkout_out,
)
from tallystick.server.customers.service import find_customer, find_customer_by_external_id
from tallystick.server.errors import bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models import Checkout, Order, Plan
from tallystick.server.orders.terms import MissingPriceError, TermsError, price_terms, terms_currencies

log = logging.getLogger(__name__)

CHECKOUT_CREATED = "billing-checkout-created"
CHECKOUT_COMPLETED = "billing-checkout-completed"
CHECKOUT_EXPIRED = "billing-checkout-expired"

# How long a checkout stays payable when the client sends no `expiresAt`.
DEFAULT_LIFETIME = timedelta(hours=24)


def create_checkout(
    session: Session, organization_id: str, body: CheckoutCreate, *, public_root: str, now: datetime
) -> Checkout:
    """Validate the request against the catalog and create an active checkout.

    `public_root` is the server's root URL as buyers reach it; the page lives under it.
    """
    customer_id = _check_customer(session, organization_id, body)
    expires_at = body.expires_at if body.expires_at is not None else now + DEFAULT_LIFETIME
    if expires_at.tzinfo is None:
        raise bad_request("expiresAt", "must carry a timezone offset, such as Z", expires_at)
    if expires_at <= now:
        raise bad_request("expiresAt", "must be in the future", expires_at)

    products = [item.model_dump(exclude_unset=True) for item in body.products]
    try:
        offers = load_offers(session, organization_id, products, require_active=True)
    except OfferError as error:
        raise bad_request(error.field, error.message, error.value, code=error.code) from None
    currency = body.currency.upper() if body.currency else None
    allowed = _allowed_currencies(offers, currency)
    _check_existing_orders(session, organization_id, customer_id, offers, allowed)

    checkout_id = new_id("checkout")
    checkout = Checkout(
        id=checkout_id,
        organization_id=organization_id,
        status="active",
        url=f"{public_root.rstrip('/')}/checkout/{checkout_id}",
        products=products,
        customer_id=customer_id,
        external_customer_id=body.external_customer_id,
        success_url=body.success_url,
        cancel_url=body.cancel_url,
        expires_at=expires_at,
        metadata_=body.metadata,
        collect_address=True if body.collect_address is None else body.collect_address,
        collect_phone=bool(body.collect_phone),
        single_use=True if body.single_use is None else body.single_use,
        currency=currency,
        allowed_currencies=allowed,
        custom_cards=(
            [card.model_dump(by_alias=True, exclude_none=True) for card in body.custom_cards]
            if body.custom_cards is not None
            else None
        ),
        payment_provider=provider_for_organization(session, organization_id),
        created_at=now,
        updated_at=now,
    )
    session.add(checkout)
    session.flush()

    events.record_event(session, organization_id, CHECKOUT_CREATED, checkout_payload(session, checkout, now))
    log.info("checkout.created", extra={"organization_id": organization_id, "checkout_id": checkout.id})
    return checkout


def _check_customer(session: Session, organization_id: str, body: CheckoutCreate) -> str | None:
    """Return the id of the checkout's customer when it exists already."""
    if body.customer_id is not None and body.external_customer_id is not None:
        raise bad_request("customerId", "send either customerId or externalCustomerId, not both", body.customer_id)
    if body.customer_id is not None:
        customer = find_customer(session, organization_id, body.customer_id)
        if customer is None:
            raise bad_request("customerId", "is not a customer of this organization", body.customer_id)
        return customer.id
    if body.external_customer_id is not None:
        # A new external id is fine: the customer is created when the checkout completes.
        customer = find_customer_by_external_id(session, organization_id, body.external_customer_id)
        return customer.id if customer is not None else None
    return None


def _allowed_currencies(offers: list[Offer], currency: str | None) -> list[str]:
    """Return the currencies the checkout can be paid in.

    A locked `currency` must price every offer. Otherwise each currency in which at least one
    offer has a price is allowed, and the page shows the offers priced in the buyer's currency.
    """
    candidates = [currency] if currency is not None else sorted(
        {code for offer in offers for code in terms_currencies(offer.product, offer.plan)}
    )
    allowed = []
    for code in candidates:
        priced = False
        for offer in offers:
            try:
                price_terms(offer.product, offer.plan, code)
            except MissingPriceError as error:
                if currency is not None:
                    raise bad_request(offer.field, f"cannot be sold: {error}", offer.key) from None
                continue
            except TermsError as error:
                raise bad_request(offer.field, f"cannot be sold: {error}", offer.key) from None
            priced = True
        if priced:
            allowed.append(code)
    if not allowed:
        raise bad_request("products", "none of the offered plans has a price to charge", None)
    return allowed


def _check_existing_orders(
    session: Session, organization_id: str, customer_id: str | None, offers: list[Offer], allowed: list[str]
) -> None:
    """Reject a checkout the customer could not pay in the currency of its active orders.

    A checkout for a product the customer already subscribes to is a plan change: completing
    it upgrades that order or schedules its downgrade (see `billing.changes`).
    """
    if customer_id is None:
        return
    currencies = set(
        session.scalars(
            select(Order.currency).where(
                Order.organization_id == organization_id,
                Order.customer_id == customer_id,
                Order.status == "active",
            )
        )
    )
    if currencies and not currencies & set(allowed):
        raise bad_request(
            "currency",
            f"must match the currency of the customer's active orders ({', '.join(sorted(currencies))})",
            ", ".join(allowed),
        )


def effective_status(checkout: Checkout, now: datetime) -> str:
    """Return the checkout's status at `now`: an active checkout past its expiry is expired."""
    if checkout.status == "active" and checkout.expires_at <= now:
        return "expired"
    return checkout.status


def status_filter(status: str, now: datetime) -> Any:
    """Return the SQL condition for checkouts whose effective status is `status` at `now`."""
    if status == "active":
        return and_(Checkout.status == "active", Checkout.expires_at > now)
    if status == "expired":
        return or_(Checkout.status == "expired", and_(Checkout.status == "active", Checkout.expires_at <= now))
    return Checkout.status == status


def checkouts_statement(organization_id: str, status: str | None, now: datetime) -> Select[tuple[Checkout]]:
    statement = select(Checkout).where(Checkout.organization_id == organization_id)
    if status:
        statement = statement.where(status_filter(status, now))
    return statement.order_by(Checkout.created_at.desc(), Checkout.id.desc())


def get_checkout(session: Session, organization_id: str, checkout_id: str) -> Checkout:
    """Return the organization's checkout or raise the API's 404."""
    checkout = session.scalar(
        select(Checkout).where(Checkout.organization_id == organization_id, Checkout.id == checkout_id)
    )
    if checkout is None:
        raise not_found("Checkout", "id", checkout_id)
    return checkout


def find_checkout_for_page(session: Session, checkout_id: str) -> Checkout | None:
    """Return the checkout behind a hosted page URL. Its random id is what grants access."""
    return session.get(Checkout, checkout_id)


def lock_checkout(session: Session, checkout_id: str) -> Checkout | None:
    """Load the checkout and lock its row until the transaction ends.

    PostgreSQL takes a row lock (SELECT ... FOR UPDATE), so concurrent payments of one checkout
    run one after the other and the later one reads what the earlier one committed. SQLite
    renders no FOR UPDATE, but its writers already hold the database write lock.
    """
    statement = (
        select(Checkout)
        .where(Checkout.id == checkout_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(statement).one_or_none()


def archive_checkout(session: Session, checkout: Checkout, now: datetime) -> None:
    """Archive an active or expired checkout; a completed one keeps its status and order."""
    if checkout.status == "completed" or checkout.status == "archived":
        return
    checkout.status = "archived"
    checkout.archived_at = now
    checkout.updated_at = now
    session.flush()
    log.info(
        "checkout.archived",
        extra={"organization_id": checkout.organization_id, "checkout_id": checkout.id},
    )


def mark_expired(session: Session, checkout: Checkout, now: datetime) -> None:
    """Store the expiry of an active checkout past its `expires_at`, and record its event once."""
    if checkout.status != "active" or checkout.expires_at > now:
        return
    checkout.status = "expired"
    checkout.expired_at = now
    checkout.updated_at = now
    session.flush()
    events.record_event(
        session, checkout.organization_id, CHECKOUT_EXPIRED, checkout_payload(session, checkout, now)
    )
    log.info(
        "checkout.expired",
        extra={"organization_id": checkout.organization_id, "checkout_id": checkout.id},
    )


def expire_due_checkouts(session: Session, now: datetime, *, limit: int = 500) -> int:
    """Store the expiry of up to `limit` active checkouts past their `expires_at`; return how many.

    The billing task of every server process runs this each poll, so the billing-checkout-
    expired event goes out soon after the expiry. Reads report the checkout as expired from
    its `expires_at` either way.
    """
    due = list(
        session.scalars(
            select(Checkout)
            .where(Checkout.status == "active", Checkout.expires_at <= now)
            .order_by(Checkout.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for checkout in due:
        mark_expired(session, checkout, now)
    return len(due)


def selected_product(session: Session, checkout: Checkout) -> SelectedProductOut | None:
    """Return what the buyer picked, once the checkout has an order."""
    if checkout.selected_product_id is None:
        return None
    plan_ref = None
    if checkout.selected_plan_id is not None:
        plan = session.get(Plan, checkout.selected_plan_id)
        plan_ref = PlanRefOut(
            id=checkout.selected_plan_id,
            name=plan.name if plan is not None else None,
            external_id=plan.external_id if plan is not None else None,
        )
    return SelectedProductOut(id=checkout.selected_product_id, plan=plan_ref)


def checkout_payload(session: Session, checkout: Checkout, now: datetime) -> dict[str, Any]:
    """Return the checkout as checkout webhook events send it, under the envelope's data.checkout."""
    out = checkout_out(checkout, effective_status(checkout, now), selected_product(session, checkout))
    return out.model_dump(mode="json", by_alias=True)
