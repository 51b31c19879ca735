"""Pooled PostgreSQL connections: tested at checkout only after sitting idle."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from tallystick.server import db
from tests.conftest import POSTGRES_ADMIN_URL

# The pool under test is PostgreSQL's: SQLite connections are files, not sockets.
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def engine(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Engine, list[int]]]:
    """An engine of the test database, with a count of the pings it sends."""
    created = db.create_store_engine(database_url)
    pings: list[int] = []
    ping = created.dialect.do_ping

    def counting_ping(dbapi_connection):  # type: ignore[no-untyped-def]
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(created.dialect, "do_ping", counting_ping)
    yield created, pings
    created.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_idle_dead_connection_replaced(engine, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    pooled, pings = engine
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
    first_pid = _backend_pid(pooled)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))

    second_pid = _backend_pid(pooled)

    assert second_pid != first_pid
    assert len(pings) >= 1

def test_recently_used_connection_not_pinged(engine, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    pooled, pings = engine
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    first_pid = _backend_pid(pooled)

    second_pid = _backend_pid(pooled)

    assert second_pid == first_pid
    assert pings == []
