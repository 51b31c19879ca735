"""Paying a checkout and completing it: customer, order, invoice, payment and credits.

Completion happens exactly once per payment, in the caller's transaction: the checkout row is
locked first (see `service.lock_checkout`), then the payment's idempotency key and provider
payment id are looked up, and only then is anything written. A second submission of the same
form, or a second report of the same payment from the provider, finds the first one's payment
and returns its order. A declined card writes only a billing-payment-failed event.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import events
from tallystick.server.billing import changes
from tallystick.server.billing import invoices as billing_invoices
from tallystick.server.billing.renewals import lock_order
from tallystick.server.billing.test_clocks import customer_time
from tallystick.server.checkout import service
from tallystick.server.checkout.offers import Offer, OfferError, load_offers
from tallystick.server.checkout.providers import (
    PaymentDeclined,
    PaymentProvider,
    PaymentRedirect,
    PaymentRequest,
    PaymentSucceeded,
    PaymentUnanswered,
    SavedMethod,
)
from tallystick.server.checkout.schemas import CHECKOUT_ID_PLACEHOLDER
from tallystick.server.customers.schemas import BillingAddress, CustomerCreate
from tallystick.server.customers.service import (
    create_customer,
    find_customer,
    find_customer_by_external_id,
    get_or_create_by_external_id,
)
from tallystick.server.ids import new_id
from tallystick.server.models import Checkout, Customer, Order, Payment, PaymentMethod
from tallystick.server.orders import service as orders
from tallystick.server.orders.terms import PlanTerms, TermsError, price_terms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Buyer:
    """Details the buyer typed on the page; a field is None when the page did not ask for it."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: dict[str, str] | None = None  # wire billing address keys, such as line1, zipCode


@dataclass(frozen=True)
class Completed:
    checkout: Checkout
    order: Order
    # True when an earlier submission or provider report had completed this payment already.
    repeated: bool


@dataclass(frozen=True)
class Declined:
    checkout: Checkout
    message: str


@dataclass(frozen=True)
class NotPayable:
    """The checkout is expired, archived or (single-use) completed by another payment."""

    checkout: Checkout
    status: str


@dataclass(frozen=True)
class InvalidChoice:
    """The posted plan or currency is not one the checkout offers."""

    checkout: Checkout
    message: str


@dataclass(frozen=True)
class Redirected:
    """The buyer pays on the provider's page at `url`; its webhook completes the checkout."""

    checkout: Checkout
    url: str


PayResult = Completed | Declined | NotPayable | InvalidChoice | Redirected


def form_idempotency_key(checkout_id: str, attempt: str) -> str:
    """Return the payment idempotency key of one rendering of the checkout's payment form."""
    return f"checkout:{checkout_id}:{attempt}"


def begin_payment(
    session: Session, checkout_id: str, attempt: str, now: datetime
) -> Checkout | Completed | NotPayable | None:
    """Lock the checkout for one submission of its form and decide whether it may be paid.

    Returns the locked checkout when payment may go ahead, the earlier completion when this
    same form (`attempt`) was submitted before, NotPayable when the checkout is no longer
    active, or None when it does not exist.
    """
    checkout = service.lock_checkout(session, checkout_id)
    if checkout is None:
        return None
    earlier = _find_payment(
        session, checkout.organization_id, idempotency_key=form_idempotency_key(checkout.id, attempt)
    )
    if earlier is not None:
        return _repeated(session, checkout, earlier)
    return _check_payable(session, checkout, now) or checkout


def pay_checkout(
    session: Session,
    *,
    checkout: Checkout,
    attempt: str,
    offer_key: str,
    currency: str,
    buyer: Buyer,
    provider: PaymentProvider,
    payment_details: Any,
    now: datetime,
) -> PayResult:
    """Charge the buyer through `provider` and complete the checkout.

    `checkout` must come from `begin_payment` in this transaction, so its row is locked.
    """
    choice = _choose(session, checkout, offer_key, currency)
    if isinstance(choice, InvalidChoice):
        return choice
    offer, terms = choice

    # Buying another plan of a product the customer subscribes to changes that order: an
    # upgrade costs the prorated difference now, a downgrade nothing until the period ends.
    amount = terms.first_invoice_amount
    existing = existing_order(session, checkout, offer.product.id)
    if existing is not None:
        try:
            amount = changes.quote_change(existing, terms, now).amount_due
        except changes.ChangeError as error:
            return InvalidChoice(checkout, str(error))

    idempotency_key = form_idempotency_key(checkout.id, attempt)
    request = PaymentRequest(
        organization_id=checkout.organization_id,
        checkout_id=checkout.id,
        amount=amount,
        currency=terms.currency,
        description=terms.name,
        idempotency_key=idempotency_key,
        metadata=_payment_metadata(checkout, attempt, offer_key, currency, buyer),
        success_url=checkout.success_url.replace(CHECKOUT_ID_PLACEHOLDER, checkout.id),
        cancel_url=checkout.url,
        customer_email=buyer.email,
    )
    if existing is not None and amount == 0:
        outcome: Any = PaymentSucceeded(provider=provider.name, provider_payment_id=f"nopay_{idempotency_key}", method=None)
    else:
        outcome = provider.collect(request, payment_details)
    if isinstance(outcome, PaymentRedirect):
        log.info("checkout.redirected", extra={"checkout_id": checkout.id, "provider": provider.name})
        return Redirected(checkout=checkout, url=outcome.url)
    if isinstance(outcome, PaymentUnanswered):
        log.warning("checkout.provider_unanswered", extra={"checkout_id": checkout.id, "provider": provider.name})
        return Declined(checkout=checkout, message="The payment service did not respond. Nothing was charged; try again.")
    if isinstance(outcome, PaymentDeclined):
        _record_decline(session, checkout, request, outcome, provider.name)
        return Declined(checkout=checkout, message=outcome.message)

    return complete_checkout(
        session,
        checkout=checkout,
        offer=offer,
        terms=terms,
        buyer=buyer,
        payment=outcome,
        idempotency_key=idempotency_key,
        now=now,
    )


def complete_checkout(
    session: Session,
    *,
    checkout: Checkout,
    offer: Offer,
    terms: PlanTerms,
    buyer: Buyer,
    payment: PaymentSucceeded,
    idempotency_key: str | None,
    now: datetime,
) -> Completed | NotPayable:
    """Create everything a successful payment buys. The checkout row must be locked already.

    A provider that reports the same payment twice gets the first completion back.
    """
    earlier = _find_payment(
        session,
        checkout.organization_id,
        provider=payment.provider,
        provider_payment_id=payment.provider_payment_id,
    )
    if earlier is not None:
        return _repeated(session, checkout, earlier)
    blocked = _check_payable(session, checkout, now)
    if blocked is not None:
        # NOTE: money was collected for a checkout that can no longer complete; a provider
        # that confirms payments asynchronously must refund here.
        return blocked

    customer = _resolve_customer(session, checkout, buyer, now)
    # A customer on a test clock buys at the clock's time.
    with customer_time(session, customer.id) as customer_now:
        fulfilled = _fulfil(session, checkout, offer, terms, customer, payment, idempotency_key, customer_now)
    if isinstance(fulfilled, NotPayable):
        return fulfilled
    order = fulfilled

    checkout.order_id = order.id
    checkout.selected_product_id = offer.product.id
    checkout.selected_plan_id = offer.plan.id if offer.plan is not None else None
    checkout.completed_at = now
    checkout.updated_at = now
    if checkout.single_use:
        checkout.status = "completed"
        checkout.customer_id = customer.id
    # A reusable checkout keeps no customer: each anonymous buyer becomes a customer of their own.
    session.flush()

    events.record_event(
        session,
        checkout.organization_id,
        service.CHECKOUT_COMPLETED,
        service.checkout_payload(session, checkout, now),
    )
    log.info(
        "checkout.completed",
        extra={
            "organization_id": checkout.organization_id,
            "checkout_id": checkout.id,
            "order_id": order.id,
            "customer_id": customer.id,
        },
    )
    return Completed(checkout=checkout, order=order, repeated=False)


def _fulfil(
    session: Session,
    checkout: Checkout,
    offer: Offer,
    terms: PlanTerms,
    customer: Customer,
    payment: PaymentSucceeded,
    idempotency_key: str | None,
    now: datetime,
) -> Order | NotPayable:
    """Create the order (or change the customer's order for the product) and record the payment."""
    method = _save_payment_method(session, customer, payment.provider, payment.method)
    existing = existing_order(session, checkout, offer.product.id, customer_id=customer.id)
    if existing is not None:
        order = lock_order(session, existing.id) or existing
        try:
            changes.change_plan(
                session,
                order,
                terms,
                now,
                payment=changes.ChangePayment(
                    provider=payment.provider,
                    provider_payment_id=payment.provider_payment_id,
                    method=method,
                    checkout_id=checkout.id,
                    idempotency_key=idempotency_key,
                ),
            )
        except changes.ChangeError as error:
            # NOTE: a provider that confirms payments later has taken the money by now; the
            # operator must refund it. Pages check the same rules before charging.
            log.error("checkout.change_rejected", extra={"checkout_id": checkout.id, "reason": str(error)})
            return NotPayable(checkout=checkout, status=service.effective_status(checkout, now))
        if method is not None:
            order.payment_method_id = method.id
        return order

    order = orders.create_order(session, customer=customer, terms=terms, start=now, checkout_id=checkout.id)
    # The order has no payment method while it activates, so the first invoice is not charged
    # again: the buyer has just paid it here.
    invoice = orders.activate_order(session, order, now)
    assert invoice is not None  # an order starting now has a first period
    billing_invoices.record_payment(
        session,
        invoice=invoice,
        order=order,
        provider=payment.provider,
        provider_payment_id=payment.provider_payment_id,
        payment_method=method,
        paid_at=now,
        checkout_id=checkout.id,
        idempotency_key=idempotency_key,
    )
    order.payment_method_id = method.id if method is not None else None
    return order


def complete_provider_payment(
    session: Session,
    *,
    organization_id: str,
    checkout_id: str,
    attempt: str,
    offer_key: str,
    currency: str,
    buyer: Buyer,
    payment: PaymentSucceeded,
    now: datetime,
) -> PayResult | None:
    """Complete a checkout from a provider's later report of a payment (its webhook).

    Locks the checkout first, like a form submission. Returns None for an unknown checkout and
    for a checkout of another organization than the one whose provider account reported the
    payment: a tenant can sign events for its own account, so the event's checkout id is not
    trusted on its own.
    """
    checkout = service.lock_checkout(session, checkout_id)
    if checkout is None or checkout.organization_id != organization_id:
        return None
    choice = _choose(session, checkout, offer_key, currency)
    if isinstance(choice, InvalidChoice):
        return choice
    offer, terms = choice
    return complete_checkout(
        session,
        checkout=checkout,
        offer=offer,
        terms=terms,
        buyer=buyer,
        payment=payment,
        idempotency_key=form_idempotency_key(checkout.id, attempt),
        now=now,
    )


def existing_order(
    session: Session, checkout: Checkout, product_id: str, *, customer_id: str | None = None
) -> Order | None:
    """Return the active order of the checkout's customer for `product_id`, if there is one."""
    if customer_id is None:
        customer_id = checkout.customer_id
        if customer_id is None and checkout.external_customer_id is not None:
            customer = find_customer_by_external_id(session, checkout.organization_id, checkout.external_customer_id)
            customer_id = customer.id if customer is not None else None
    if customer_id is None:
        return None
    return session.scalars(
        select(Order)
        .where(
            Order.organization_id == checkout.organization_id,
            Order.customer_id == customer_id,
            Order.product_id == product_id,
            Order.status == "active",
        )
        .order_by(Order.start_date.desc(), Order.id)
    ).first()


def _payment_metadata(checkout: Checkout, attempt: str, offer_key: str, currency: str, buyer: Buyer) -> dict[str, str]:
    """Return what a provider's webhook needs to complete the checkout later, as strings."""
    metadata = {
        "tallystick_checkout_id": checkout.id,
        "tallystick_attempt": attempt,
        "tallystick_offer": offer_key,
        "tallystick_currency": currency,
    }
    details = {"name": buyer.name, "email": buyer.email, "phone": buyer.phone}
    metadata.update({f"tallystick_buyer_{key}": value for key, value in details.items() if value})
    if buyer.address:
        metadata["tallystick_buyer_address"] = json.dumps(buyer.address, separators=(",", ":"))[:500]
    return metadata


def _choose(
    session: Session, checkout: Checkout, offer_key: str, currency: str
) -> tuple[Offer, PlanTerms] | InvalidChoice:
    if currency not in (checkout.allowed_currencies or []):
        return InvalidChoice(checkout, f"This checkout cannot be paid in {currency}.")
    try:
        offers = load_offers(session, checkout.organization_id, checkout.products, require_active=False)
    except OfferError as error:
        log.warning(
            "checkout.offer_unavailable",
            extra={"checkout_id": checkout.id, "field": error.field, "reason": error.message},
        )
        return InvalidChoice(checkout, "This checkout's products are no longer available.")
    offer = next((item for item in offers if item.key == offer_key), None)
    if offer is None:
        return InvalidChoice(checkout, "Choose one of the plans shown.")
    try:
        return offer, price_terms(offer.product, offer.plan, currency)
    except TermsError as error:
        log.warning("checkout.offer_unpriced", extra={"checkout_id": checkout.id, "reason": str(error)})
        return InvalidChoice(checkout, f"{offer.title} cannot be bought in {currency}.")


def _check_payable(session: Session, checkout: Checkout, now: datetime) -> NotPayable | None:
    status = service.effective_status(checkout, now)
    if status == "expired" and checkout.status == "active":
        service.mark_expired(session, checkout, now)
    if status != "active":
        return NotPayable(checkout=checkout, status=status)
    return None


def _find_payment(
    session: Session,
    organization_id: str,
    *,
    idempotency_key: str | None = None,
    provider: str | None = None,
    provider_payment_id: str | None = None,
) -> Payment | None:
    statement = select(Payment).where(Payment.organization_id == organization_id)
    if idempotency_key is not None:
        statement = statement.where(Payment.idempotency_key == idempotency_key)
    else:
        statement = statement.where(
            Payment.provider == provider, Payment.provider_payment_id == provider_payment_id
        )
    return session.scalars(statement).one_or_none()


def _repeated(session: Session, checkout: Checkout, payment: Payment) -> Completed:
    order = session.get(Order, payment.order_id)
    assert order is not None  # a checkout payment always belongs to an order
    log.info(
        "checkout.payment_repeated",
        extra={"organization_id": checkout.organization_id, "checkout_id": checkout.id, "payment_id": payment.id},
    )
    return Completed(checkout=checkout, order=order, repeated=True)


def _resolve_customer(session: Session, checkout: Checkout, buyer: Buyer, now: datetime) -> Customer:
    """Return the checkout's customer, creating it from the buyer's details when needed."""
    organization_id = checkout.organization_id
    customer: Customer | None = None
    if checkout.customer_id is not None:
        customer = find_customer(session, organization_id, checkout.customer_id)
    if customer is None and checkout.external_customer_id is not None:
        customer, _ = get_or_create_by_external_id(session, organization_id, checkout.external_customer_id)
    if customer is None:
        # An anonymous checkout (or one whose customer was deleted since): the page asked for
        # a name and an email. The email is set below as for a customer without one, so that
        # an address the payment provider took but the API's email check rejects cannot fail
        # a paid checkout.
        customer = create_customer(
            session,
            organization_id,
            CustomerCreate(name=buyer.name or buyer.email or "Checkout buyer"),
        )

    if buyer.phone:
        customer.phone = buyer.phone
    if buyer.address:
        customer.billing_address = BillingAddress.model_validate(buyer.address).model_dump(
            by_alias=True, exclude_none=True
        )
    if buyer.email and not customer.email:
        customer.email = buyer.email
    customer.updated_at = now
    session.flush()
    return customer


def _save_payment_method(
    session: Session, customer: Customer, provider: str, saved: SavedMethod | None
) -> PaymentMethod | None:
    """Keep the provider's reusable payment method, so renewals can charge it."""
    if saved is None:
        return None
    existing = session.scalars(
        select(PaymentMethod).where(
            PaymentMethod.organization_id == customer.organization_id,
            PaymentMethod.provider == provider,
            PaymentMethod.provider_method_id == saved.provider_method_id,
        )
    ).one_or_none()
    if existing is not None:
        return existing
    method = PaymentMethod(
        id=new_id("payment_method"),
        organization_id=customer.organization_id,
        customer_id=customer.id,
        provider=provider,
        provider_method_id=saved.provider_method_id,
        provider_customer_id=saved.provider_customer_id,
        type="card",
        brand=saved.brand,
        last4=saved.last4,
        status="active",
    )
    session.add(method)
    session.flush()
    return method


def _record_decline(
    session: Session, checkout: Checkout, request: PaymentRequest, declined: PaymentDeclined, provider: str
) -> None:
    payload = {
        "id": None,
        "invoiceId": None,
        "invoiceNumber": None,
        "customerId": checkout.customer_id,
        "checkoutId": checkout.id,
        "status": "failed",
        "amount": request.amount,
        "currency": request.currency,
        "provider": provider,
        "failureCode": declined.code,
        "failureMessage": declined.message,
        "paymentMethod": {"brand": declined.brand, "last4": declined.last4},
    }
    events.record_event(session, checkout.organization_id, events.PAYMENT_FAILED, payload)
    log.info(
        "payment.declined",
        extra={
            "organization_id": checkout.organization_id,
            "checkout_id": checkout.id,
            "provider": provider,
            "failure_code": declined.code,
        },
    )
