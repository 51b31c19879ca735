"""Delivered value for the demo: a value model that turns chat signals into time and money saved.

Each `chat_message` signal carries `minutes_saved` with its `minutes_saved_unit` (the guide's
duration convention). Time saved is read from those fields; money saved prices that time at a
support agent's hourly rate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tallystick import Client

# A support agent's cost per hour, in cents.
HOURLY_RATE_CENTS = 6000
_EVENT = "chat_message"


def _calculation(unit: dict[str, Any], formula_id: str) -> list[dict[str, Any]]:
    return [
        {
            "effectiveFrom": "2020-01-01T00:00:00Z",
            "calculation": {
                "unit": unit,
                "formulaIds": [formula_id],
                "signalEventNames": [_EVENT],
                "segmentTableIds": [],
                "overrideIds": [],
            },
        }
    ]


VALUE_MODEL: dict[str, Any] = {
    "currency": "USD",
    "valueTypes": [
        {
            "slug": "time_saved",
            "name": "Time saved",
            "calculationTimeline": _calculation({"type": "duration", "durationUnit": "minutes"}, "chat_time"),
        },
        {
            "slug": "money_saved",
            "name": "Money saved",
            "calculationTimeline": _calculation({"type": "monetary"}, "chat_money"),
        },
    ],
    "formulas": [
        {
            "id": "chat_time",
            "valueTypeSlug": "time_saved",
            "label": "Support time saved",
            "variables": [],
            "expression": "amount",
            "calculation": "direct_amount",
        },
        {
            "id": "chat_money",
            "valueTypeSlug": "money_saved",
            "label": "Support cost saved",
            "variables": [],
            "expression": "time_saved * hourly_rate",
            "calculation": "money_saved",
        },
    ],
    "signals": [
        {
            "eventName": _EVENT,
            "label": "Chat message",
            "formulaId": "chat_time",
            "variableMapping": {"amount": "minutes_saved"},
        },
        {
            "eventName": _EVENT,
            "label": "Chat message",
            "formulaId": "chat_money",
            "variableMapping": {"time_saved": "minutes_saved"},
            "defaults": {"hourly_rate": HOURLY_RATE_CENTS},
        },
    ],
}


def configure_value_model(api: Client) -> None:
    api.put("/value-models/", {"content": VALUE_MODEL})


def publish_receipt(api: Client, customer: str, start: datetime) -> dict[str, Any]:
    """Sync, publish and return the customer's value receipt for the period in progress.

    The period runs from `start` to a day from now; `sync` builds a receipt for a period that
    has not ended yet, where `create` needs one in the past.
    """
    end = datetime.now(start.tzinfo) + timedelta(days=1)
    created = api.post(
        "/value-receipts/sync",
        {"externalCustomerId": customer, "startDate": start.isoformat(), "endDate": end.isoformat()},
    )
    api.post(f"/value-receipts/{created['id']}/publish", {})
    return api.get(f"/value-receipts/{created['id']}")
