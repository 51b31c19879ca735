"""Wire models of webhooks: settings per event, deliveries, attempts and low-balance thresholds."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field

from tallystick.server.schemas import PaginationOut, RequestModel, ResponseModel


class WebhookOut(ResponseModel):
    id: str
    name: str = Field(description="Webhook event name, such as billing-checkout-completed.")
    description: str
    enabled: bool
    url: str | None = None
    last_sent_at: datetime | None = Field(default=None, description="Time of the latest request.")
    last_status: str | None = Field(
        default=None, description="Outcome of the latest request: success (a 2xx) or failed."
    )


class WebhookListOut(ResponseModel):
    data: list[WebhookOut]
    signing_secret_configured: bool


class WebhookUpdate(RequestModel):
    enabled: bool | None = Field(
        default=None, description="Send this event. Enabling needs a url; null changes nothing."
    )
    url: str | None = Field(
        default=None,
        description="http(s) URL that receives the event; null clears it and disables the webhook.",
    )


class WebhookUpdateOut(WebhookOut):
    signing_secret: str | None = Field(
        default=None,
        description="The new signing secret, present only in the response that created it.",
    )


class WebhookTestOut(ResponseModel):
    success: bool = Field(description="Whether the receiver responded to the test event with a 2xx.")
    response_status: int | None = Field(
        default=None, description="Not in the Paid API. HTTP status of the response; null if none arrived."
    )
    error: str | None = Field(
        default=None, description="Not in the Paid API. Why the test failed (timeout, connection error, non-2xx)."
    )
    latency_ms: int | None = Field(default=None, description="Not in the Paid API. Milliseconds until the outcome.")


class RotateWebhookSecretOut(ResponseModel):
    signing_secret: str = Field(
        description="The new signing secret, shown only here; the previous one stops working now."
    )


class DeliveryAttemptOut(ResponseModel):
    id: str
    url: str = Field(description="The URL the request went to.")
    started_at: datetime
    response_status: int | None = Field(description="HTTP status of the response; null if none arrived.")
    latency_ms: int = Field(description="Milliseconds from sending the request to its outcome.")
    error: str | None = Field(description="Why the attempt failed (timeout, connection error, non-2xx).")
    succeeded: bool


class DeliveryOut(ResponseModel):
    id: str
    event_id: str = Field(description="The envelope's id; the same on every retry and redelivery.")
    event: str = Field(description="Webhook event name, such as billing-invoice-paid.")
    status: str = Field(description="pending, delivered, failed (retries ran out) or canceled.")
    attempt_count: int
    next_attempt_at: datetime | None = Field(description="When a pending delivery is sent next.")
    give_up_at: datetime = Field(description="A pending delivery is retried until this time.")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryDetailOut(DeliveryOut):
    data: dict[str, Any] = Field(description="The event's payload, as sent under the envelope's data.")
    attempts: list[DeliveryAttemptOut] = Field(description="Every request made, oldest first.")


class DeliveryListOut(ResponseModel):
    data: list[DeliveryOut]
    pagination: PaginationOut


class LowBalanceThresholdIn(RequestModel):
    # A JSON number arrives as an exact Decimal (see exact_json_body), never as a float.
    threshold: str | int | Decimal = Field(
        description="Credits, as a number or a decimal string such as \"100\" or \"12.5\"; must be above zero."
    )


class LowBalanceThresholdOut(ResponseModel):
    credits_currency_id: str
    threshold: str = Field(
        description="billing-credits-low fires when a customer's available balance falls from "
        "above this to this or below."
    )
    updated_at: datetime


class LowBalanceThresholdListOut(ResponseModel):
    data: list[LowBalanceThresholdOut]
