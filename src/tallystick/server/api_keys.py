"""Organizations and API keys: creation, hashing and lookup."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallystick.server import clock
from tallystick.server.ids import new_id
from tallystick.server.models import ApiKey, Organization

log = logging.getLogger(__name__)

KEY_PREFIX = "tsk_"
# 32 random bytes: a key is guessable only by brute force over 256 bits.
_KEY_BYTES = 32
_SHOWN_PREFIX_LENGTH = 12


def hash_api_key(key: str) -> str:
    """Return the hex SHA-256 of `key`.

    Keys are 256 random bits, so a fast unsalted hash is enough: unlike passwords they cannot be
    guessed from a dictionary, and a fast hash keeps the per-request lookup cheap.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    organization_id: str
    api_key_id: str
    secret: str


def get_or_create_organization(session: Session, name: str) -> Organization:
    organization = session.scalar(select(Organization).where(Organization.name == name))
    if organization is None:
        organization = Organization(id=new_id("organization"), name=name)
        session.add(organization)
        session.flush()
        log.info("organization.created", extra={"organization_id": organization.id})
    return organization


def create_api_key(session: Session, organization_name: str, key_name: str = "") -> CreatedKey:
    """Create a key for the named organization, creating the organization if missing.

    The secret is returned once and only its hash is stored.
    """
    organization = get_or_create_organization(session, organization_name)
    secret = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    api_key = ApiKey(
        id=new_id("api_key"),
        organization_id=organization.id,
        name=key_name,
        key_hash=hash_api_key(secret),
        key_prefix=secret[:_SHOWN_PREFIX_LENGTH],
    )
    session.add(api_key)
    session.flush()
    log.info(
        "api_key.created",
        extra={"organization_id": organization.id, "api_key_id": api_key.id},
    )
    return CreatedKey(organization_id=organization.id, api_key_id=api_key.id, secret=secret)


def find_active_key(session: Session, secret: str) -> ApiKey | None:
    """Return the unrevoked key whose hash matches `secret`, or None."""
    api_key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(secret)))
    if api_key is None or api_key.revoked_at is not None:
        return None
    return api_key


def list_api_keys(session: Session, organization_name: str | None = None) -> list[tuple[ApiKey, Organization]]:
    statement = select(ApiKey, Organization).join(Organization).order_by(ApiKey.created_at)
    if organization_name is not None:
        statement = statement.where(Organization.name == organization_name)
    return [(row[0], row[1]) for row in session.execute(statement)]


def revoke_api_key(session: Session, api_key_id: str) -> ApiKey | None:
    api_key = session.get(ApiKey, api_key_id)
    if api_key is None:
        return None
    if api_key.revoked_at is None:
        api_key.revoked_at = clock.now()
        log.info(
            "api_key.revoked",
            extra={"organization_id": api_key.organization_id, "api_key_id": api_key.id},
        )
    return api_key
