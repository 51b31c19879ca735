"""Run Alembic migrations programmatically, so no alembic.ini is needed at run time."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext

from tallystick.server.db import create_store_engine, normalize_database_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Key of the PostgreSQL advisory lock held by the process that migrates. Any 64-bit constant
# works, as long as every tallystick process uses the same one.
MIGRATION_LOCK_ID = 0x7461_6C6C_7973_7469


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may contain percent-encoded characters.
    config.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    return config


def current_revision(database_url: str) -> str | None:
    """Return the database's schema revision, or None for a database without tallystick's schema."""
    engine = create_store_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade_to_head(database_url: str) -> str | None:
    """Bring the database at `database_url` to the newest schema.

    Return the revision that the database had when this process took the migration lock, so
    after any other process that held it had finished. None means a database without the schema.
    """
    log.info("migrations.started")
    config = alembic_config(database_url)
    command.upgrade(config, "head")
    log.info("migrations.finished")
    return config.attributes.get("revision_before")
