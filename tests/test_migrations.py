"""Alembic migrations: the migrated schema is the models' schema, and revisions go both ways."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from tallystick.server.db import create_store_engine
from tallystick.server.migrate import alembic_config, upgrade_to_head
from tallystick.server.models import Base

from tests.conftest import scratch_database


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own for each test, since these tests move its schema up and down."""
    with scratch_database(backend, tmp_path, "migrations") as url:
        yield url


@pytest.fixture
def engine_of() -> Iterator[object]:
    engines: list[Engine] = []

    def open_engine(url: str) -> Engine:
        engine = create_store_engine(url)
        engines.append(engine)
        return engine

    yield open_engine
    for engine in engines:
        engine.dispose()


def _foreign_keys(engine: Engine, table: str) -> set[str]:
    return {key["referred_table"] for key in inspect(engine).get_foreign_keys(table)}


def _indexes(engine: Engine, table: str) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes(table)}


def test_schema_matches_models(empty_database_url, engine_of):
    upgrade_to_head(empty_database_url)

    with engine_of(empty_database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_0002_upgrade_and_downgrade(empty_database_url, engine_of):
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0001")
    engine = engine_of(empty_database_url)
    assert _foreign_keys(engine, "signals") == {
        "organizations", "customers", "products", "product_attributes", "credit_currencies"
    }  # fmt: skip
    assert "ix_credit_ledger_entries_organization_id" in _indexes(engine, "credit_ledger_entries")

    command.upgrade(config, "0002")
    engine.dispose()
    assert _foreign_keys(engine, "signals") == {"organizations"}
    assert _foreign_keys(engine, "credit_ledger_entries") == {"organizations"}
    entry_indexes = _indexes(engine, "credit_ledger_entries")
    assert "ix_credit_ledger_entries_organization_id" not in entry_indexes
    assert "ix_credit_ledger_entries_order_id" in entry_indexes
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            options = dict(
                connection.execute(
                    text(
                        "SELECT relname, reloptions FROM pg_class "
                        "WHERE relname IN ('credit_accounts', 'credit_grants')"
                    )
                ).all()
            )
        assert options == {"credit_accounts": ["fillfactor=70"], "credit_grants": ["fillfactor=70"]}

    command.downgrade(config, "0001")
    engine.dispose()
    assert _foreign_keys(engine, "credit_ledger_entries") == {
        "organizations", "customers", "credit_currencies", "credit_grants"
    }  # fmt: skip
    assert "ix_credit_ledger_entries_organization_id" in _indexes(engine, "credit_ledger_entries")


def _columns(engine: Engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def test_0003_upgrade_and_downgrade(empty_database_url, engine_of):
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0002")
    engine = engine_of(empty_database_url)
    assert "idempotency_key" not in _columns(engine, "credit_holds")

    command.upgrade(config, "0003")
    engine.dispose()
    assert "idempotency_key" in _columns(engine, "credit_holds")
    [index] = [
        index
        for index in inspect(engine).get_indexes("credit_holds")
        if index["name"] == "uq_credit_holds_org_idempotency_key"
    ]
    assert index["column_names"] == ["organization_id", "idempotency_key"]
    assert index["unique"]

    command.downgrade(config, "0002")
    engine.dispose()
    assert "idempotency_key" not in _columns(engine, "credit_holds")
    assert "uq_credit_holds_org_idempotency_key" not in _indexes(engine, "credit_holds")


# A grant with its organization, customer and credit currency, as rows of revision 0004.
# Amounts are stored scaled: 5 credits with nine places, $0.05 with twelve.
_GRANT_ROWS = (
    "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ('org_1', 'Acme', :now, :now)",
    "INSERT INTO customers (id, organization_id, name, creation_state, status, default_currency, created_at, "
    "updated_at) VALUES ('cus_1', 'org_1', 'Ada', 'active', 'active', 'USD', :now, :now)",
    "INSERT INTO credit_currencies (id, organization_id, name, key, status, created_at, updated_at) "
    "VALUES ('cur_1', 'org_1', 'Chat', 'chat', 'active', :now, :now)",
    "INSERT INTO credit_grants (id, organization_id, customer_id, credits_currency_id, amount, remaining, "
    "starts_at, priority, source, origin_code, sequence, created_at, idempotency_key, unit_value) "
    "VALUES ('grant_1', 'org_1', 'cus_1', 'cur_1', 5000000000, 5000000000, :now, 0, 'manual', 'manual', 1, :now, "
    "'pack-1', 50000000000)",
)


def test_0004_upgrade_and_downgrade(empty_database_url, engine_of):
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0003")
    engine = engine_of(empty_database_url)
    assert "unit_value" not in _columns(engine, "credit_grants")

    command.upgrade(config, "0004")
    engine.dispose()
    [unit_value] = [column for column in inspect(engine).get_columns("credit_grants") if column["name"] == "unit_value"]
    assert unit_value["nullable"]
    with engine.begin() as connection:
        for statement in _GRANT_ROWS:
            connection.execute(text(statement), {"now": datetime.now(UTC)})

    command.downgrade(config, "0003")
    engine.dispose()
    assert "unit_value" not in _columns(engine, "credit_grants")
    # SQLite drops the column by copying the table, which must keep its rows and indexes.
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, amount, idempotency_key FROM credit_grants")).all()
    assert [tuple(row) for row in rows] == [("grant_1", 5000000000, "pack-1")]
    indexes = {index["name"]: index for index in inspect(engine).get_indexes("credit_grants")}
    assert set(indexes) >= {
        "ix_credit_grants_account", "ix_credit_grants_order_id", "uq_credit_grants_org_idempotency_key"
    }  # fmt: skip
    assert indexes["uq_credit_grants_org_idempotency_key"]["unique"]


def test_0002_keeps_sqlite_rows(tmp_path):
    # SQLite rebuilds a table to drop its foreign keys. PostgreSQL alters the table in place.
    path = tmp_path / "rebuilt.db"
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "0001")
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as connection:
        # Foreign keys are not enforced on a plain sqlite3 connection, so the signal needs no
        # customer or product rows.
        connection.execute(
            "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ('org_1', 'Acme', ?, ?)", (now, now)
        )
        connection.execute(
            "INSERT INTO signals (id, organization_id, customer_id, product_id, event_name, occurred_at, "
            "received_at, data, idempotency_key, credits_consumed, credits_pending) "
            "VALUES ('sig_1', 'org_1', 'cus_1', 'prod_1', 'chat_message', ?, ?, '{\"tokens\": 12}', 'key-1', 3, 0)",
            (now, now),
        )

    upgrade_to_head(url)

    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT id, customer_id, data, idempotency_key, credits_consumed FROM signals"
        ).fetchall()
    assert rows == [("sig_1", "cus_1", '{"tokens": 12}', "key-1", 3)]


def test_migrate_command_reports_revisions(tmp_path):
    from alembic.script import ScriptDirectory
    from typer.testing import CliRunner

    from tallystick.cli.main import app

    runner = CliRunner()
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    older = f"sqlite:///{tmp_path / 'older.db'}"
    command.upgrade(alembic_config(older), "0001")

    created = runner.invoke(app, ["migrate", "--database-url", fresh])
    again = runner.invoke(app, ["migrate", "--database-url", fresh])
    upgraded = runner.invoke(app, ["migrate", "--database-url", older])

    assert created.exit_code == 0, created.output
    assert f"Database schema created (revision {head})." in created.output
    assert f"Database schema is up to date (revision {head})." in again.output
    assert f"Database schema upgraded from revision 0001 to {head}." in upgraded.output
