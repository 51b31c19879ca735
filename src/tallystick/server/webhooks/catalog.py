"""The webhook events: their names, the key their object is sent under, and what they mean.

Outbox event types are the webhook names themselves (see the constants in
`tallystick.server.events`), so a recorded event maps to its webhook by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from tallystick.server import events


@dataclass(frozen=True)
class WebhookEvent:
    name: str
    # The envelope sends the recorded payload as data.<payload_key>, such as data.invoice.
    payload_key: str
    description: str


WEBHOOK_EVENTS: dict[str, WebhookEvent] = {
    event.name: event
    for event in (
        WebhookEvent(events.INVOICE_CREATED, "invoice", "An invoice was created."),
        WebhookEvent(events.INVOICE_PAID, "invoice", "An invoice was paid in full."),
        WebhookEvent(events.INVOICE_POSTED, "invoice", "An invoice was posted to the customer."),
        WebhookEvent(events.CHECKOUT_CREATED, "checkout", "A checkout session was created."),
        WebhookEvent(
            events.CHECKOUT_COMPLETED, "checkout", "A buyer completed a checkout session."
        ),
        WebhookEvent(
            events.CHECKOUT_EXPIRED, "checkout", "A checkout session expired unpaid."
        ),
        WebhookEvent(events.PAYMENT_SUCCEEDED, "payment", "A payment succeeded."),
        WebhookEvent(events.PAYMENT_FAILED, "payment", "A payment failed."),
        WebhookEvent(
            events.CREDITS_DEPLETED,
            "credits",
            "A customer's available balance in a credit currency reached zero.",
        ),
        WebhookEvent(
            events.OVERAGE_INCURRED,
            "overage",
            "Consumption was not covered by credits and became pending consumption.",
        ),
        WebhookEvent(
            events.CREDIT_CAP_REACHED,
            "credits",
            "Part of the Paid API; tallystick has no credit caps and never sends it.",
        ),
        WebhookEvent(
            events.CREDITS_LOW,
            "credits",
            "A customer's available balance in a credit currency fell to or below the "
            "low-balance threshold set for that currency.",
        ),
    )
}


def find_webhook_event(name: str) -> WebhookEvent | None:
    return WEBHOOK_EVENTS.get(name)
