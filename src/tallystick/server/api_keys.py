"""Organizations and API keys: creation, hashing and lookup."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import event, select
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
    return find_active_key_by_hash(session, hash_api_key(secret))


def find_active_key_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    """Return the unrevoked key whose stored hash is `key_hash`, or None."""
    api_key = session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if api_key is None or api_key.revoked_at is not None:
        return None
    return api_key


@dataclass(frozen=True)
class VerifiedKey:
    """An API key found active in the database: the organization that owns it, and its id."""

    organization_id: str
    api_key_id: str


class VerifiedKeyCache:
    """API keys that this process found active recently, so that requests skip the key lookup.

    Entries are keyed by database URL and key hash, so a key is only ever trusted for the
    database it was read from, and each entry contains the organization that owns that key. An
    entry is used for `ttl_seconds` from the start of the lookup that stored it. Only active keys
    are stored: unknown and revoked keys are looked up on every request.

    `clear` runs after every commit of a transaction that revoked a key through
    `revoke_api_key`, so the process that revokes a key rejects it at once. A lookup that was
    running while the revocation committed does not store its result. A revocation made by
    another process (another server worker, the CLI) takes effect here once the entry expires.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, VerifiedKey]] = OrderedDict()
        self._lock = threading.Lock()
        # Incremented by every clear. A lookup stores its result only if no clear happened meanwhile.
        self._generation = 0

    def generation(self) -> int:
        return self._generation

    def get(self, database_url: str, key_hash: str, ttl_seconds: float) -> VerifiedKey | None:
        """Return the cached key, or None when it is missing or older than `ttl_seconds`."""
        entry = self._entries.get((database_url, key_hash))
        if entry is None:
            return None
        looked_up_at, key = entry
        if time.monotonic() - looked_up_at >= ttl_seconds:
            return None
        return key

    def put(
        self, database_url: str, key_hash: str, key: VerifiedKey, *, looked_up_at: float, generation: int
    ) -> None:
        """Store a key found active by a lookup that started at `looked_up_at` (monotonic clock).

        `generation` is the value of `generation()` taken before that lookup. When a revocation
        has cleared the cache since then, the result may be stale, so it is not stored.
        """
        with self._lock:
            if generation != self._generation:
                return
            self._entries[(database_url, key_hash)] = (looked_up_at, key)
            self._entries.move_to_end((database_url, key_hash))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


# Shared by every app in the process. Tests run several apps, with different database URLs.
verified_keys = VerifiedKeyCache()


def _clear_verified_keys(_session: Session) -> None:
    verified_keys.clear()


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
        # Cleared after the commit as well: a request that read the key before the commit
        # must not keep it cached as active.
        verified_keys.clear()
        if not event.contains(session, "after_commit", _clear_verified_keys):
            event.listen(session, "after_commit", _clear_verified_keys)
        log.info(
            "api_key.revoked",
            extra={"organization_id": api_key.organization_id, "api_key_id": api_key.id},
        )
    return api_key
