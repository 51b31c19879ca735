"""The hosted payment form: its anti-forgery token and the buyer fields it posts.

The token is signed with the server's secret key (itsdangerous, HMAC-SHA256 over the payload and
a timestamp). It binds one rendering of the form to the checkout, to the browser that loaded
it (through a random cookie sent only on same-site requests) and to an `attempt` id that makes
a double submission pay once. Another site therefore cannot post the form for a buyer.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from tallystick.server import clock
from tallystick.server.checkout.completion import Buyer
from tallystick.server.customers.schemas import email_problem
from tallystick.server.hardening import has_unstorable_characters

# Name of the cookie that identifies the browser a form was rendered for.
BROWSER_COOKIE = "tallystick_checkout_browser"
# How long a rendered form can be submitted, in seconds.
FORM_TOKEN_MAX_AGE_SECONDS = 2 * 60 * 60
_SALT = "tallystick.checkout-form"

_PHONE = re.compile(r"^\+?[0-9 ().-]{5,32}$")
# Form fields of the billing address, and the wire billing address key each one fills.
ADDRESS_FIELDS = {
    "address_line1": "line1",
    "address_line2": "line2",
    "address_city": "city",
    "address_state": "state",
    "address_postal_code": "zipCode",
    "address_country": "country",
}
_REQUIRED_ADDRESS_FIELDS = ("address_line1", "address_city", "address_postal_code", "address_country")
_MAX_FIELD_LENGTH = 500


class _ClockTimestampSigner(TimestampSigner):
    """A timestamp signer that reads the server's clock, so tests that pin time pin it too."""

    def get_timestamp(self) -> int:
        return int(clock.now().timestamp())


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret,
        salt=_SALT,
        signer=_ClockTimestampSigner,
        signer_kwargs={"digest_method": hashlib.sha256},
    )


def new_browser_id() -> str:
    return secrets.token_urlsafe(18)


def issue_form_token(secret: str, checkout_id: str, browser_id: str) -> str:
    """Return a token for one rendering of the checkout's form, with a fresh attempt id."""
    payload = {"checkout": checkout_id, "browser": browser_id, "attempt": secrets.token_urlsafe(12)}
    return _serializer(secret).dumps(payload)


def read_form_token(secret: str, token: str, checkout_id: str, browser_id: str | None) -> str | None:
    """Return the token's attempt id, or None if it is forged, stale or for another checkout."""
    if not token or not browser_id:
        return None
    try:
        payload = _serializer(secret).loads(token, max_age=FORM_TOKEN_MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(payload, dict):
        return None
    if payload.get("checkout") != checkout_id:
        return None
    if not secrets.compare_digest(str(payload.get("browser", "")), browser_id):
        return None
    attempt = payload.get("attempt")
    return attempt if isinstance(attempt, str) and attempt else None


@dataclass(frozen=True)
class BuyerForm:
    buyer: Buyer
    errors: dict[str, str]


def read_buyer(form: Mapping[str, str], *, ask_name_email: bool, ask_phone: bool, ask_address: bool) -> BuyerForm:
    """Read and check the buyer fields the page asked for; errors are keyed by form field."""
    errors: dict[str, str] = {}
    values = {key: form.get(key, "").strip() for key in ("name", "email", "phone", *ADDRESS_FIELDS)}
    for key, value in values.items():
        if len(value) > _MAX_FIELD_LENGTH:
            errors[key] = f"Use at most {_MAX_FIELD_LENGTH} characters."
        elif has_unstorable_characters(value):
            errors[key] = "Remove the invalid character from this field."

    if ask_name_email:
        if not values["name"]:
            errors.setdefault("name", "Enter your name.")
        if not values["email"]:
            errors.setdefault("email", "Enter your email address.")
        # The API's own check, so that the customer the checkout creates has an address that
        # the customers API accepts too.
        elif email_problem(values["email"]) is not None:
            errors.setdefault("email", "Enter an email address such as name@example.com.")
    if ask_phone:
        if not values["phone"]:
            errors.setdefault("phone", "Enter your phone number.")
        elif not _PHONE.match(values["phone"]):
            errors.setdefault("phone", "Enter a phone number with digits only, such as +1 415 555 0100.")
    if ask_address:
        for key in _REQUIRED_ADDRESS_FIELDS:
            if not values[key]:
                errors.setdefault(key, "This field is required.")

    address = None
    if ask_address:
        address = {wire: values[key] for key, wire in ADDRESS_FIELDS.items() if values[key]}
    buyer = Buyer(
        name=(values["name"] or None) if ask_name_email else None,
        email=(values["email"] or None) if ask_name_email else None,
        phone=(values["phone"] or None) if ask_phone else None,
        address=address,
    )
    return BuyerForm(buyer=buyer, errors=errors)
