"""Alembic migrations: the migrated schema is the models' schema, and revisions go both ways."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tallystick.server.db import Store, create_store_engine
from tallystick.server.ids import new_id
from tallystick.server.migrate import MIGRATION_LOCK_ID, alembic_config, current_revision, upgrade_to_head
from tallystick.server.models import Base, CreditHold

from tests.conftest import scratch_database
from tests.ledger_factories import Account, create_account


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


_HOLD_KEY_INDEX = "uq_credit_holds_org_idempotency_key"


def _skip_unless_postgres(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL only: SQLite migrates in one transaction and takes no migration lock")


class _Background(threading.Thread):
    """Run `work` in a thread and keep the exception it raises."""

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.work()
        except BaseException as error:  # noqa: BLE001 - the test asserts on it
            self.error = error


def _hold_key_index_valid(engine: Engine) -> bool | None:
    """Return whether the hold key index is valid, or None when it does not exist."""
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"), {"name": _HOLD_KEY_INDEX}
        ).scalar()


def _wait_for_build_behind_snapshot(engine: Engine, migration: _Background) -> int:
    """Return the process id of the index build once it waits for an older snapshot to end."""
    deadline = time.monotonic() + 30
    while migration.is_alive() and time.monotonic() < deadline:
        with engine.connect() as connection:
            build_pid = connection.execute(
                text("SELECT pid FROM pg_stat_progress_create_index WHERE phase = 'waiting for old snapshots'")
            ).scalar()
        if build_pid is not None:
            return build_pid
        time.sleep(0.05)
    pytest.fail(
        f"revision 0003 never waited for the open transaction (migration error: {migration.error!r}), "
        "so it did not build its index concurrently"
    )


def _new_hold(account: Account, idempotency_key: str) -> CreditHold:
    now = datetime.now(UTC)
    return CreditHold(
        id=new_id("hold"),
        organization_id=account.organization_id,
        customer_id=account.customer_id,
        credits_currency_id=account.currency_id,
        amount=Decimal(1),
        reserved=Decimal(1),
        status="active",
        expires_at=now + timedelta(minutes=5),
        created_at=now,
        idempotency_key=idempotency_key,
    )


@pytest.fixture
def store_at_0002(empty_database_url: str) -> Iterator[Store]:
    command.upgrade(alembic_config(empty_database_url), "0002")
    store = Store.open(empty_database_url)
    yield store
    store.dispose()


def test_0003_index_build_allows_writes(empty_database_url, backend, engine_of, store_at_0002):
    _skip_unless_postgres(backend)
    account = create_account(store_at_0002)
    engine = engine_of(empty_database_url)

    # A concurrent build waits for this transaction's snapshot to end before it finishes,
    # which keeps the build in progress while the test writes.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as reader:
        reader.execute(text("SELECT 1"))
        migration = _Background(lambda: command.upgrade(alembic_config(empty_database_url), "0003"))
        _wait_for_build_behind_snapshot(engine, migration)

        with store_at_0002.transaction() as session:
            session.execute(text("SET LOCAL lock_timeout = '5s'"))
            session.add(_new_hold(account, "retry-1"))
        reader.rollback()
    migration.join(timeout=60)

    assert migration.error is None
    assert current_revision(empty_database_url) == "0003"
    assert _hold_key_index_valid(engine) is True
    # The index enforces the key of the hold written while it was being built.
    with pytest.raises(IntegrityError), store_at_0002.transaction() as session:
        session.add(_new_hold(account, "retry-1"))


def _interrupt_0003_build(engine: Engine, url: str, interrupt: str) -> _Background:
    """Run revision 0003, interrupt its index build with `interrupt`, and return the finished run.

    `interrupt` is pg_cancel_backend or pg_terminate_backend. An open REPEATABLE READ snapshot
    keeps the concurrent build waiting, so the interrupt reaches it midway.
    """
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as reader:
        reader.execute(text("SELECT 1"))
        migration = _Background(lambda: command.upgrade(alembic_config(url), "0003"))
        build_pid = _wait_for_build_behind_snapshot(engine, migration)
        with engine.connect() as connection:
            connection.execute(text(f"SELECT {interrupt}(:pid)"), {"pid": build_pid})
        migration.join(timeout=60)
        reader.rollback()
    return migration


def test_0003_reruns_after_failed_build(empty_database_url, backend, engine_of, store_at_0002):
    _skip_unless_postgres(backend)
    engine = engine_of(empty_database_url)

    # Cancelling the build does what an operator's interrupt or a statement timeout would.
    migration = _interrupt_0003_build(engine, empty_database_url, "pg_cancel_backend")

    assert migration.error is not None
    assert current_revision(empty_database_url) == "0002"
    assert "idempotency_key" in _columns(engine, "credit_holds")
    assert _hold_key_index_valid(engine) is False

    command.upgrade(alembic_config(empty_database_url), "0003")

    assert current_revision(empty_database_url) == "0003"
    assert _hold_key_index_valid(engine) is True


def test_failed_revision_reports_own_error(empty_database_url, backend, engine_of):
    engine = engine_of(empty_database_url)
    # 0001 creates organizations first and server_secrets second, so it fails midway.
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE server_secrets (id integer PRIMARY KEY)"))

    with pytest.raises(Exception) as raised:
        upgrade_to_head(empty_database_url)

    message = str(raised.value)
    assert "server_secrets" in message
    assert "already exists" in message
    assert "current transaction is aborted" not in message
    assert current_revision(empty_database_url) is None
    assert "organizations" not in inspect(engine).get_table_names()
    if backend == "postgres":
        with engine.connect() as connection:
            lock_taken = connection.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID}).scalar()
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        assert lock_taken is True


def _error_chain(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def test_migration_lost_connection_unlock_logged(  # type: ignore[no-untyped-def]
    empty_database_url, backend, engine_of, store_at_0002, caplog
):
    _skip_unless_postgres(backend)
    engine = engine_of(empty_database_url)

    # An operator's kill, or a database restart, ends the migrating session midway.
    migration = _interrupt_0003_build(engine, empty_database_url, "pg_terminate_backend")

    messages = [str(error) for error in _error_chain(migration.error)]
    assert any("terminating connection" in message for message in messages)
    # The failed unlock on the dead connection is logged, not raised over the migration's error.
    assert "migrations.unlock_failed" in [record.getMessage() for record in caplog.records]
    assert current_revision(empty_database_url) == "0002"
    # The session's end released the lock, so the next migration takes it and finishes.
    upgrade_to_head(empty_database_url)
    assert _hold_key_index_valid(engine) is True


def test_two_migrating_processes_both_finish(empty_database_url, backend, engine_of, store_at_0002):
    _skip_unless_postgres(backend)
    engine = engine_of(empty_database_url)

    # The test holds the migration lock until both processes wait for it, so that one of them
    # builds the index of revision 0003 while the other waits.
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        holder.commit()
        processes = [
            subprocess.Popen(
                [
                    sys.executable, "-m", "tallystick.cli.main", "migrate",
                    "--database-url", f"{empty_database_url}?application_name=migrator",
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        connected = 0
        while connected < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            connected = holder.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'migrator'"
                )
            ).scalar_one()
            holder.commit()
        # Each connected process requests the lock right after connecting, well within this second.
        time.sleep(1)
        holder.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        holder.commit()
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()

    assert connected == 2
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert current_revision(empty_database_url) == head
    assert _hold_key_index_valid(engine) is True
    # The revision before is read under the lock, so only the process that migrated reports it.
    reports = sorted(output.strip().splitlines()[-1] for output in outputs)
    assert reports == [
        f"Database schema is up to date (revision {head}).",
        f"Database schema upgraded from revision 0002 to {head}.",
    ], outputs
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
