"""Encryption at rest of the secrets the server must read back, such as Stripe keys.

Values of `EncryptedString` columns are stored as ``fernet:`` followed by a Fernet token
(AES-128-CBC with HMAC-SHA256, from the cryptography package) when TALLYSTICK_ENCRYPTION_KEYS is
set, and in clear when it is not. Reads accept both forms, so setting the keys on an existing
database works at once, and `tallystick secrets encrypt` rewrites the rows stored in clear (or
under an older key) with the first key.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from tallystick.server.settings import get_settings

PREFIX = "fernet:"


class EncryptionKeyError(RuntimeError):
    """The configured keys are invalid, or none of them decrypts a stored value."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def key_list_problem(keys_text: str) -> str | None:
    """Describe what is wrong with a TALLYSTICK_ENCRYPTION_KEYS value, or return None."""
    for position, key in enumerate(_split(keys_text), start=1):
        try:
            Fernet(key)
        except ValueError:
            return (
                f"key {position} is not a Fernet key (urlsafe base64 of 32 bytes); list keys separated "
                "by commas and generate them with `tallystick secrets generate-key`"
            )
    return None


def _split(keys_text: str) -> list[str]:
    return [key.strip() for key in keys_text.split(",") if key.strip()]


@lru_cache(maxsize=4)
def _fernet_for(keys_text: str) -> MultiFernet:
    # Settings validation rejects malformed keys first, so this only guards direct callers.
    problem = key_list_problem(keys_text)
    if problem is not None:
        raise EncryptionKeyError(f"Invalid TALLYSTICK_ENCRYPTION_KEYS: {problem}")
    return MultiFernet([Fernet(key) for key in _split(keys_text)])


def configured_fernet() -> MultiFernet | None:
    """Return the cipher of TALLYSTICK_ENCRYPTION_KEYS, or None when it is unset or empty."""
    keys = get_settings().encryption_keys
    if keys is None or not keys.get_secret_value().strip():
        return None
    return _fernet_for(keys.get_secret_value())


def encrypt(value: str) -> str:
    """Return `value` as it is stored: encrypted with the first key, or unchanged without keys."""
    fernet = configured_fernet()
    if fernet is None:
        return value
    return PREFIX + fernet.encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(stored: str) -> str:
    """Return the secret in a stored value, encrypted or in clear."""
    if not stored.startswith(PREFIX):
        return stored
    fernet = configured_fernet()
    if fernet is None:
        raise EncryptionKeyError(
            "a stored secret is encrypted but TALLYSTICK_ENCRYPTION_KEYS is not set; set it to the key it was encrypted with"
        )
    try:
        return fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise EncryptionKeyError(
            "none of the keys in TALLYSTICK_ENCRYPTION_KEYS decrypts a stored secret; keep the old key in the "
            "list until `tallystick secrets encrypt` has rewritten every secret with the new one"
        ) from None


class EncryptedString(TypeDecorator[str]):
    """A text column whose values are encrypted at rest when encryption keys are configured."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else encrypt(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else decrypt(value)
