"""Retention of webhook history: old outbox events go with their finished deliveries and attempts."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from tallystick.server import clock
from tallystick.server.ids import new_id
from tallystick.server.models import OutboxEvent, WebhookDelivery, WebhookDeliveryAttempt
from tallystick.server.settings import Settings
from tallystick.server.webhooks import delivery, worker
from tallystick.server.webhooks.worker import WebhookWorker

RETENTION = timedelta(days=30)
# Rows are dated relative to the real time, because the worker prunes at the real time. Other
# tests' rows are pruned too when they are old enough, so counts are checked per organization.
NOW = clock.now()


def add_event(session, organization_id: str, *, handed_over_days_ago: float | None) -> str:  # type: ignore[no-untyped-def]
    """Add an outbox event handed over that many days before NOW (None: not yet)."""
    handed_over = NOW - timedelta(days=handed_over_days_ago) if handed_over_days_ago is not None else None
    event = OutboxEvent(
        id=new_id("outbox_event"),
        organization_id=organization_id,
        event_type="billing-invoice-paid",
        payload={"id": "inv_1"},
        created_at=handed_over or NOW,
        delivered_at=handed_over,
    )
    session.add(event)
    session.flush()
    return event.id


def add_delivery(session, organization_id: str, event_id: str, *, status: str, changed_days_ago: float) -> str:  # type: ignore[no-untyped-def]
    changed = NOW - timedelta(days=changed_days_ago)
    row = WebhookDelivery(
        id=new_id("webhook_delivery"),
        organization_id=organization_id,
        event_id=event_id,
        name="billing-invoice-paid",
        status=status,
        attempt_count=1,
        next_attempt_at=changed + timedelta(hours=1) if status == "pending" else None,
        give_up_at=changed + timedelta(days=3),
        created_at=changed,
        updated_at=changed,
    )
    session.add(row)
    session.flush()
    session.add(
        WebhookDeliveryAttempt(
            id=new_id("webhook_attempt"),
            organization_id=organization_id,
            delivery_id=row.id,
            url="https://receiver.example/hooks",
            started_at=changed,
            response_status=200 if status == "delivered" else 500,
            latency_ms=12,
            error=None if status == "delivered" else "receiver responded with HTTP 500",
            succeeded=status == "delivered",
        )
    )
    session.flush()
    return row.id


def remaining_event_ids(store, organization_id: str) -> set[str]:  # type: ignore[no-untyped-def]
    with store.read_sessions() as session:
        return set(session.scalars(select(OutboxEvent.id).where(OutboxEvent.organization_id == organization_id)))


def test_prune_keeps_recent_and_unfinished(store, tenant):
    organization_id = tenant.organization_id
    with store.transaction() as session:
        delivered_long_ago = add_event(session, organization_id, handed_over_days_ago=40)
        add_delivery(session, organization_id, delivered_long_ago, status="delivered", changed_days_ago=40)
        no_webhook_long_ago = add_event(session, organization_id, handed_over_days_ago=45)
        still_retrying = add_event(session, organization_id, handed_over_days_ago=40)
        add_delivery(session, organization_id, still_retrying, status="pending", changed_days_ago=35)
        redelivered_lately = add_event(session, organization_id, handed_over_days_ago=40)
        add_delivery(session, organization_id, redelivered_lately, status="failed", changed_days_ago=10)
        handed_over_lately = add_event(session, organization_id, handed_over_days_ago=29)
        add_delivery(session, organization_id, handed_over_lately, status="delivered", changed_days_ago=29)
        not_handed_over = add_event(session, organization_id, handed_over_days_ago=None)

    with store.transaction() as session:
        deleted = delivery.prune_finished(session, NOW, RETENTION, limit=100)

    assert deleted >= 2
    remaining = remaining_event_ids(store, organization_id)
    assert delivered_long_ago not in remaining
    assert no_webhook_long_ago not in remaining
    assert remaining == {still_retrying, redelivered_lately, handed_over_lately, not_handed_over}
    with store.read_sessions() as session:
        deliveries = session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.organization_id == organization_id)
        )
        attempts = session.scalar(
            select(func.count())
            .select_from(WebhookDeliveryAttempt)
            .where(WebhookDeliveryAttempt.organization_id == organization_id)
        )
    assert deliveries == 3
    assert attempts == 3


def test_worker_prunes_in_batches(store, tenant, database_url, monkeypatch):  # type: ignore[no-untyped-def]
    organization_id = tenant.organization_id
    with store.transaction() as session:
        old_ids = [add_event(session, organization_id, handed_over_days_ago=31 + index) for index in range(5)]
        recent_id = add_event(session, organization_id, handed_over_days_ago=1)
    monkeypatch.setattr(worker, "PRUNE_BATCH_SIZE", 2)
    pruning = WebhookWorker(store, Settings(database_url=database_url, webhook_retention_days=30))

    async def prune_then_stop() -> int:
        try:
            return await pruning.prune()
        finally:
            await pruning.stop()

    deleted = asyncio.run(prune_then_stop())

    remaining = remaining_event_ids(store, organization_id)
    assert deleted >= 5
    assert remaining == {recent_id}
    assert not remaining & set(old_ids)
