"""Alembic environment: runs migrations on the connection or URL that the caller configures."""

from __future__ import annotations

import logging
import time

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from tallystick.server.db import create_store_engine
from tallystick.server.migrate import MIGRATION_LOCK_ID
from tallystick.server.models import Base

log = logging.getLogger("tallystick.server.migrate")

config = context.config
target_metadata = Base.metadata

# Seconds between two attempts to take the migration lock while another process holds it.
_LOCK_POLL_SECONDS = 0.2


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _take_migration_lock(connection: Connection) -> None:
    """Take the PostgreSQL advisory lock that lets one process at a time migrate.

    The lock is polled with pg_try_advisory_lock, committing after each attempt. A process
    waiting in pg_advisory_lock() would hold a snapshot all the while, and CREATE INDEX
    CONCURRENTLY in the holder waits for every older snapshot to end. PostgreSQL would then
    report a deadlock and abort one of the two processes.
    """
    waiting = False
    while True:
        taken = connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID}).scalar()
        connection.commit()
        if taken:
            return
        if not waiting:
            log.info("migrations.waiting_for_lock")
            waiting = True
        time.sleep(_LOCK_POLL_SECONDS)


def _release_migration_lock(connection: Connection) -> None:
    """Release the migration lock, logging a failure instead of raising it.

    After a failed revision the connection may sit in an aborted transaction, where the unlock
    would fail with an error that replaces the revision's own. Closing the connection releases
    the lock as well, since it belongs to the database session.
    """
    try:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
    except SQLAlchemyError as error:
        log.warning("migrations.unlock_failed", extra={"error": str(error)})


def run_migrations_online() -> None:
    engine = create_store_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Several server processes may start at once; one migrates while the others wait.
                _take_migration_lock(connection)
            try:
                context.configure(
                    connection=connection,
                    target_metadata=target_metadata,
                    render_as_batch=connection.dialect.name == "sqlite",
                    compare_type=True,
                    # Alembic's documentation of autocommit_block advises a transaction per
                    # revision when a revision commits midway, as 0003 does on PostgreSQL to
                    # build an index.
                    transaction_per_migration=True,
                )
                # Read after the lock, so that of several processes started together only the
                # one that migrated reports a change (see migrate.upgrade_to_head).
                config.attributes["revision_before"] = context.get_context().get_current_revision()
                with context.begin_transaction():
                    context.run_migrations()
                connection.commit()
            finally:
                if connection.dialect.name == "postgresql":
                    _release_migration_lock(connection)
    finally:
        # Closes the pooled connection, which also ends its session's advisory lock.
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
