"""Recording of outbox events such as billing-credits-depleted; delivery happens elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from tallystick.server.ids import new_id
from tallystick.server.models import OutboxEvent

log = logging.getLogger(__name__)

# Event types are the webhook event names that deliver them; tallystick.server.webhooks.catalog
# says under which key of the envelope's `data` each payload is sent.
INVOICE_CREATED = "billing-invoice-created"
INVOICE_PAID = "billing-invoice-paid"
INVOICE_POSTED = "billing-invoice-posted"
CHECKOUT_CREATED = "billing-checkout-created"
CHECKOUT_COMPLETED = "billing-checkout-completed"
CHECKOUT_EXPIRED = "billing-checkout-expired"
PAYMENT_SUCCEEDED = "billing-payment-succeeded"
PAYMENT_FAILED = "billing-payment-failed"
CREDITS_DEPLETED = "billing-credits-depleted"
OVERAGE_INCURRED = "billing-overage-incurred"
CREDIT_CAP_REACHED = "billing-credit-cap-reached"
# Not a Paid event: the balance fell to or below the organization's low-balance threshold.
CREDITS_LOW = "billing-credits-low"

# Key of `Session.info` under which `record_event` lists the ids of the events it recorded, so
# a caller can have them delivered once its transaction commits.
RECORDED_EVENT_IDS = "tallystick.recorded_event_ids"


def recorded_event_ids(session: Session) -> list[str]:
    """Return the ids of the events recorded through `session`, oldest first.

    A savepoint that rolled back leaves its ids in the list. Their rows do not exist, so a
    lookup by these ids skips them.
    """
    return list(session.info.get(RECORDED_EVENT_IDS, ()))


def record_event(
    session: Session, organization_id: str, event_type: str, payload: dict[str, Any]
) -> OutboxEvent:
    """Add an undelivered event to the outbox; it commits or rolls back with the caller's work.

    `payload` is the event's object (the invoice, the checkout, ...) as JSON-ready camelCase
    values, with decimals as strings; webhooks send it unchanged inside the envelope.
    """
    event = OutboxEvent(
        id=new_id("outbox_event"),
        organization_id=organization_id,
        event_type=event_type,
        payload=payload,
    )
    session.add(event)
    session.flush()
    session.info.setdefault(RECORDED_EVENT_IDS, []).append(event.id)
    log.info(
        "outbox.event_recorded",
        extra={"organization_id": organization_id, "event_id": event.id, "event_type": event_type},
    )
    return event
