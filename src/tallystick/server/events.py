"""Recording of outbox events such as billing-credits-depleted; delivery happens elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from tallystick.server.ids import new_id
from tallystick.server.models import OutboxEvent

log = logging.getLogger(__name__)

CREDITS_DEPLETED = "billing-credits-depleted"


def record_event(
    session: Session, organization_id: str, event_type: str, payload: dict[str, Any]
) -> OutboxEvent:
    """Add an undelivered event to the outbox; it commits or rolls back with the caller's work."""
    event = OutboxEvent(
        id=new_id("outbox_event"),
        organization_id=organization_id,
        event_type=event_type,
        payload=payload,
    )
    session.add(event)
    session.flush()
    log.info(
        "outbox.event_recorded",
        extra={"organization_id": organization_id, "event_id": event.id, "event_type": event_type},
    )
    return event
