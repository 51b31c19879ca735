"""Payment providers: how the hosted checkout page takes a payment.

Every provider implements `PaymentProvider`. The page renders the provider's `form_template`
inside its payment form. On submit, `read_form` turns the posted fields into provider-specific
payment details or per-field errors, and `collect` charges those details. When the buyer pays
on the provider's own page (Stripe Checkout), `collect` returns a `PaymentRedirect`. The
provider's webhook later reports the same `PaymentSucceeded`, keyed by its payment id, so a
repeated report completes nothing twice.

Each organization picks its provider in its `PaymentSettings` row; without one it uses the
embedded `test` provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from tallystick.server.models import PaymentMethod, PaymentSettings


@dataclass(frozen=True)
class PaymentRequest:
    """One charge: `amount` in minor units of `currency`, identified by `idempotency_key`.

    `metadata` travels with the charge to the provider (Stripe keeps it on its objects and
    sends it back in webhooks). `success_url` and `cancel_url` are where a provider's own
    payment page sends the buyer afterwards; `customer_email` prefills that page.
    """

    organization_id: str
    checkout_id: str | None
    amount: int
    currency: str
    description: str
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)
    success_url: str | None = None
    cancel_url: str | None = None
    customer_email: str | None = None


@dataclass(frozen=True)
class SavedMethod:
    """A reusable payment method as the provider reports it; brand and last four digits only.

    `provider_customer_id` is the provider's customer that owns the method, for providers that
    charge saved methods through a customer (Stripe).
    """

    provider_method_id: str
    brand: str | None
    last4: str | None
    provider_customer_id: str | None = None


@dataclass(frozen=True)
class PaymentSucceeded:
    provider: str
    provider_payment_id: str
    method: SavedMethod | None


@dataclass(frozen=True)
class PaymentDeclined:
    """The provider refused the charge; `message` is safe to show to the buyer."""

    code: str
    message: str
    brand: str | None = None
    last4: str | None = None


@dataclass(frozen=True)
class PaymentRedirect:
    """The buyer pays on the provider's page at `url`; the provider reports the payment later."""

    url: str


@dataclass(frozen=True)
class PaymentUnanswered:
    """The provider returned no final result (unreachable, timed out, failed on its side).

    The charge may or may not have happened, so a retry must reuse the same idempotency key.
    """

    message: str


PaymentOutcome = PaymentSucceeded | PaymentDeclined | PaymentRedirect | PaymentUnanswered


class PaymentProvider(Protocol):
    name: str
    # Jinja template, under the web templates folder, with this provider's payment fields.
    form_template: str

    def read_form(self, form: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
        """Return (payment details, {}) or (None, {form field: error message})."""
        ...

    def collect(self, request: PaymentRequest, details: Any) -> PaymentOutcome:
        """Charge `details` once for `request`; a retry with the same key must not charge twice."""
        ...

    def charge_saved_method(self, request: PaymentRequest, method: PaymentMethod) -> PaymentOutcome:
        """Charge a payment method saved by an earlier `collect`, such as for a renewal."""
        ...


DEFAULT_PROVIDER = "test"
PROVIDER_NAMES = ("test", "stripe")


class ProviderNotConfigured(Exception):
    """The organization's provider lacks the credentials it needs; the message names them."""


def get_provider(name: str, payment_settings: PaymentSettings | None = None) -> PaymentProvider:
    """Return the provider registered under `name`, set up with the organization's settings.

    Raises ProviderNotConfigured when `name` is stripe and the settings hold no secret key.
    """
    if name == "stripe":
        from tallystick.server.checkout.providers.stripe import StripeProvider

        if payment_settings is None or not payment_settings.stripe_secret_key:
            raise ProviderNotConfigured("the organization has no Stripe secret key; set it in its payment settings")
        return StripeProvider(payment_settings.stripe_secret_key)

    from tallystick.server.checkout.providers.testmode import TestModeProvider

    if name != TestModeProvider.name:
        raise KeyError(f"unknown payment provider {name!r}")
    return TestModeProvider()


def payment_settings(session: Session, organization_id: str) -> PaymentSettings | None:
    return session.get(PaymentSettings, organization_id)


def provider_for(session: Session, organization_id: str, name: str) -> PaymentProvider:
    """Return provider `name` set up with the organization's credentials."""
    return get_provider(name, payment_settings(session, organization_id))


def provider_for_organization(session: Session, organization_id: str) -> str:
    """Return the name of the payment provider the organization's new checkouts use."""
    settings = payment_settings(session, organization_id)
    return settings.provider if settings is not None else DEFAULT_PROVIDER
