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
from tallystick.server.checkout.providers import PaymentSucceeded
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
    invoice.next_payment_attempt_at = now + claim_duration()
    after_commit(session, partial(collect_charge, charge=charge))


def collect_charge(store: Store, *, charge: invoices.Charge) -> None:
    """Make a claimed charge and store its outcome, unless another process stored one first."""
    ids = {"organization_id": charge.organization_id, "order_id": charge.order_id, "invoice_id": charge.invoice_id}
    # The claim is read back before money moves: work queued inside a savepoint that rolled
    # back still runs (see db.after_commit), and its claim was never stored.
    with store.read_sessions() as session:
        invoice = session.get(Invoice, charge.invoice_id)
        if invoice is None or not charge.is_claimed_by(invoice):
            log.info("payment.claim_gone", extra={**ids, "attempt": charge.attempt})
            return

    outcome = charge.provider.charge_saved_method(charge.request, charge.method)

    from tallystick.server.billing.renewals import lock_order, next_due

    # Recorded as of the attempt's own instant, as a charge made inside the renewal would be.
    with clock.at(charge.at), store.transaction() as session:
        order = lock_order(session, charge.order_id)
        invoice = session.get(Invoice, charge.invoice_id)
        if order is None or invoice is None or not charge.is_claimed_by(invoice):
            _report_superseded(session, charge, outcome, ids)
            return
        invoices.record_charge_outcome(session, order, invoice, charge, outcome)
        order.billing_due_at = next_due(session, order)


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
