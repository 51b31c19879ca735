"""The Stripe payloads under tests/fixtures/stripe against the installed stripe library's models.

No network reaches Stripe here, so the payloads that the Stripe tests replay were written by
hand in the shape of Stripe's API reference. This check keeps them honest. Every field of every
object, down to the nested objects, must be a field that the installed stripe library (16.x, as
pyproject.toml requires) declares on the class of that object. A misspelt or invented field fails.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
import stripe
from stripe._object_classes import get_object_class
from stripe._stripe_object import StripeObject

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"


def declared_fields(model: type) -> dict[str, Any]:
    """Return the public fields a stripe model class declares, with their types."""
    fields: dict[str, Any] = {}
    for klass in reversed(model.__mro__):
        fields.update(getattr(klass, "__annotations__", {}))
    return {name: kind for name, kind in fields.items() if not name.startswith("_") and name.islower()}


def nested_model(kind: Any) -> type | None:
    """Return the stripe model class inside a field type such as Optional[Session.CustomerDetails]."""
    candidates = [kind, *typing.get_args(kind)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, StripeObject):
            return candidate
        for inner in typing.get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, StripeObject):
                return inner
    return None


def unknown_fields(value: Any, model: type | None, path: str) -> list[str]:
    """List the paths of fields in `value` that its stripe model does not declare."""
    if isinstance(value, list):
        problems = []
        for index, item in enumerate(value):
            problems += unknown_fields(item, model, f"{path}[{index}]")
        return problems
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("object"), str):
        # A resource names its own class, whatever the field that contains it declares.
        model = get_object_class("V1", value["object"])
        assert model is not StripeObject, f"{path}: stripe {stripe.VERSION} has no class for object {value['object']!r}"
    fields = declared_fields(model) if model is not None else {}
    problems = []
    for name, item in value.items():
        if not fields:
            # In a plain dict or an untyped field, such as metadata, only resources are checked.
            problems += unknown_fields(item, None, f"{path}.{name}")
            continue
        if name not in fields:
            problems.append(f"{path}.{name} (not a field of {model.__qualname__})")
            continue
        problems += unknown_fields(item, nested_model(fields[name]), f"{path}.{name}")
    return problems


FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def test_fixture_folder_not_empty():
    assert [path.name for path in FIXTURE_FILES] != []


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda path: path.stem)
def test_fixture_fields_match_stripe_models(path: Path):
    payload = json.loads(path.read_text())

    # An API error response is not a resource, but the objects inside it, such as the declined
    # PaymentIntent, are checked.
    problems = unknown_fields(payload, None, path.stem)

    assert problems == []


def test_checker_reports_invented_field():
    session = json.loads((FIXTURES / "checkout_session.json").read_text())
    session["customer_details"] = {"email": "buyer@example.com", "favourite_colour": "green"}
    session["amount_totl"] = 100

    problems = unknown_fields(session, None, "session")

    assert problems == [
        "session.customer_details.favourite_colour (not a field of Session.CustomerDetails)",
        "session.amount_totl (not a field of Session)",
    ]


def test_event_data_object_is_checked():
    event = json.loads((FIXTURES / "event_checkout_session_completed.json").read_text())
    event["data"]["object"]["paymnt_status"] = "paid"

    problems = unknown_fields(event, None, "event")

    assert problems == ["event.data.object.paymnt_status (not a field of Session)"]


def test_object_inside_error_is_checked():
    declined = json.loads((FIXTURES / "card_declined.json").read_text())
    declined["error"]["payment_intent"]["amount_recieved"] = 0

    problems = unknown_fields(declined, None, "declined")

    assert problems == ["declined.error.payment_intent.amount_recieved (not a field of PaymentIntent)"]
