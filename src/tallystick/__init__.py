"""tallystick: billing for AI products.

Importing the package loads only the SDK, which depends on httpx and OpenTelemetry. The server,
CLI and store live in ``tallystick.server`` and ``tallystick.cli`` and need the ``[server]`` extra.
"""

from tallystick._version import __version__
from tallystick.async_client import AsyncClient
from tallystick.balance import Hold, available_credits, has_credits, hold_credits, reserve_credits
from tallystick.client import Client
from tallystick.errors import ApiConnectionError, ApiError, TallystickError
from tallystick.instrumentation import autoinstrument
from tallystick.signals import SignalReceipt, asignal, signal
from tallystick.tracing import generate_tracing_token, initialize_tracing, tracing
from tallystick.webhooks import WebhookSignatureError, verify_webhook_signature

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "AsyncClient",
    "Client",
    "Hold",
    "SignalReceipt",
    "TallystickError",
    "WebhookSignatureError",
    "__version__",
    "asignal",
    "autoinstrument",
    "available_credits",
    "generate_tracing_token",
    "has_credits",
    "hold_credits",
    "initialize_tracing",
    "reserve_credits",
    "signal",
    "tracing",
    "verify_webhook_signature",
]
