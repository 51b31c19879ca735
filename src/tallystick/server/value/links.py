"""Signed, expiring links to private value receipts.

A link is the receipt's public URL plus ``?access=<token>``, where the token names the receipt
and an expiry time and is signed with the server secret (HMAC-SHA256 through itsdangerous).
It opens the receipt whether or not the receipt is published, until it expires. Changing the
server secret invalidates every link.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

# Separates these tokens from anything else signed with the same secret.
_SALT = "tallystick.value-receipt-link"
DEFAULT_LINK_SECONDS = 3600
MAX_LINK_SECONDS = 30 * 86400


@dataclass(frozen=True)
class ReceiptAccess:
    receipt_id: str
    expires_at: datetime


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def sign_access(secret: str, receipt_id: str, expires_at: datetime) -> str:
    """Return a token granting access to one receipt until `expires_at` (whole seconds)."""
    return _serializer(secret).dumps({"receipt": receipt_id, "expires": int(expires_at.timestamp())})


def read_access(secret: str, token: str, at: datetime) -> ReceiptAccess | None:
    """Return what a token grants, or None when its signature is wrong or it has expired."""
    try:
        payload = _serializer(secret).loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("receipt"), str):
        return None
    expires = payload.get("expires")
    if not isinstance(expires, int):
        return None
    expires_at = datetime.fromtimestamp(expires, UTC)
    if expires_at <= at:
        return None
    return ReceiptAccess(receipt_id=payload["receipt"], expires_at=expires_at)


def link_expiry(at: datetime, seconds: int | None) -> datetime:
    """Return when a link made at `at` expires; raise ValueError for a lifetime out of range."""
    lifetime = DEFAULT_LINK_SECONDS if seconds is None else seconds
    if not 60 <= lifetime <= MAX_LINK_SECONDS:
        raise ValueError(f"must be between 60 and {MAX_LINK_SECONDS} seconds")
    return at + timedelta(seconds=lifetime)
