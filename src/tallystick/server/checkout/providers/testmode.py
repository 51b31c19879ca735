"""The embedded `test` provider: a card form that responds like a card network's test mode.

No money moves and no card data leaves the server. The card number is checked with the Luhn
algorithm and must be one of the test cards below; the expiry must not be in the past. Only
the brand and last four digits are kept, in the saved payment method.

Card 4000 0000 0000 0341 pays the checkout, but every later charge of the saved card (such as
a renewal) is declined, to try failed renewals and their retries.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tallystick.server import clock
from tallystick.server.checkout.providers import (
    PaymentDeclined,
    PaymentOutcome,
    PaymentRequest,
    PaymentSucceeded,
    SavedMethod,
)
from tallystick.server.models import PaymentMethod

# Test card numbers and how the test provider responds to each: (brand, decline code or None).
# They are the numbers card processors publish for test mode.
TEST_CARDS: dict[str, tuple[str, str | None]] = {
    "4242424242424242": ("visa", None),
    "5555555555554444": ("mastercard", None),
    "378282246310005": ("amex", None),
    "4000000000000002": ("visa", "card_declined"),
    "4000000000009995": ("visa", "insufficient_funds"),
    "4000000000000341": ("visa", None),
}
# The test card whose saved payment method declines every charge after the first payment.
RENEWAL_DECLINE_CARD = "4000000000000341"
_RENEWAL_DECLINE_PREFIX = "testpm_declines"
DECLINE_MESSAGES = {
    "card_declined": "Your card was declined. Try another card.",
    "insufficient_funds": "Your card has insufficient funds. Try another card.",
    "test_mode_live_card": (
        "Your card was declined: this checkout is in test mode and accepts only test cards, "
        "such as 4242 4242 4242 4242."
    ),
}

_EXPIRY = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")


@dataclass(frozen=True)
class CardDetails:
    """A card as typed into the form. Kept in memory for one request, never stored."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str

    @property
    def last4(self) -> str:
        return self.number[-4:]


def luhn_valid(number: str) -> bool:
    """Return whether a string of digits passes the Luhn checksum (ISO/IEC 7812-1)."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_brand(number: str) -> str | None:
    """Return the brand a card number's prefix names (IIN ranges), or None when unknown."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if number[:2].isdigit() and 51 <= int(number[:2]) <= 55:
        return "mastercard"
    if number[:4].isdigit() and 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    return None


def _stable_id(prefix: str, key: str) -> str:
    """Derive an id from `key`, so a retry of the same request gets the same id."""
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class TestModeProvider:
    """The `test` payment provider."""

    __test__ = False  # not a pytest test class, despite its name
    name = "test"
    form_template = "checkout/providers/test.html"

    def read_form(self, form: Mapping[str, str]) -> tuple[CardDetails | None, dict[str, str]]:
        errors: dict[str, str] = {}

        number = re.sub(r"[\s-]", "", form.get("card_number", ""))
        if not number:
            errors["card_number"] = "Enter your card number."
        elif not number.isdigit() or not 12 <= len(number) <= 19 or not luhn_valid(number):
            errors["card_number"] = "Your card number is invalid. Check it and try again."

        expiry = _EXPIRY.match(form.get("card_expiry", ""))
        month = year = 0
        if expiry is None:
            errors["card_expiry"] = "Enter the expiry date as MM / YY."
        else:
            month, year = int(expiry.group(1)), int(expiry.group(2))
            year = year + 2000 if year < 100 else year
            now = clock.now()
            if not 1 <= month <= 12:
                errors["card_expiry"] = "The expiry month must be between 01 and 12."
            elif (year, month) < (now.year, now.month):
                # A card is valid through the last day of its expiry month.
                errors["card_expiry"] = "Your card's expiry date is in the past."

        cvc = form.get("card_cvc", "").strip()
        cvc_length = 4 if card_brand(number) == "amex" else 3
        if not (cvc.isdigit() and len(cvc) == cvc_length):
            errors["card_cvc"] = f"Enter the {cvc_length}-digit security code from your card."

        if errors:
            return None, errors
        return CardDetails(number=number, exp_month=month, exp_year=year, cvc=cvc), {}

    def collect(self, request: PaymentRequest, details: CardDetails) -> PaymentOutcome:
        brand, decline_code = TEST_CARDS.get(details.number, (card_brand(details.number), "test_mode_live_card"))
        if decline_code is not None:
            return PaymentDeclined(
                code=decline_code,
                message=DECLINE_MESSAGES[decline_code],
                brand=brand,
                last4=details.last4,
            )
        method_prefix = _RENEWAL_DECLINE_PREFIX if details.number == RENEWAL_DECLINE_CARD else "testpm"
        return PaymentSucceeded(
            provider=self.name,
            provider_payment_id=_stable_id("testpay", request.idempotency_key),
            method=SavedMethod(
                provider_method_id=_stable_id(method_prefix, request.idempotency_key),
                brand=brand,
                last4=details.last4,
            ),
        )

    def charge_saved_method(self, request: PaymentRequest, method: PaymentMethod) -> PaymentOutcome:
        if method.provider_method_id.startswith(_RENEWAL_DECLINE_PREFIX):
            return PaymentDeclined(
                code="card_declined",
                message=DECLINE_MESSAGES["card_declined"],
                brand=method.brand,
                last4=method.last4,
            )
        return PaymentSucceeded(
            provider=self.name,
            provider_payment_id=_stable_id("testpay", request.idempotency_key),
            method=SavedMethod(method.provider_method_id, method.brand, method.last4),
        )
