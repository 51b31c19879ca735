"""Secrets generated once per installation and shared through the database.

When TALLYSTICK_SECRET_KEY is unset, the first server process to start draws a random key and
stores it in `server_secrets`. Every later process, on any host sharing the database, reads the
same one. Forms rendered by one process therefore verify on another, and signed links keep
working across restarts. Anyone who can read the database can read this key, as they can read
everything it protects, unless TALLYSTICK_ENCRYPTION_KEYS encrypts it at rest.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tallystick.server.db import Store
from tallystick.server.models import ServerSecret

log = logging.getLogger(__name__)

SECRET_KEY_NAME = "secret_key"


def shared_secret(store: Store, name: str) -> str:
    """Return the installation's secret `name`, creating it on first use.

    Two processes starting at once both insert with ON CONFLICT DO NOTHING, so the later insert
    does nothing and both read the first one's value. Once the secret exists, reading it takes
    no write lock, which matters on SQLite, where a writer would wait for other writers.
    """
    with store.read_sessions() as session:
        existing = session.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    if existing is not None:
        return existing

    with store.transaction() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(ServerSecret).values(name=name, value=secrets.token_urlsafe(32)).on_conflict_do_nothing()
        created = session.execute(statement).rowcount
        value = session.scalars(select(ServerSecret.value).where(ServerSecret.name == name)).one()
    if created:
        log.info("server_secret.created", extra={"secret_name": name})
    return value
