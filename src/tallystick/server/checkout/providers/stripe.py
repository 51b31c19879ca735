"""The `stripe` provider: payment on a Stripe Checkout page, renewals on the saved card.

On the hosted page the buyer picks a plan and gives their details. Submitting the page creates
a Stripe Checkout Session in payment mode for the amount due (the first invoice, or an
upgrade's prorated difference) and redirects the buyer to Stripe. Stripe saves the card on a
Stripe customer for off-session use. The checkout completes when Stripe's signed
`checkout.session.completed` event arrives (see `stripe_webhooks`), never on the buyer's
return, which anyone could fake. Renewals create and confirm a PaymentIntent off session on
the saved card, keyed by the invoice attempt's idempotency key.

All calls go through the official `stripe` library (a `StripeClient` per organization, with
its secret key), to `Settings.stripe_api_base`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import stripe

from tallystick.server.checkout.providers import (
    PaymentDeclined,
    PaymentOutcome,
    PaymentRedirect,
    PaymentRequest,
    PaymentSucceeded,
    PaymentUnanswered,
    SavedMethod,
)
from tallystick.server.models import PaymentMethod
from tallystick.server.settings import get_settings

log = logging.getLogger(__name__)

# Stripe errors that leave the outcome of a request unknown, so the retry reuses the key.
# Stripe raises IdempotencyError while another request with the same key is still running,
# and that request's outcome is unknown too.
_UNANSWERED_ERRORS = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError, stripe.IdempotencyError)
DECLINE_MESSAGE = "Your card was declined."


def stripe_client(secret_key: str) -> stripe.StripeClient:
    settings = get_settings()
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": settings.stripe_api_base},
        http_client=stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds, allow_sync_methods=True),
        max_network_retries=2,
    )


class StripeProvider:
    """The `stripe` payment provider of one organization."""

    name = "stripe"
    form_template = "checkout/providers/stripe.html"

    def __init__(self, secret_key: str) -> None:
        self.client = stripe_client(secret_key)

    def read_form(self, form: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
        # Card details are typed on Stripe's page, never on ours.
        return None, {}

    def collect(self, request: PaymentRequest, details: Any) -> PaymentOutcome:
        """Create a Checkout Session for `request` and send the buyer there."""
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount,
                        "product_data": {"name": request.description[:250]},
                    },
                    "quantity": 1,
                }
            ],
            "customer_creation": "always",
            "payment_intent_data": {
                "setup_future_usage": "off_session",
                "description": request.description[:250],
                "metadata": request.metadata,
            },
            "metadata": request.metadata,
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
        }
        if request.checkout_id is not None:
            params["client_reference_id"] = request.checkout_id
        if request.customer_email:
            params["customer_email"] = request.customer_email
        try:
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as error:
            log.error(
                "stripe.checkout_session_failed",
                extra={"checkout_id": request.checkout_id, "error_type": type(error).__name__, "request_id": error.request_id},
            )
            return PaymentUnanswered(message=error.user_message or "Stripe did not accept the payment request.")
        log.info("stripe.checkout_session_created", extra={"checkout_id": request.checkout_id, "stripe_session_id": session.id})
        return PaymentRedirect(url=session.url or "")

    def charge_saved_method(self, request: PaymentRequest, method: PaymentMethod) -> PaymentOutcome:
        """Charge the saved card off session with a PaymentIntent confirmed at once."""
        params: dict[str, Any] = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "customer": method.provider_customer_id,
            "payment_method": method.provider_method_id,
            "off_session": True,
            "confirm": True,
            "description": request.description[:250],
            "metadata": request.metadata,
        }
        try:
            intent = self.client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.CardError as error:
            return PaymentDeclined(
                code=error.code or "card_declined",
                message=error.user_message or DECLINE_MESSAGE,
                brand=method.brand,
                last4=method.last4,
            )
        except _UNANSWERED_ERRORS as error:
            log.warning("stripe.charge_unanswered", extra={"error_type": type(error).__name__, "request_id": error.request_id})
            return PaymentUnanswered(message=str(error.user_message or type(error).__name__))
        except stripe.StripeError as error:
            log.error("stripe.charge_failed", extra={"error_type": type(error).__name__, "request_id": error.request_id})
            return PaymentDeclined(code=error.code or "stripe_error", message=error.user_message or "Stripe rejected the charge.")

        if intent.status == "succeeded":
            return PaymentSucceeded(
                provider=self.name,
                provider_payment_id=intent.id,
                method=SavedMethod(method.provider_method_id, method.brand, method.last4, method.provider_customer_id),
            )
        if intent.status == "processing":
            return PaymentUnanswered(message="Stripe is still processing the payment.")
        # requires_action (the bank wants the cardholder present) or requires_payment_method.
        return PaymentDeclined(code=intent.status, message=DECLINE_MESSAGE, brand=method.brand, last4=method.last4)

    def paid_session_method(self, payment_intent_id: str, stripe_customer_id: str | None) -> SavedMethod | None:
        """Return the card a Checkout Session's PaymentIntent saved, for later renewals.

        Raises stripe.StripeError when Stripe cannot be asked; the webhook then fails and
        Stripe sends it again.
        """
        intent = self.client.v1.payment_intents.retrieve(payment_intent_id, params={"expand": ["payment_method"]})
        payment_method = intent.payment_method
        if payment_method is None or isinstance(payment_method, str):
            return None
        card = getattr(payment_method, "card", None)
        return SavedMethod(
            provider_method_id=payment_method.id,
            brand=getattr(card, "brand", None),
            last4=getattr(card, "last4", None),
            provider_customer_id=stripe_customer_id or _customer_id(intent.customer),
        )


def _customer_id(customer: Any) -> str | None:
    if customer is None or isinstance(customer, str):
        return customer
    return str(customer.id)
