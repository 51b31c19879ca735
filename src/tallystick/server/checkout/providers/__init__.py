"""Payment providers: how the hosted checkout page takes a payment.

Every provider implements `PaymentProvider`. The page renders the provider's `form_template`
inside its payment form. On submit, `read_form` turns the posted fields into provider-specific
payment details or per-field errors, and `collect` charges those details. A provider that confirms
payments later (through its own webhook, as Stripe does) reports the same `PaymentSucceeded`
to checkout completion, keyed by its payment id, so a repeated report completes nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from tallystick.server.models import PaymentMethod


@dataclass(frozen=True)
class PaymentRequest:
    """One charge: `amount` in minor units of `currency`, identified by `idempotency_key`."""

    organization_id: str
    checkout_id: str | None
    amount: int
    currency: str
    description: str
    idempotency_key: str


@dataclass(frozen=True)
class SavedMethod:
    """A reusable payment method as the provider reports it; brand and last four digits only."""

    provider_method_id: str
    brand: str | None
    last4: str | None


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


PaymentOutcome = PaymentSucceeded | PaymentDeclined


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


def get_provider(name: str) -> PaymentProvider:
    """Return the provider registered under `name`."""
    from tallystick.server.checkout.providers.testmode import TestModeProvider

    providers: dict[str, PaymentProvider] = {TestModeProvider.name: TestModeProvider()}
    return providers[name]


def provider_for_organization(session: Session, organization_id: str) -> str:
    """Return the name of the payment provider the organization's checkouts use.

    TODO: read the organization's choice once a second provider (Stripe) exists; until then
    every organization uses the embedded test provider.
    """
    return DEFAULT_PROVIDER
