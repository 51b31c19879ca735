"""Stripe's webhook: `POST /webhooks/stripe/{organization_id}` completes checkouts paid on Stripe.

Each organization registers this URL (with its own id) as a Stripe webhook endpoint for the
`checkout.session.completed` and `checkout.session.async_payment_succeeded` events, and stores
the endpoint's signing secret in its payment settings. The stripe library's
`Webhook.construct_event` verifies every request: an HMAC-SHA256 of the body under that secret,
with a timestamp at most 5 minutes old. Any other request is rejected with 400 before it is read.

A completed session whose payment is not yet `paid` (a delayed payment method) is
acknowledged and completed later by its async_payment_succeeded event. Stripe retries an
event until it gets a 2xx, and completion is keyed by the PaymentIntent id, so a repeated
event completes nothing twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tallystick.server import clock
from tallystick.server.checkout.completion import (
    Buyer,
    Completed,
    complete_provider_payment,
)
from tallystick.server.checkout.providers import PaymentSucceeded, payment_settings
from tallystick.server.checkout.providers.stripe import StripeProvider
from tallystick.server.db import Store

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

COMPLETING_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


def _reject(message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=400)


@router.post("/webhooks/stripe/{organization_id}")
async def receive_stripe_event(organization_id: str, request: Request) -> JSONResponse:
    payload = await request.body()
    signature = request.headers.get("stripe-signature", "")
    # Database and Stripe calls are synchronous: run them off the event loop.
    return await run_in_threadpool(handle_stripe_event, request.app.state.store, organization_id, payload, signature)


def handle_stripe_event(store: Store, organization_id: str, payload: bytes, signature: str) -> JSONResponse:
    """Verify one Stripe event and complete the checkout it reports paid."""
    with store.read_sessions() as session:
        settings = payment_settings(session, organization_id)
        secret = settings.stripe_webhook_secret if settings is not None else None
        secret_key = settings.stripe_secret_key if settings is not None else None
    if not secret or not secret_key:
        return _reject("No Stripe webhook secret is configured for this organization", "stripe_not_configured")

    try:
        event = stripe.Webhook.construct_event(payload.decode("utf-8"), signature, secret)
    except (ValueError, UnicodeDecodeError):
        return _reject("Invalid Stripe event: the body is not a JSON event", "invalid_json")
    except stripe.SignatureVerificationError:
        log.warning("stripe.webhook_signature_invalid", extra={"organization_id": organization_id})
        return _reject("Invalid Stripe-Signature header for this endpoint's signing secret", "invalid_signature")

    if event.type not in COMPLETING_EVENTS:
        return JSONResponse({"received": True, "handled": False})
    # The verified body, read as plain JSON.
    checkout_session: dict[str, Any] = json.loads(payload)["data"]["object"]
    if checkout_session.get("payment_status") != "paid":
        return JSONResponse({"received": True, "handled": False})
    metadata: dict[str, str] = checkout_session.get("metadata") or {}
    checkout_id = metadata.get("tallystick_checkout_id") or checkout_session.get("client_reference_id")
    payment_intent_id = str(checkout_session.get("payment_intent") or "")
    if not checkout_id or "tallystick_offer" not in metadata or not payment_intent_id:
        log.warning("stripe.webhook_foreign_session", extra={"organization_id": organization_id, "event_id": event.id})
        return JSONResponse({"received": True, "handled": False})

    # Stripe is asked for the saved card before the database transaction starts.
    try:
        method = StripeProvider(secret_key).paid_session_method(payment_intent_id, checkout_session.get("customer"))
    except stripe.StripeError as error:
        log.error("stripe.webhook_lookup_failed", extra={"organization_id": organization_id, "request_id": error.request_id})
        return JSONResponse({"error": "Stripe could not be reached; send the event again", "code": "retry"}, status_code=503)

    with store.transaction() as session:
        result = complete_provider_payment(
            session,
            organization_id=organization_id,
            checkout_id=checkout_id,
            attempt=metadata.get("tallystick_attempt", event.id),
            offer_key=metadata["tallystick_offer"],
            currency=metadata.get("tallystick_currency", str(checkout_session.get("currency", "")).upper()),
            buyer=_buyer(metadata, checkout_session),
            payment=PaymentSucceeded(provider="stripe", provider_payment_id=payment_intent_id, method=method),
            now=clock.now(),
        )
        completed = isinstance(result, Completed)
    log.info(
        "stripe.webhook_handled",
        extra={"organization_id": organization_id, "event_id": event.id, "checkout_id": checkout_id, "completed": completed},
    )
    return JSONResponse({"received": True, "handled": completed})


def _buyer(metadata: dict[str, str], checkout_session: dict[str, Any]) -> Buyer:
    """Return the buyer's details from our form (kept in the session's metadata), falling back
    to what Stripe's page collected."""
    details = checkout_session.get("customer_details") or {}
    address = None
    if metadata.get("tallystick_buyer_address"):
        try:
            address = json.loads(metadata["tallystick_buyer_address"])
        except ValueError:
            address = None
    return Buyer(
        name=metadata.get("tallystick_buyer_name") or details.get("name"),
        email=metadata.get("tallystick_buyer_email") or details.get("email"),
        phone=metadata.get("tallystick_buyer_phone") or details.get("phone"),
        address=address if isinstance(address, dict) else None,
    )
