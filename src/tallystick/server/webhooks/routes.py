"""HTTP routes of webhooks: the Paid endpoints, plus deliveries and low-balance thresholds."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from tallystick.server import clock
from tallystick.server.db import Store
from tallystick.server.deps import CurrentPrincipal, DbSession, ReadSession, authenticate
from tallystick.server.errors import bad_request
from tallystick.server.filters import parse_choice_filter
from tallystick.server.ids import new_id
from tallystick.server.ledger.bodies import body_schema, exact_json_body
from tallystick.server.models import (
    LowBalanceThreshold,
    OutboxEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from tallystick.server.pagination import Page, paginate
from tallystick.server.routing import Router
from tallystick.server.schemas import ERROR_RESPONSES, EmptyResponse
from tallystick.server.settings import Settings
from tallystick.server.webhooks import delivery, service, thresholds
from tallystick.server.webhooks.catalog import WEBHOOK_EVENTS
from tallystick.server.webhooks.low_balance import format_credits
from tallystick.server.webhooks.schemas import (
    DeliveryAttemptOut,
    DeliveryDetailOut,
    DeliveryListOut,
    DeliveryOut,
    LowBalanceThresholdIn,
    LowBalanceThresholdListOut,
    LowBalanceThresholdOut,
    RotateWebhookSecretOut,
    WebhookListOut,
    WebhookOut,
    WebhookTestOut,
    WebhookUpdate,
    WebhookUpdateOut,
)
from tallystick.server.webhooks.samples import sample_payload
from tallystick.server.webhooks.sender import WebhookSender, build_envelope

log = logging.getLogger(__name__)

router = Router(tags=["webhooks"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        name=endpoint.name,
        description=WEBHOOK_EVENTS[endpoint.name].description,
        enabled=endpoint.enabled,
        url=endpoint.url,
        last_sent_at=endpoint.last_sent_at,
        last_status=endpoint.last_status,
    )


def delivery_out(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        event_id=row.event_id,
        event=row.name,
        status=row.status,
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        give_up_at=row.give_up_at,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


def threshold_out(row: LowBalanceThreshold) -> LowBalanceThresholdOut:
    return LowBalanceThresholdOut(
        credits_currency_id=row.credits_currency_id,
        threshold=format_credits(row.threshold),
        updated_at=row.updated_at,
    )


# The Paid webhook endpoints


@router.get("/webhooks/", response_model=WebhookListOut)
def list_webhooks(principal: CurrentPrincipal, session: DbSession) -> WebhookListOut:
    """List one webhook per event name, whether configured or not."""
    endpoints = service.list_endpoints(session, principal.organization_id)
    return WebhookListOut(
        data=[webhook_out(endpoint) for endpoint in endpoints],
        signing_secret_configured=service.signing_secret_configured(session, principal.organization_id),
    )


# Literal paths are registered before /webhooks/{webhook_name} so that they win.
@router.post("/webhooks/rotate-secret", response_model=RotateWebhookSecretOut)
def rotate_webhook_secret(principal: CurrentPrincipal, session: DbSession) -> RotateWebhookSecretOut:
    """Create a new signing secret, shown only in this response; the old one stops working now."""
    secret = service.rotate_signing_secret(session, principal.organization_id)
    return RotateWebhookSecretOut(signing_secret=secret)


@router.get("/webhooks/deliveries", response_model=DeliveryListOut)
def list_webhook_deliveries(
    principal: CurrentPrincipal,
    session: ReadSession,
    page: Page,
    event: Annotated[str | None, Query(description="Webhook event name, such as billing-invoice-paid.")] = None,
    status: Annotated[str | None, Query(description="pending, delivered, failed or canceled.")] = None,
    event_id: Annotated[str | None, Query(alias="eventId", description="The envelope id.")] = None,
) -> DeliveryListOut:
    """List webhook deliveries, newest first: one per event sent to an enabled webhook.

    Not part of the Paid API.
    """
    statement = delivery.list_deliveries_statement(
        principal.organization_id,
        name=parse_choice_filter("event", event, tuple(WEBHOOK_EVENTS)),
        status=parse_choice_filter("status", status, delivery.DELIVERY_STATUSES),
        event_id=event_id,
    )
    rows, pagination = paginate(session, statement, page)
    return DeliveryListOut(data=[delivery_out(row) for row in rows], pagination=pagination)


@router.get("/webhooks/deliveries/{delivery_id}", response_model=DeliveryDetailOut)
def get_webhook_delivery(delivery_id: str, principal: CurrentPrincipal, session: ReadSession) -> DeliveryDetailOut:
    """Return a delivery with its payload and every attempt (status, latency, error).

    Not part of the Paid API.
    """
    row = delivery.get_delivery(session, principal.organization_id, delivery_id)
    return _delivery_detail(session, row)


@router.post("/webhooks/deliveries/{delivery_id}/redeliver", response_model=DeliveryDetailOut)
def redeliver_webhook(
    delivery_id: str, request: Request, principal: CurrentPrincipal, session: DbSession
) -> DeliveryDetailOut:
    """Send a delivery again soon, with the same event id, whatever its status.

    The retry window starts over. The webhook must be enabled with a url. Not part of the Paid
    API.
    """
    row = delivery.redeliver(session, principal.organization_id, delivery_id, clock.now(), _settings(request))
    return _delivery_detail(session, row)


def _delivery_detail(session: Session, row: WebhookDelivery) -> DeliveryDetailOut:
    event = session.get(OutboxEvent, row.event_id)
    webhook = WEBHOOK_EVENTS[row.name]
    attempts = delivery.list_attempts(session, row)
    return DeliveryDetailOut(
        **delivery_out(row).model_dump(),
        data={webhook.payload_key: event.payload if event is not None else {}},
        attempts=[
            DeliveryAttemptOut(
                id=attempt.id,
                url=attempt.url,
                started_at=attempt.started_at,
                response_status=attempt.response_status,
                latency_ms=attempt.latency_ms,
                error=attempt.error,
                succeeded=attempt.succeeded,
            )
            for attempt in attempts
        ],
    )


@router.get("/webhooks/low-balance-thresholds", response_model=LowBalanceThresholdListOut)
def list_low_balance_thresholds(principal: CurrentPrincipal, session: ReadSession) -> LowBalanceThresholdListOut:
    """List the low-balance thresholds, one per credit currency that has one.

    Not part of the Paid API.
    """
    rows = thresholds.list_thresholds(session, principal.organization_id)
    return LowBalanceThresholdListOut(data=[threshold_out(row) for row in rows])


@router.put(
    "/webhooks/low-balance-thresholds/{credits_currency_id}",
    response_model=LowBalanceThresholdOut,
    openapi_extra=body_schema(LowBalanceThresholdIn),
)
def set_low_balance_threshold(
    credits_currency_id: str,
    body: Annotated[LowBalanceThresholdIn, Depends(exact_json_body(LowBalanceThresholdIn))],
    principal: CurrentPrincipal,
    session: DbSession,
) -> LowBalanceThresholdOut:
    """Set the credits at or below which billing-credits-low fires for this currency.

    The event fires once each time a customer's available balance falls from above the
    threshold to at or below it. Not part of the Paid API.
    """
    threshold = thresholds.parse_threshold(body.threshold)
    row = thresholds.set_threshold(session, principal.organization_id, credits_currency_id, threshold)
    return threshold_out(row)


@router.delete("/webhooks/low-balance-thresholds/{credits_currency_id}", response_model=EmptyResponse)
def delete_low_balance_threshold(
    credits_currency_id: str, principal: CurrentPrincipal, session: DbSession
) -> EmptyResponse:
    """Remove the currency's threshold; billing-credits-low stops firing for it. Not part of the Paid API."""
    thresholds.delete_threshold(session, principal.organization_id, credits_currency_id)
    return EmptyResponse()


@router.patch("/webhooks/{webhook_name}", response_model=WebhookUpdateOut)
def update_webhook(
    webhook_name: str, body: WebhookUpdate, request: Request, principal: CurrentPrincipal, session: DbSession
) -> WebhookUpdateOut:
    """Set a webhook's url and whether it is enabled.

    url must be http(s); loopback, private-range and link-local hosts are rejected unless the
    server runs with TALLYSTICK_ALLOW_PRIVATE_WEBHOOK_TARGETS=true. Setting url leaves enabled
    unchanged; a null url clears it and disables the webhook. The response carries
    signingSecret once, when this call created the organization's first signing secret.
    """
    endpoint, created_secret = service.update_endpoint(
        session,
        principal.organization_id,
        webhook_name,
        url=body.url,
        url_provided="url" in body.provided(),
        enabled=body.enabled,
        allow_private_targets=_settings(request).allow_private_webhook_targets,
    )
    return WebhookUpdateOut(**webhook_out(endpoint).model_dump(), signing_secret=created_secret)


@router.post("/webhooks/{webhook_name}/test", response_model=WebhookTestOut)
async def test_webhook(webhook_name: str, request: Request, principal: CurrentPrincipal) -> WebhookTestOut:
    """Send a signed test event (isTest true) to the webhook's url now; success means a 2xx.

    Its data contains a made-up object of the event's kind, with ids that start with test_.

    The webhook must be enabled with a url. The test is not retried and records no delivery,
    but it updates lastSentAt and lastStatus.
    """
    store: Store = request.app.state.store
    settings = _settings(request)
    organization_id = principal.organization_id

    def load_target() -> tuple[str, str]:
        with store.transaction() as session:
            endpoint = service.get_endpoint(session, organization_id, webhook_name)
            secret = service.get_signing_secret(session, organization_id)
            if not endpoint.enabled or not endpoint.url or secret is None:
                raise bad_request(
                    "webhookName",
                    "the webhook must be enabled with a url before it can be tested",
                    webhook_name,
                    code="webhook_disabled",
                )
            return endpoint.url, secret

    # The request is sent outside any transaction, so a slow receiver holds no database lock.
    url, secret = await run_in_threadpool(load_target)
    now = clock.now()
    payload_key = WEBHOOK_EVENTS[webhook_name].payload_key
    body = build_envelope(
        event_id=new_id("outbox_event"),
        name=webhook_name,
        payload_key=payload_key,
        payload=sample_payload(webhook_name, now),
        occurred_at=now,
        is_test=True,
    )
    async with WebhookSender(
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_private_targets=settings.allow_private_webhook_targets,
    ) as sender:
        result = await sender.send(url, body, secret)

    def save_result() -> None:
        with store.transaction() as session:
            delivery.note_endpoint_result(session, organization_id, webhook_name, result)

    await run_in_threadpool(save_result)
    if not result.succeeded:
        log.info(
            "webhooks.test_failed",
            extra={"organization_id": organization_id, "webhook": webhook_name, "error": result.error},
        )
    return WebhookTestOut(
        success=result.succeeded,
        response_status=result.response_status,
        error=result.error,
        latency_ms=result.latency_ms,
    )
