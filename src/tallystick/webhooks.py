"""Signing and verification of tallystick webhooks (standard library only).

Every webhook is an HTTP POST whose JSON body is the envelope
``{"id", "event", "timestamp", "isTest", "data"}``. The ``x-webhook-signature`` header carries
two comma-separated parts, ``t=<milliseconds since the Unix epoch>,s=<signature>``, where the
signature is the base64 encoding (with ``=`` padding) of HMAC-SHA256, keyed with the
organization's signing secret, over the bytes ``"<t>.<raw body>"``.

Verify a request before trusting it, on the raw body exactly as received::

    from tallystick.webhooks import WebhookSignatureError, verify_webhook_signature

    @app.post("/webhooks/tallystick")
    async def receive(request: Request):
        body = await request.body()
        try:
            verify_webhook_signature(body, request.headers.get("x-webhook-signature"), SECRET)
        except WebhookSignatureError:
            return Response(status_code=400)
        envelope = json.loads(body)
        ...

Webhooks are delivered at least once: a receiver may see the same envelope ``id`` again and
should ignore repeats. Respond with a 2xx quickly, because anything else is retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

SIGNATURE_HEADER = "x-webhook-signature"
# A signature older than this, in seconds, is rejected, so a captured request cannot be replayed
# later. The same bound applies to timestamps in the future, to allow for clock skew.
DEFAULT_TOLERANCE_SECONDS = 300
# Digits of the longest t part accepted. 13 digits of milliseconds reach the year 2286, and a
# longer value is rejected as malformed instead of producing a huge age in the error message.
MAX_TIMESTAMP_DIGITS = 13


class WebhookSignatureError(ValueError):
    """The x-webhook-signature header is missing, malformed, too old or does not match."""


def compute_webhook_signature(payload: bytes, secret: str, timestamp_ms: int) -> str:
    """Return the base64 HMAC-SHA256 of ``"<timestamp_ms>.<payload>"`` keyed with `secret`."""
    message = f"{timestamp_ms}.".encode("ascii") + payload
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_webhook_payload(payload: bytes, secret: str, timestamp_ms: int | None = None) -> str:
    """Return the x-webhook-signature header value for `payload`, signed at `timestamp_ms`.

    `timestamp_ms` defaults to the current time in milliseconds since the Unix epoch.
    """
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    return f"t={timestamp_ms},s={compute_webhook_signature(payload, secret, timestamp_ms)}"


def verify_webhook_signature(
    payload: bytes | str,
    signature_header: str | bytes | None,
    secret: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check that `signature_header` signs `payload` with `secret`; raise WebhookSignatureError if not.

    Args:
        payload: the raw request body. Pass the bytes as received: re-encoding parsed JSON
            changes them and the signature no longer matches. A str is encoded as UTF-8.
        signature_header: the value of the x-webhook-signature header, or None when missing.
            Frameworks that hand over raw header bytes (ASGI's scope) may pass them as is.
        secret: the organization's webhook signing secret.
        tolerance_seconds: how far the signature's timestamp may be from `now`, either way.
        now: the current time in seconds since the Unix epoch; defaults to ``time.time()``.
    """
    if not signature_header:
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    if isinstance(signature_header, bytes):
        try:
            signature_header = signature_header.decode("ascii")
        except UnicodeDecodeError:
            raise WebhookSignatureError(f"the {SIGNATURE_HEADER} header is not ASCII text") from None
    if isinstance(payload, str):
        payload = payload.encode("utf-8")

    timestamp_ms, signatures = _parse_header(signature_header)

    current = time.time() if now is None else now
    age_seconds = current - timestamp_ms / 1000
    if abs(age_seconds) > tolerance_seconds:
        direction = "in the past" if age_seconds > 0 else "in the future"
        raise WebhookSignatureError(
            f"signature timestamp is {abs(age_seconds):.0f} s {direction}, more than the "
            f"{tolerance_seconds:g} s allowed"
        )

    expected = compute_webhook_signature(payload, secret, timestamp_ms).encode("ascii")
    # compare_digest takes the same time wherever the strings differ, so timing reveals nothing.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookSignatureError("signature does not match the payload and secret")


def _parse_header(header: str) -> tuple[int, list[bytes]]:
    """Split ``t=...,s=...`` into the timestamp and the signatures (``s`` may repeat)."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        # Split at the first "=" only: base64 signatures end in "=" padding.
        key, separator, value = part.strip().partition("=")
        if not separator:
            continue
        if key == "t":
            timestamp = _parse_timestamp(value)
        elif key == "s" and value:
            # A base64 signature is ASCII. compare_digest raises TypeError for non-ASCII text,
            # which a receiver would turn into a 500 instead of rejecting the request.
            if not value.isascii():
                raise WebhookSignatureError(f"invalid s part {value[:60]!r}: expected base64")
            signatures.append(value.encode("ascii"))
    if timestamp is None:
        raise WebhookSignatureError(f"no t part in {SIGNATURE_HEADER} header")
    if not signatures:
        raise WebhookSignatureError(f"no s part in {SIGNATURE_HEADER} header")
    return timestamp, signatures


def _parse_timestamp(value: str) -> int:
    # isdigit() alone accepts characters such as "²" that int() rejects.
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_TIMESTAMP_DIGITS:
        raise WebhookSignatureError(
            f"invalid t part {value[:40]!r}: expected milliseconds since the Unix epoch"
        )
    return int(value)
