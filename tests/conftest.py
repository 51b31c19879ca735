"""Shared fixtures: a store and a real HTTP server on a loopback port, on SQLite and PostgreSQL.

Every test that takes `backend` (directly or through `server`, `store` or `tenant`) runs once per
backend. PostgreSQL tests create their own database on 127.0.0.1:5432 and drop it afterwards; on
a machine without that server they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "TALLYSTICK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# Webhook settings of every test server: receivers listen on 127.0.0.1, which production
# settings reject, and retries are fast so that retry tests take seconds.
TEST_WEBHOOK_ENVIRONMENT = {
    "TALLYSTICK_ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
    "TALLYSTICK_WEBHOOK_POLL_INTERVAL_SECONDS": "0.1",
    "TALLYSTICK_WEBHOOK_TIMEOUT_SECONDS": "1.5",
    "TALLYSTICK_WEBHOOK_CLAIM_SECONDS": "3",
    "TALLYSTICK_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
}
for _name, _value in TEST_WEBHOOK_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

# The renewal task reads the real clock, while billing tests freeze time and buy plans in the
# past: a task running beside them would renew their orders up to today. Test servers run it
# only when a test asks for it with Settings(billing_worker_enabled=True).
os.environ.setdefault("TALLYSTICK_BILLING_WORKER_ENABLED", "false")

# The server logs at INFO by default, so tests do too. A log call that raises, such as one with
# an `extra` key that logging reserves, then fails its test instead of a production request.
logging.getLogger("tallystick").setLevel(logging.INFO)


def _postgres_problem() -> str | None:
    """Return why PostgreSQL cannot be used, or None when it can."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {error}"
    return None


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        problem = _postgres_problem()
        if problem is not None:
            if os.environ.get("CI"):
                pytest.fail(f"{problem} (PostgreSQL tests must run in CI)")
            pytest.skip(problem)
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "tallystick.db"
        yield f"sqlite:///{path}"
        return

    import psycopg

    name = f"tallystick_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def store(database_url: str):  # type: ignore[no-untyped-def]
    from tallystick.server.db import Store
    from tallystick.server.migrate import upgrade_to_head

    upgrade_to_head(database_url)
    opened = Store.open(database_url)
    yield opened
    opened.dispose()


@contextmanager
def scratch_database(backend: str, tmp_path: Path, label: str) -> Iterator[str]:
    """Yield the URL of a new, empty database that only the caller uses, and drop it afterwards.

    On SQLite it is a file named after `label` in `tmp_path`. On PostgreSQL it is a database
    named tallystick_<label>_<random hex>, dropped even while connections remain.
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'{label}.db'}"
        return

    import psycopg

    name = f"tallystick_{label}_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    root: str
    database_url: str

    @property
    def api_url(self) -> str:
        return self.root + "/api/v2"


@contextmanager
def serve_app(app, database_url: str) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    """Run `app` with uvicorn in a background thread on a free loopback port."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start within 20 s")
        time.sleep(0.02)
    try:
        yield RunningServer(root=f"http://127.0.0.1:{port}", database_url=database_url)
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(store, database_url: str) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    """The shared test server: the real app on the session's store, on a loopback port."""
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    app = create_app(Settings(database_url=database_url), store=store)
    with serve_app(app, database_url) as running:
        yield running


@dataclass
class Tenant:
    """An organization with its own API key and an HTTP client authenticated as it."""

    organization_id: str
    api_key: str
    http: httpx.Client
    server: RunningServer

    def paid(self, **kwargs):  # type: ignore[no-untyped-def]
        """Return an official paid-python client pointed at this server."""
        from paid import Paid

        return Paid(token=self.api_key, base_url=self.server.api_url, **kwargs)


def make_tenant(server: RunningServer, store) -> Tenant:  # type: ignore[no-untyped-def]
    from tallystick.server.api_keys import create_api_key

    with store.transaction() as session:
        created = create_api_key(session, f"org-{secrets.token_hex(6)}")
    http = httpx.Client(
        base_url=server.api_url,
        headers={"Authorization": f"Bearer {created.secret}"},
        timeout=30,
    )
    return Tenant(created.organization_id, created.secret, http, server)


@pytest.fixture
def tenant(server: RunningServer, store) -> Iterator[Tenant]:  # type: ignore[no-untyped-def]
    """A fresh organization per test, so tests never see each other's data."""
    made = make_tenant(server, store)
    yield made
    made.http.close()


@pytest.fixture
def other_tenant(server: RunningServer, store) -> Iterator[Tenant]:  # type: ignore[no-untyped-def]
    made = make_tenant(server, store)
    yield made
    made.http.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_unconfigure(config: pytest.Config) -> None:
    # Tests leave the SDK configured for servers that are stopped by now. Its exit hooks would
    # try them once more and log each failure after pytest's summary, which reads as a failed
    # run. The SDK's exit behaviour has tests of its own, in child processes.
    # A level set on the parent logger reaches its children, which `disabled` would not.
    for name in ("tallystick", "opentelemetry"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
