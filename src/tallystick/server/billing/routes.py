"""HTTP routes of the organization's payment settings and of test clocks. Not part of the Paid API."""

from __future__ import annotations

from datetime import datetime

from fastapi import Depends, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from tallystick.server import clock, events
from tallystick.server.billing import test_clocks
from tallystick.server.checkout.providers import PROVIDER_NAMES, payment_settings
from tallystick.server.checkout.routes import public_root
from tallystick.server.db import Store
from tallystick.server.deps import (
    CurrentPrincipal,
    DbSession,
    ReadSession,
    authenticate,
)
from tallystick.server.errors import bad_request
from tallystick.server.models import PaymentSettings, TestClock
from tallystick.server.routing import Router
from tallystick.server.schemas import (
    ERROR_RESPONSES,
    EmptyResponse,
    RequestModel,
    ResponseModel,
)
from tallystick.server.webhooks.worker import WebhookWorker

router = Router(tags=["billing"], dependencies=[Depends(authenticate)], responses=ERROR_RESPONSES)


class PaymentSettingsUpdate(RequestModel):
    provider: str = Field(description="test (the embedded test mode) or stripe.")
    stripe_secret_key: str | None = Field(default=None, max_length=255, description="sk_... or rk_...; null clears it.")
    stripe_webhook_secret: str | None = Field(
        default=None, max_length=255, description="The whsec_... signing secret of the webhook endpoint."
    )


class PaymentSettingsOut(ResponseModel):
    provider: str
    stripe_secret_key_last4: str | None = Field(description="Last four characters of the stored secret key.")
    stripe_webhook_secret_configured: bool
    stripe_webhook_url: str = Field(description="Register this URL as a webhook endpoint in Stripe.")


def _settings_out(request: Request, organization_id: str, settings: PaymentSettings | None) -> PaymentSettingsOut:
    key = settings.stripe_secret_key if settings is not None else None
    return PaymentSettingsOut(
        provider=settings.provider if settings is not None else "test",
        stripe_secret_key_last4=key[-4:] if key else None,
        stripe_webhook_secret_configured=bool(settings is not None and settings.stripe_webhook_secret),
        stripe_webhook_url=f"{public_root(request).rstrip('/')}/webhooks/stripe/{organization_id}",
    )


@router.get("/payment-settings", response_model=PaymentSettingsOut)
def get_payment_settings(request: Request, principal: CurrentPrincipal, session: ReadSession) -> PaymentSettingsOut:
    """Return which provider takes the organization's payments. Secrets are never returned."""
    return _settings_out(request, principal.organization_id, payment_settings(session, principal.organization_id))


@router.put("/payment-settings", response_model=PaymentSettingsOut)
def update_payment_settings(
    body: PaymentSettingsUpdate, request: Request, principal: CurrentPrincipal, session: DbSession
) -> PaymentSettingsOut:
    """Choose the payment provider of new checkouts and store its credentials.

    With `stripe`, the Stripe secret key and the webhook endpoint's signing secret are both
    required (sent now or stored before). Keys not sent are kept; null clears them.
    Checkouts created earlier keep the provider they were created with.
    """
    if body.provider not in PROVIDER_NAMES:
        raise bad_request("provider", f"must be one of {', '.join(PROVIDER_NAMES)}", body.provider)
    sent = body.provided()
    if body.stripe_secret_key and not body.stripe_secret_key.startswith(("sk_", "rk_")):
        raise bad_request("stripeSecretKey", "must be a Stripe secret or restricted key (sk_... or rk_...)", None)
    if body.stripe_webhook_secret and not body.stripe_webhook_secret.startswith("whsec_"):
        raise bad_request("stripeWebhookSecret", "must be a Stripe webhook signing secret (whsec_...)", None)

    settings = payment_settings(session, principal.organization_id)
    if settings is None:
        settings = PaymentSettings(organization_id=principal.organization_id, provider="test")
        session.add(settings)
    if "stripe_secret_key" in sent:
        settings.stripe_secret_key = body.stripe_secret_key
    if "stripe_webhook_secret" in sent:
        settings.stripe_webhook_secret = body.stripe_webhook_secret
    if body.provider == "stripe" and not settings.stripe_secret_key:
        raise bad_request("stripeSecretKey", "is required to take payments with Stripe", None)
    if body.provider == "stripe" and not settings.stripe_webhook_secret:
        raise bad_request("stripeWebhookSecret", "is required to take payments with Stripe", None)
    settings.provider = body.provider
    settings.updated_at = clock.now()
    session.flush()
    return _settings_out(request, principal.organization_id, settings)


class TestClockCreate(RequestModel):
    frozen_time: datetime
    name: str | None = Field(default=None, max_length=255)


class TestClockAdvance(RequestModel):
    frozen_time: datetime


class TestClockOut(ResponseModel):
    id: str
    name: str | None = None
    frozen_time: datetime
    status: str
    created_at: datetime


def _clock_out(test_clock: TestClock) -> TestClockOut:
    return TestClockOut(
        id=test_clock.id,
        name=test_clock.name,
        frozen_time=test_clock.frozen_time,
        status=test_clock.status,
        created_at=test_clock.created_at,
    )


_TEST_CLOCKS_DOC = """\
Create a test clock at `frozenTime`. Customers created or updated with its id as `testClockId`
live at the clock's time. Their orders renew, their credits expire and their declined charges
are retried only when the clock is advanced, and their balances and state are read at the
clock's time.
"""


@router.post("/test-clocks/", status_code=201, response_model=TestClockOut, description=_TEST_CLOCKS_DOC)
def create_test_clock(body: TestClockCreate, principal: CurrentPrincipal, session: DbSession) -> TestClockOut:
    return _clock_out(test_clocks.create_clock(session, principal.organization_id, body.frozen_time, body.name))


@router.get("/test-clocks/{clock_id}", response_model=TestClockOut)
def get_test_clock(clock_id: str, principal: CurrentPrincipal, session: ReadSession) -> TestClockOut:
    return _clock_out(test_clocks.get_clock(session, principal.organization_id, clock_id))


@router.post("/test-clocks/{clock_id}/advance", response_model=TestClockOut)
async def advance_test_clock(
    clock_id: str, body: TestClockAdvance, principal: CurrentPrincipal, request: Request
) -> TestClockOut:
    """Move the clock forward to `frozenTime` and run everything due for its customers.

    Returns when the renewals, invoices, charges, retries, allocations, rollovers and credit
    expiries due by then are stored, each as of its own instant, and the webhook events they
    caused have had their first delivery attempt. A failed attempt is retried on the usual
    schedule in real time. A server started with webhook delivery disabled returns without
    sending, and another server process sends the events.
    """
    store: Store = request.app.state.store
    clock_out, event_ids = await run_in_threadpool(
        _advance_and_commit, store, principal.organization_id, clock_id, body.frozen_time
    )
    webhook_worker: WebhookWorker | None = request.app.state.webhook_worker
    if webhook_worker is not None:
        await webhook_worker.deliver_now(event_ids)
    return clock_out


def _advance_and_commit(
    store: Store, organization_id: str, clock_id: str, frozen_time: datetime
) -> tuple[TestClockOut, list[str]]:
    """Advance the clock in one transaction and return it with the ids of the events recorded."""
    with store.transaction() as session:
        test_clock = test_clocks.get_clock(session, organization_id, clock_id, lock=True)
        test_clocks.advance_clock(session, test_clock, frozen_time)
        return _clock_out(test_clock), events.recorded_event_ids(session)


@router.delete("/test-clocks/{clock_id}", response_model=EmptyResponse)
def delete_test_clock(clock_id: str, principal: CurrentPrincipal, session: DbSession) -> EmptyResponse:
    """Delete the clock together with its customers, as Stripe does; their orders end."""
    test_clock = test_clocks.get_clock(session, principal.organization_id, clock_id, lock=True)
    test_clocks.delete_clock(session, test_clock)
    return EmptyResponse()
