"""Activating an order: from draft to active, with every billing period elapsed since its start.

An order whose start date is in the past is activated as if it had been active all along
(backdated activation). Each elapsed period is started in order, with one allocation per slot
of its benefits as of the slot's start. The invoices of elapsed periods stay drafts and the
current period's is posted. The customer's unrated signals for the order's products since the
start date are rated in time order between those events. on_payment credits still wait for
their invoice to be paid.

NOTE: signals that a pricing line rated before activation and that found no credits are
pending consumption already. The first backdated grant settles them oldest first, not period
by period, because the ledger settles pending consumption whenever a grant arrives.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server.billing.renewals import advance_order
from tallystick.server.billing.replay import SignalReplay
from tallystick.server.errors import bad_request
from tallystick.server.models import BillingPeriod, Invoice, Order

log = logging.getLogger(__name__)


def activate(session: Session, order: Order, now: datetime) -> Invoice | None:
    """Make a draft order active and bring its billing up to `now`.

    The caller holds the order's row lock. Returns the invoice of the first period, or None
    when the order starts in the future.
    """
    if order.status != "draft":
        raise bad_request("id", f"only a draft order can be activated; this one is {order.status}", order.id)
    if not order.lines:
        raise bad_request("lines", "an order needs at least one line to be activated", order.id)

    order.status = "active"
    order.creation_state = "active"
    order.activated_at = now
    order.version += 1
    order.updated_at = now
    session.flush()

    if order.start_date < now:
        replay = SignalReplay(session, order, until=now)
        steps = advance_order(
            session, order, now, as_of_each_event=True, drafts_for_elapsed=True, before_event=replay.run_until
        )
        replay.run_until(now, inclusive=True)
        log.info(
            "order.activated",
            extra={
                "organization_id": order.organization_id,
                "order_id": order.id,
                "backdated_periods": order.period_number,
                "billing_events": steps,
                "signals_replayed": replay.replayed,
            },
        )
    else:
        advance_order(session, order, now)
        log.info("order.activated", extra={"organization_id": order.organization_id, "order_id": order.id})

    return session.scalar(
        select(Invoice)
        .join(BillingPeriod, BillingPeriod.invoice_id == Invoice.id)
        .where(BillingPeriod.order_id == order.id, BillingPeriod.number == 1)
    )
