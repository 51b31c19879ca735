"""Delivery bookkeeping: turning outbox events into deliveries, claims, attempts and retries.

The steps, each in its own short transaction run by the worker:
1. `dispatch_outbox` takes undelivered outbox events and creates one pending delivery per event
   whose webhook is enabled, marking the event handed over (`delivered_at`).
2. `claim_due_deliveries` claims pending deliveries whose next attempt is due and that no live
   worker owns, for `webhook_claim_seconds`.
3. The worker sends each claimed delivery outside any transaction.
4. `record_attempt` stores the attempt and schedules the next one, or ends the delivery.

On PostgreSQL, steps 1 and 2 lock rows with FOR UPDATE SKIP LOCKED, so concurrent workers in
several processes take disjoint rows instead of waiting for each other. SQLite renders no
FOR UPDATE, but its write transactions run one at a time (BEGIN IMMEDIATE). Either way a
delivery has one owner at a time, and a worker that dies mid-request leaves a claim that lapses,
after which another worker sends the event again with the same id: delivery is at least once.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from tallystick.server.errors import bad_request, not_found
from tallystick.server.ids import new_id
from tallystick.server.models import (
    OutboxEvent,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookSigningSecret,
)
from tallystick.server.settings import Settings
from tallystick.server.webhooks.catalog import find_webhook_event
from tallystick.server.webhooks.sender import SendResult, build_envelope

log = logging.getLogger(__name__)

DELIVERY_STATUSES = ("pending", "delivered", "failed", "canceled")
# Each retry waits up to this fraction longer than its nominal delay, so deliveries that failed
# together (a receiver outage) do not all retry at the same instant.
RETRY_JITTER = 0.1


@dataclass(frozen=True)
class ClaimedDelivery:
    """The data a worker needs to send one claimed delivery, read inside the claim transaction."""

    delivery_id: str
    organization_id: str
    event_id: str
    name: str
    url: str
    body: bytes
    secret: str
    claim_token: str


def retry_delay(attempt_count: int, settings: Settings, *, jitter: float | None = None) -> timedelta:
    """Return the wait after the `attempt_count`-th failed attempt.

    The nominal delay is base × 2^(attempt_count − 1), capped at the maximum delay. A random
    share of up to RETRY_JITTER of it is added; `jitter` in [0, 1] pins that share for tests.
    """
    exponent = min(attempt_count - 1, 60)
    nominal = min(settings.webhook_retry_max_delay_seconds, settings.webhook_retry_base_seconds * 2**exponent)
    share = random.random() if jitter is None else jitter
    return timedelta(seconds=nominal * (1 + RETRY_JITTER * share))


def has_work(session: Session, now: datetime) -> bool:
    """Return whether any outbox event awaits dispatch or any delivery is due.

    The worker calls this first on a read session, so an idle server does not take SQLite's
    write lock on every poll.
    """
    undelivered = select(OutboxEvent.id).where(OutboxEvent.delivered_at.is_(None)).limit(1)
    if session.scalar(undelivered) is not None:
        return True
    return session.scalar(_due_deliveries(now).with_only_columns(WebhookDelivery.id).limit(1)) is not None


def dispatch_outbox(
    session: Session, now: datetime, settings: Settings, limit: int, *, event_ids: Sequence[str] | None = None
) -> int:
    """Create deliveries for up to `limit` undelivered outbox events, only those of `event_ids`
    when it is given; return how many events were taken."""
    statement = (
        select(OutboxEvent)
        .where(OutboxEvent.delivered_at.is_(None))
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if event_ids is not None:
        statement = statement.where(OutboxEvent.id.in_(event_ids))
    outbox_events = list(session.scalars(statement))
    if not outbox_events:
        return 0
    endpoints = _endpoints_by_key(session, {(event.organization_id, event.event_type) for event in outbox_events})

    for event in outbox_events:
        event.delivered_at = now
        if find_webhook_event(event.event_type) is None:
            log.warning(
                "webhooks.unknown_event_type",
                extra={"event_id": event.id, "event_type": event.event_type},
            )
            continue
        endpoint = endpoints.get((event.organization_id, event.event_type))
        if endpoint is None or not endpoint.enabled or not endpoint.url:
            continue
        session.add(
            WebhookDelivery(
                id=new_id("webhook_delivery"),
                organization_id=event.organization_id,
                event_id=event.id,
                name=event.event_type,
                status="pending",
                attempt_count=0,
                next_attempt_at=now,
                give_up_at=now + timedelta(seconds=settings.webhook_retry_window_seconds),
                created_at=now,
                updated_at=now,
            )
        )
    session.flush()
    return len(outbox_events)


def claim_due_deliveries(
    session: Session, now: datetime, settings: Settings, limit: int, *, event_ids: Sequence[str] | None = None
) -> list[ClaimedDelivery]:
    """Claim up to `limit` due deliveries, only those of `event_ids` when it is given, and
    return them ready to send.

    A delivery whose webhook was disabled or lost its URL since it was created is canceled
    instead. An operator can redeliver it after enabling the webhook again.
    """
    if limit <= 0:
        return []
    statement = _due_deliveries(now).limit(limit).with_for_update(skip_locked=True)
    if event_ids is not None:
        statement = statement.where(WebhookDelivery.event_id.in_(event_ids))
    deliveries = list(session.scalars(statement))
    if not deliveries:
        return []
    organization_ids = {delivery.organization_id for delivery in deliveries}
    endpoints = _endpoints_by_key(session, {(item.organization_id, item.name) for item in deliveries})
    events = {
        event.id: event
        for event in session.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_([item.event_id for item in deliveries]))
        )
    }
    signing_secrets = {
        row.organization_id: row.secret
        for row in session.scalars(
            select(WebhookSigningSecret).where(WebhookSigningSecret.organization_id.in_(organization_ids))
        )
    }

    claimed: list[ClaimedDelivery] = []
    for delivery in deliveries:
        endpoint = endpoints.get((delivery.organization_id, delivery.name))
        secret = signing_secrets.get(delivery.organization_id)
        if endpoint is None or not endpoint.enabled or not endpoint.url or secret is None:
            _cancel(delivery, now)
            continue

        token = secrets.token_hex(16)
        delivery.claim_token = token
        delivery.claimed_until = now + timedelta(seconds=settings.webhook_claim_seconds)
        delivery.updated_at = now
        event = events[delivery.event_id]
        webhook = find_webhook_event(delivery.name)
        assert webhook is not None, f"delivery {delivery.id} has unknown webhook {delivery.name}"
        body = build_envelope(
            event_id=event.id,
            name=delivery.name,
            payload_key=webhook.payload_key,
            payload=event.payload,
            occurred_at=event.created_at,
            is_test=False,
        )
        claimed.append(
            ClaimedDelivery(
                delivery_id=delivery.id,
                organization_id=delivery.organization_id,
                event_id=event.id,
                name=delivery.name,
                url=endpoint.url,
                body=body,
                secret=secret,
                claim_token=token,
            )
        )
    session.flush()
    return claimed


def count_unattempted(session: Session, event_ids: Sequence[str]) -> int:
    """Count the events of `event_ids` still waiting for their first delivery attempt: those not
    yet dispatched, and pending deliveries that no attempt has been recorded for."""
    undispatched = session.scalar(
        select(func.count()).select_from(OutboxEvent).where(OutboxEvent.id.in_(event_ids), OutboxEvent.delivered_at.is_(None))
    )
    unattempted = session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(
            WebhookDelivery.event_id.in_(event_ids),
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempt_count == 0,
        )
    )
    return (undispatched or 0) + (unattempted or 0)


def prune_finished(session: Session, now: datetime, retention: timedelta, limit: int) -> int:
    """Delete up to `limit` outbox events older than `retention` with their finished deliveries
    and attempts; return how many events were deleted.

    An event goes once it was handed over before the cutoff and none of its deliveries is pending
    or changed since the cutoff, so a delivery being retried or redelivered is kept.
    """
    cutoff = now - retention
    recent_or_pending = select(WebhookDelivery.id).where(
        WebhookDelivery.event_id == OutboxEvent.id,
        or_(WebhookDelivery.status == "pending", WebhookDelivery.updated_at > cutoff),
    )
    event_ids = list(
        session.scalars(
            select(OutboxEvent.id)
            .where(OutboxEvent.delivered_at < cutoff, ~exists(recent_or_pending))
            .order_by(OutboxEvent.delivered_at)
            .limit(limit)
        )
    )
    if not event_ids:
        return 0
    deliveries = select(WebhookDelivery.id).where(WebhookDelivery.event_id.in_(event_ids))
    session.execute(delete(WebhookDeliveryAttempt).where(WebhookDeliveryAttempt.delivery_id.in_(deliveries)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(event_ids)))
    session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(event_ids)))
    return len(event_ids)


def record_attempt(
    session: Session, claimed: ClaimedDelivery, result: SendResult, now: datetime, settings: Settings
) -> WebhookDelivery:
    """Store the attempt, then mark the delivery delivered, schedule a retry or give up.

    When the claim was lost meanwhile (it lapsed and another worker took the delivery, or an
    operator asked for a redelivery), the attempt is stored but the delivery is left to its
    new owner.
    """
    delivery = session.get(WebhookDelivery, claimed.delivery_id, with_for_update=True)
    assert delivery is not None, f"claimed delivery {claimed.delivery_id} disappeared"
    session.add(
        WebhookDeliveryAttempt(
            id=new_id("webhook_attempt"),
            organization_id=delivery.organization_id,
            delivery_id=delivery.id,
            url=claimed.url,
            started_at=result.started_at,
            response_status=result.response_status,
            latency_ms=result.latency_ms,
            error=result.error,
            succeeded=result.succeeded,
        )
    )
    note_endpoint_result(session, delivery.organization_id, delivery.name, result)

    log_fields = {
        "organization_id": delivery.organization_id,
        "delivery_id": delivery.id,
        "event_id": delivery.event_id,
        "webhook": delivery.name,
        "response_status": result.response_status,
        "latency_ms": result.latency_ms,
    }
    if delivery.claim_token != claimed.claim_token:
        log.warning("webhooks.claim_lost", extra=log_fields)
        session.flush()
        return delivery

    delivery.attempt_count += 1
    delivery.last_attempt_at = result.started_at
    delivery.claim_token = None
    delivery.claimed_until = None
    delivery.updated_at = now
    log_fields["attempt"] = delivery.attempt_count

    if result.succeeded:
        delivery.status = "delivered"
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        log.info("webhooks.delivery_succeeded", extra=log_fields)
    else:
        next_attempt_at = now + retry_delay(delivery.attempt_count, settings)
        if next_attempt_at > delivery.give_up_at:
            delivery.status = "failed"
            delivery.next_attempt_at = None
            log.warning("webhooks.delivery_gave_up", extra={**log_fields, "error": result.error})
        else:
            delivery.next_attempt_at = next_attempt_at
            log.info(
                "webhooks.delivery_retry_scheduled",
                extra={**log_fields, "error": result.error, "next_attempt_at": next_attempt_at.isoformat()},
            )
    session.flush()
    return delivery


def note_endpoint_result(session: Session, organization_id: str, name: str, result: SendResult) -> None:
    """Set the webhook's lastSentAt and lastStatus from one request's result."""
    endpoint = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == organization_id, WebhookEndpoint.name == name
        )
    )
    if endpoint is None:
        return
    endpoint.last_sent_at = result.started_at
    endpoint.last_status = "success" if result.succeeded else "failed"


def redeliver(session: Session, organization_id: str, delivery_id: str, now: datetime, settings: Settings) -> WebhookDelivery:
    """Send a delivery again as soon as a worker is free, whatever its status.

    The retry window starts over and the envelope keeps its event id. A worker sending the
    delivery right now loses its claim: its attempt is still recorded.
    """
    delivery = get_delivery(session, organization_id, delivery_id)
    endpoint = session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id == organization_id, WebhookEndpoint.name == delivery.name
        )
    )
    if endpoint is None or not endpoint.enabled or not endpoint.url:
        raise bad_request(
            "deliveryId",
            f"webhook {delivery.name} is disabled or has no url; enable it with a url first",
            delivery_id,
            code="webhook_disabled",
        )

    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.give_up_at = now + timedelta(seconds=settings.webhook_retry_window_seconds)
    delivery.claim_token = None
    delivery.claimed_until = None
    delivery.delivered_at = None
    delivery.updated_at = now
    session.flush()
    log.info(
        "webhooks.redelivery_requested",
        extra={"organization_id": organization_id, "delivery_id": delivery.id, "event_id": delivery.event_id},
    )
    return delivery


def get_delivery(session: Session, organization_id: str, delivery_id: str) -> WebhookDelivery:
    delivery = session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.organization_id == organization_id, WebhookDelivery.id == delivery_id
        )
    )
    if delivery is None:
        raise not_found("Webhook delivery", "id", delivery_id)
    return delivery


def list_deliveries_statement(
    organization_id: str, *, name: str | None, status: str | None, event_id: str | None
) -> Select[tuple[WebhookDelivery]]:
    """Select the organization's deliveries, newest first, optionally filtered."""
    statement = select(WebhookDelivery).where(WebhookDelivery.organization_id == organization_id)

    if name is not None:
        statement = statement.where(WebhookDelivery.name == name)

    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)

    if event_id is not None:
        statement = statement.where(WebhookDelivery.event_id == event_id)

    return statement.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())


def list_attempts(session: Session, delivery: WebhookDelivery) -> list[WebhookDeliveryAttempt]:
    statement = (
        select(WebhookDeliveryAttempt)
        .where(
            WebhookDeliveryAttempt.organization_id == delivery.organization_id,
            WebhookDeliveryAttempt.delivery_id == delivery.id,
        )
        .order_by(WebhookDeliveryAttempt.started_at, WebhookDeliveryAttempt.id)
    )
    return list(session.scalars(statement))


def _due_deliveries(now: datetime) -> Select[tuple[WebhookDelivery]]:
    return (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until <= now),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    )


def _endpoints_by_key(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], WebhookEndpoint]:
    """Load the endpoints for (organization id, webhook name) pairs."""
    organization_ids = {organization_id for organization_id, _ in keys}
    names = {name for _, name in keys}
    statement = select(WebhookEndpoint).where(
        WebhookEndpoint.organization_id.in_(organization_ids), WebhookEndpoint.name.in_(names)
    )
    return {(row.organization_id, row.name): row for row in session.scalars(statement)}


def _cancel(delivery: WebhookDelivery, now: datetime) -> None:
    delivery.status = "canceled"
    delivery.next_attempt_at = None
    delivery.updated_at = now
    log.info(
        "webhooks.delivery_canceled",
        extra={"organization_id": delivery.organization_id, "delivery_id": delivery.id},
    )
