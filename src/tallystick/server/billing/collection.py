"""Renewal charges made after the renewal's transaction commits.

A renewal decides to charge an invoice inside a transaction that holds the order's row lock,
often the organization's too (for invoice numbering), and on SQLite the database write lock.
A payment provider can take seconds to respond, and every other write would wait that long.
So the renewal only claims the charge, and the provider is called once the transaction has
committed:

1. `defer_charge`, in the renewal's transaction, stores the attempt's idempotency key on the
   invoice, moves its next payment attempt `claim_duration()` ahead so that no other process
   takes it, and queues `collect_charge` to run after the commit (`db.after_commit`).
2. `collect_charge` calls the provider with no transaction open, then stores the outcome in a
   short transaction of its own under the order's row lock.

A process that stops between the two leaves the claim. When the claim lapses, the invoice is
due again, and the next attempt reuses the stored key, so the provider returns the first charge
instead of making a second one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.billing import invoices
from tallystick.server.checkout.providers import PaymentOutcome, PaymentSucceeded, PaymentUnanswered
from tallystick.server.db import Store, after_commit
from tallystick.server.models import Invoice, Order, Payment
from tallystick.server.settings import get_settings

log = logging.getLogger(__name__)

# The shortest time a claimed charge is left to the process that claimed it, in seconds.
MIN_CLAIM_SECONDS = 600


def claim_duration() -> timedelta:
    """Return how long a claimed charge is left to the process that claimed it.

    A Stripe charge makes at most three tries of `stripe_timeout_seconds` each, with short
    pauses between them, so four of those are enough.
    """
    return timedelta(seconds=max(MIN_CLAIM_SECONDS, 4 * get_settings().stripe_timeout_seconds))


def defer_charge(session: Session, order: Order, invoice: Invoice, now: datetime) -> None:
    """Claim the next charge of `invoice` and make it once the session commits."""
    charge = invoices.claim_charge(session, order, invoice, now)
    if charge is None:
        return
    lease_until = _lease_from(now)
    invoice.next_payment_attempt_at = lease_until
    after_commit(session, partial(collect_charge, charge=charge, lease_until=lease_until))


def charge_in_progress(invoice: Invoice, now: datetime) -> bool:
    """Return whether a claimed charge of `invoice` may be waiting for its provider now."""
    due = invoice.next_payment_attempt_at
    return invoice.payment_idempotency_key is not None and due is not None and now < due <= _lease_from(now)


def _lease_from(now: datetime) -> datetime:
    # From the wall clock when it is later: a worker's `now` is when its poll started, and the
    # poll may have charged other orders since.
    return max(now, clock.now()) + claim_duration()


def collect_charge(store: Store, *, charge: invoices.Charge, lease_until: datetime) -> None:
    """Make a claimed charge and store its outcome, unless another process took the claim over."""
    ids = {"organization_id": charge.organization_id, "order_id": charge.order_id, "invoice_id": charge.invoice_id}
    renewed = _renew_claim(store, charge, lease_until, ids)
    if renewed is None:
        return

    try:
        outcome: PaymentOutcome = charge.provider.charge_saved_method(charge.request, charge.method)
    except Exception as error:  # noqa: BLE001 - any provider failure leaves the outcome unknown
        log.exception("payment.provider_failed", extra={**ids, "attempt": charge.attempt})
        outcome = PaymentUnanswered(message=f"the payment provider failed ({type(error).__name__})")

    from tallystick.server.billing.renewals import lock_order, next_due

    # Recorded as of the attempt's own instant, as a charge made inside the renewal would be.
    with clock.at(charge.at), store.transaction() as session:
        order = lock_order(session, charge.order_id)
        invoice = session.get(Invoice, charge.invoice_id)
        if order is None or invoice is None:
            _report_superseded(session, charge, outcome, ids)
            return
        still_ours = charge.is_claimed_by(invoice) and invoice.next_payment_attempt_at == renewed
        # Money taken here is recorded even when another process took the lapsed claim over.
        unpaid = invoice.status == "posted" and invoice.payment_status != "paid"
        if not still_ours and not (isinstance(outcome, PaymentSucceeded) and unpaid):
            _report_superseded(session, charge, outcome, ids)
            return
        invoices.record_charge_outcome(session, order, invoice, charge, outcome)
        order.billing_due_at = next_due(session, order)


def _renew_claim(store: Store, charge: invoices.Charge, lease_until: datetime, ids: dict[str, str]) -> datetime | None:
    """Restart the claim's time just before the provider is called, and return its new end.

    Return None when the claim is not this call's to make any more. That is the case when
    another process took over the lapsed claim, and when the claim was queued in a savepoint
    that rolled back, since such work still runs (see db.after_commit). A payment method
    changed since the claim releases it, so that the next attempt charges the new method.
    """
    from tallystick.server.billing.renewals import lock_order, next_due

    with store.transaction() as session:
        order = lock_order(session, charge.order_id)
        invoice = session.get(Invoice, charge.invoice_id)
        if order is None or invoice is None or not charge.is_claimed_by(invoice):
            log.info("payment.claim_gone", extra={**ids, "attempt": charge.attempt})
            return None
        if invoice.next_payment_attempt_at != lease_until:
            log.info("payment.claim_taken_over", extra={**ids, "attempt": charge.attempt})
            return None
        if order.payment_method_id != charge.method.id:
            invoice.payment_idempotency_key = None
            invoice.next_payment_attempt_at = charge.at
            order.billing_due_at = next_due(session, order)
            log.info("payment.method_changed", extra={**ids, "attempt": charge.attempt})
            return None
        renewed = _lease_from(charge.at)
        invoice.next_payment_attempt_at = renewed
        order.billing_due_at = next_due(session, order)
    return renewed


def _report_superseded(session: Session, charge: invoices.Charge, outcome: object, ids: dict[str, str]) -> None:
    """Log an outcome that arrived after the invoice was settled another way."""
    if not isinstance(outcome, PaymentSucceeded):
        log.info("payment.outcome_superseded", extra={**ids, "attempt": charge.attempt})
        return
    recorded = session.scalar(
        select(Payment.id).where(
            Payment.organization_id == charge.organization_id,
            Payment.provider_payment_id == outcome.provider_payment_id,
        )
    )
    if recorded is not None:
        # Another process retried the lapsed claim with the same key and stored this payment.
        log.info("payment.outcome_superseded", extra={**ids, "attempt": charge.attempt, "payment_id": recorded})
        return
    # Money was taken for an invoice that was settled meanwhile (such as marked paid by hand).
    log.error(
        "payment.collected_for_settled_invoice",
        extra={**ids, "provider": outcome.provider, "provider_payment_id": outcome.provider_payment_id},
    )
