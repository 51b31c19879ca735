"""Engines and sessions for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

# PostgreSQL connections each process keeps open, and how many more it may open for a burst.
# The pool closes an overflow connection as soon as it is returned, and a new connection costs
# PostgreSQL a process start. So the kept ones cover what the worker threads use under steady
# load: anyio runs routes in up to 40 threads. With 10 kept and 20 overflow, the pool opened and
# closed connections continuously at 500 holds per second. Two workers then served 210 to 236
# holds per second, against 267 to 308 with 30 kept, in alternating runs on one machine.
POOL_SIZE = 30
POOL_OVERFLOW = 10

# How long a SQLite writer waits for the write lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000

# The session.info key of the work queued by `after_commit`.
_AFTER_COMMIT = "tallystick.after_commit"


def normalize_database_url(url: str) -> str:
    """Map plain ``postgresql://`` (and ``postgres://``) to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _configure_sqlite(engine: Engine, *, begin_immediate: bool) -> None:
    """Turn on WAL, foreign keys and durable commits, and take the write lock up front.

    pysqlite's own transaction handling is switched off so that SQLAlchemy's BEGIN is the one
    that runs. Writers use BEGIN IMMEDIATE: a transaction that reads and then writes would
    otherwise fail with "database is locked" when another writer got there first, instead of
    waiting for the lock.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL makes a commit survive a power loss or a SIGKILL, at about 0.2 ms per commit.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    begin_statement = "BEGIN IMMEDIATE" if begin_immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql(begin_statement)


def create_store_engine(url: str, *, read_only: bool = False) -> Engine:
    """Create an engine for `url`; on SQLite, `read_only` engines skip the write lock."""
    url = normalize_database_url(url)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine, begin_immediate=not read_only)
        return engine
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    _ping_idle_connections(engine)
    return engine


# Seconds a pooled PostgreSQL connection may sit unused before its next checkout tests it. A
# busy server reuses its connections sooner, so it pays no extra round trip per transaction,
# while a connection left idle across a database restart is replaced before a request uses it.
PING_AFTER_IDLE_S = 2.0


def _ping_idle_connections(engine: Engine) -> None:
    """Test a connection at checkout when it has been idle; replace it when the test fails.

    SQLAlchemy's pool_pre_ping tests every checkout, which costs one round trip per
    transaction; this tests only connections idle for PING_AFTER_IDLE_S or longer.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            log.warning("database.connection_replaced", extra={"reason": reason})
            # The pool discards this connection and checks out another, or opens a new one.
            raise DisconnectionError(reason) from error


@dataclass
class Store:
    """The engines and session factories of one database."""

    url: str
    engine: Engine
    read_engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    # For reads of one statement. On PostgreSQL they run in autocommit mode, which saves the
    # BEGIN and ROLLBACK round trips, and one statement reads one snapshot anyway. A session
    # that runs several statements here reads a new snapshot for each, and any write commits
    # at once, so only single-statement reads may use it. On SQLite it is `read_sessions`.
    statement_reads: sessionmaker[Session]

    @classmethod
    def open(cls, url: str) -> Store:
        url = normalize_database_url(url)
        engine = create_store_engine(url)
        read_engine = create_store_engine(url, read_only=True) if is_sqlite(url) else engine
        read_sessions = sessionmaker(read_engine, expire_on_commit=False)
        if is_sqlite(url):
            statement_reads = read_sessions
        else:
            # Shares the engine's pool; psycopg switches a connection's autocommit mode locally.
            statement_reads = sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
        sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(sessions, "after_soft_rollback", _drop_work_after_commit)
        return cls(
            url=url,
            engine=engine,
            read_engine=read_engine,
            sessions=sessions,
            read_sessions=read_sessions,
            statement_reads=statement_reads,
        )

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session whose work commits on success and rolls back on any error.

        Work queued with `after_commit` runs after the commit, once the session is closed.
        """
        with self.sessions() as session, session.begin():
            yield session
        self.run_work_after_commit(session)

    def run_work_after_commit(self, session: Session) -> None:
        """Run the work queued on `session` by `after_commit`; call once it has committed and closed.

        Work that raises is logged and the rest still runs: the transaction before it has
        committed, so raising would report a failure for changes that were stored.
        """
        for work in session.info.pop(_AFTER_COMMIT, ()):
            try:
                work(self)
            except Exception:
                log.exception("after_commit.failed", extra={"work": getattr(work, "__name__", repr(work))})

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def after_commit(session: Session, work: Callable[[Store], Any]) -> None:
    """Queue `work(store)` to run once the write session's transaction has committed.

    For what must not run while the transaction holds its locks, such as a call to a payment
    provider. The work is dropped when the session rolls back, but not when a savepoint does.
    It runs outside any transaction, on the thread that ended the session, so it opens its
    own. `Store.transaction` runs it on leaving the block, and `deps.get_session` when the
    request's session ends. A write session ended any other way must call
    `Store.run_work_after_commit` itself.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(work)


def _drop_work_after_commit(session: Session, previous_transaction: Any) -> None:
    # A savepoint's rollback keeps the work: it may have been queued before the savepoint.
    # Work queued inside one that rolled back must check that its changes were stored.
    if not previous_transaction.nested:
        session.info.pop(_AFTER_COMMIT, None)
