"""Operator accounts: creation, password hashing and sign-in checks.

Passwords are hashed with Argon2id through argon2-cffi's `PasswordHasher`, with the library's
default parameters (the RFC 9106 low-memory profile in argon2-cffi 23 and later). A hash made
with older parameters is replaced at the next successful sign-in.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.ids import new_id
from tallystick.server.models import Operator

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class OperatorError(ValueError):
    """An operator account cannot be created as requested; the message gives the reason."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


def generate_password() -> str:
    """Return a random password of 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


def create_operator(session: Session, *, organization_id: str, email: str, password: str) -> Operator:
    """Create an operator of the organization; raise OperatorError for a bad email or password."""
    email = normalize_email(email)
    if not _EMAIL.match(email) or len(email) > 320:
        raise OperatorError(f"'{email}' is not an email address")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise OperatorError(
            f"the password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    if find_operator_by_email(session, email) is not None:
        raise OperatorError(f"an operator with the email {email} already exists")

    operator = Operator(
        id=new_id("operator"),
        organization_id=organization_id,
        email=email,
        password_hash=_hasher.hash(password),
    )
    session.add(operator)
    session.flush()
    log.info("operator.created", extra={"organization_id": organization_id, "operator_id": operator.id})
    return operator


def set_password(session: Session, operator: Operator, password: str) -> None:
    """Replace the operator's password; sessions signed in with the old one stop working."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise OperatorError(
            f"the password must have {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    operator.password_hash = _hasher.hash(password)
    operator.updated_at = clock.now()
    session.flush()
    log.info("operator.password_changed", extra={"operator_id": operator.id})


def find_operator_by_email(session: Session, email: str) -> Operator | None:
    return session.scalar(select(Operator).where(Operator.email == normalize_email(email)))


def operator_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Operator)) or 0)


def list_operators(session: Session) -> list[Operator]:
    return list(session.scalars(select(Operator).order_by(Operator.created_at, Operator.id)))


def check_sign_in(session: Session, email: str, password: str) -> Operator | None:
    """Return the enabled operator whose email and password match, or None.

    A successful check records the sign-in time and upgrades an outdated hash.
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    operator = find_operator_by_email(session, email)
    if operator is None or operator.disabled_at is not None:
        _verify(_DUMMY_HASH, password)
        return None
    if not _verify(operator.password_hash, password):
        log.info("operator.sign_in_failed", extra={"operator_id": operator.id})
        return None

    if _hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = _hasher.hash(password)
    operator.last_login_at = clock.now()
    session.flush()
    log.info("operator.signed_in", extra={"organization_id": operator.organization_id, "operator_id": operator.id})
    return operator


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_fingerprint(operator: Operator) -> str:
    """Return a short digest of the stored hash; sessions carry it, so a new password ends them."""
    return hashlib.sha256(operator.password_hash.encode("utf-8")).hexdigest()[:16]
