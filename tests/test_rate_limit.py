"""The per-API-key rate limit in a shared Redis storage, and what happens when the storage fails.

Tests that need Redis use the server at 127.0.0.1:6379 and skip when it is unreachable, except
under CI=true, where they fail. Each test writes its keys under a prefix of its own and deletes
only those keys afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from limits.storage import MemoryStorage

from tallystick.server.api_keys import create_api_key
from tallystick.server.errors import ApiError
from tallystick.server import rate_limit as rate_limit_module
from tallystick.server.observability import JsonLogFormatter
from tallystick.server.rate_limit import (
    FAILURE_LOG_INTERVAL_SECONDS,
    REDIS_TIMEOUT_SECONDS,
    STORAGE_RETRY_SECONDS,
    RateLimiter,
    RateLimitStorageError,
    build_storage,
)
from tests.conftest import free_port, make_tenant, serve_app
from tests.dashboard_helpers import DashboardClient, Operator, make_operator

REDIS_URL = os.environ.get("TALLYSTICK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "hunter2-rate-limit"


@pytest.fixture
def redis_client() -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        problem = f"Redis at {REDIS_URL} is not reachable: {error}"
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (Redis tests must run in CI)")
        pytest.skip(problem)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A key prefix of this test's own, whose keys are deleted afterwards."""
    prefix = f"tallystick-test-{secrets.token_hex(6)}"
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections. It is bound, so that no one else takes it, but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _app(store, database_url: str, **settings):  # type: ignore[no-untyped-def]
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    return create_app(Settings(database_url=database_url, **settings), store=store)


def _logged_text(records: list[logging.LogRecord]) -> str:
    formatter = JsonLogFormatter()
    return "\n".join(formatter.format(record) for record in records)


def _events(records: list[logging.LogRecord], event: str) -> list[logging.LogRecord]:
    return [record for record in records if record.getMessage() == event]


def test_two_apps_share_one_limit(store, database_url, redis_client, key_prefix):
    settings = {"rate_limit": "5/minute", "rate_limit_storage_url": REDIS_URL, "rate_limit_key_prefix": key_prefix}
    first_app = _app(store, database_url, **settings)
    second_app = _app(store, database_url, **settings)

    with serve_app(first_app, database_url) as first, serve_app(second_app, database_url) as second:
        tenant = make_tenant(first, store)
        on_second = httpx.Client(
            base_url=second.api_url, headers={"Authorization": f"Bearer {tenant.api_key}"}, timeout=30
        )
        statuses = []
        for _ in range(3):
            statuses.append(tenant.http.get("/customers/").status_code)
            statuses.append(on_second.get("/customers/").status_code)
        tenant.http.close()
        on_second.close()

    assert statuses == [200, 200, 200, 200, 200, 429]
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) != []


def test_sign_in_throttle_keys_hide_email(redis_client, key_prefix):
    from tallystick.server.dashboard.throttle import FAILURES_PER_EMAIL, SignInThrottle

    throttle = SignInThrottle(build_storage(REDIS_URL, key_prefix), REDIS_URL)
    for _ in range(FAILURES_PER_EMAIL.amount):
        throttle.record_failure("Ada.Lovelace@Example.com", "fingerprint")

    keys = [key.decode() for key in redis_client.scan_iter(match=f"{key_prefix}:*")]
    assert keys != []
    assert not any("lovelace" in key.lower() for key in keys)
    # The count is still per email, whatever its case and surrounding spaces.
    assert throttle.allowed("  ada.lovelace@example.com", "fingerprint") is False
    assert throttle.allowed("grace@example.com", "fingerprint") is True


def test_unreachable_storage_lets_requests_through(store, database_url, closed_port, caplog):
    storage_url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0"
    app = _app(store, database_url, rate_limit="2/minute", rate_limit_storage_url=storage_url)

    with store.transaction() as session:
        key = create_api_key(session, f"org-{secrets.token_hex(6)}")

    with caplog.at_level(logging.INFO, logger="tallystick"), serve_app(app, database_url) as running:
        with httpx.Client(base_url=running.api_url, headers={"Authorization": f"Bearer {key.secret}"}) as http:
            statuses = [http.get("/customers/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 200]
    [warning] = _events(caplog.records, "rate_limit.storage_failed")
    assert warning.levelno == logging.WARNING
    assert warning.api_key_id == key.api_key_id  # type: ignore[attr-defined]
    assert warning.organization_id == key.organization_id  # type: ignore[attr-defined]
    assert warning.error_type == "ConnectionError"  # type: ignore[attr-defined]
    assert warning.storage == f"redis://:***@127.0.0.1:{closed_port}/0"  # type: ignore[attr-defined]
    assert PASSWORD not in _logged_text(caplog.records)


def test_unresponsive_storage_times_out(store, database_url):
    # Connections are accepted into the backlog, but no reply to a command ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        storage_url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        app = _app(store, database_url, rate_limit="2/minute", rate_limit_storage_url=storage_url)

        with serve_app(app, database_url) as running:
            tenant = make_tenant(running, store)
            tenant.http.timeout = httpx.Timeout(10)
            started = time.monotonic()
            response = tenant.http.get("/customers/")
            elapsed = time.monotonic() - started
            tenant.http.close()

    assert response.status_code == 200
    assert elapsed < 5


class _FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_warnings_are_rate_limited(closed_port, caplog):
    storage_url = f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0"
    clock = _FakeMonotonic()
    limiter = RateLimiter("2/minute", build_storage(storage_url, "unused"), storage_url, monotonic=clock)

    with caplog.at_level(logging.INFO, logger="tallystick.server.rate_limit"):
        for request in range(6):
            limiter.check(f"key_{request}", "org_1")
            clock.now += STORAGE_RETRY_SECONDS / 2
        clock.now += FAILURE_LOG_INTERVAL_SECONDS
        limiter.check("key_last", "org_1")

    warnings = _events(caplog.records, "rate_limit.storage_failed")
    # Six requests at half the retry interval: three asked the storage, three passed unchecked.
    assert [record.api_key_id for record in warnings] == ["key_0", "key_last"]  # type: ignore[attr-defined]
    assert [record.unchecked_requests for record in warnings] == [1, 6]  # type: ignore[attr-defined]
    assert PASSWORD not in _logged_text(caplog.records)


def test_exceeded_warnings_are_rate_limited(caplog):
    clock = _FakeMonotonic()
    limiter = RateLimiter("2/minute", MemoryStorage(), "memory://", monotonic=clock)

    def rejected(api_key_id: str) -> bool:
        try:
            limiter.check(api_key_id, "org_1")
        except ApiError as error:
            assert error.status == 429
            return True
        return False

    with caplog.at_level(logging.INFO, logger="tallystick.server.rate_limit"):
        outcomes = [rejected("key_1") for _ in range(7)]
        other_key = [rejected("key_2") for _ in range(3)]
        clock.now += FAILURE_LOG_INTERVAL_SECONDS
        outcomes.append(rejected("key_1"))

    assert outcomes == [False, False, True, True, True, True, True, True]
    assert other_key == [False, False, True]
    warnings = _events(caplog.records, "rate_limit.exceeded")
    # One warning per key and minute, counting the rejections since the key's last warning.
    assert [(record.api_key_id, record.rejected_requests) for record in warnings] == [  # type: ignore[attr-defined]
        ("key_1", 1),
        ("key_2", 1),
        ("key_1", 5),
    ]


def test_exceeded_counts_stay_bounded(monkeypatch):
    monkeypatch.setattr(rate_limit_module, "MAX_TRACKED_KEYS", 2)
    clock = _FakeMonotonic()
    limiter = RateLimiter("1/minute", MemoryStorage(), "memory://", monotonic=clock)

    for number in range(6):
        key = f"key_{number}"
        limiter.check(key, "org_1")
        with pytest.raises(ApiError):
            limiter.check(key, "org_1")
        clock.now += FAILURE_LOG_INTERVAL_SECONDS

    # Counts older than the interval are dropped when the table is full, so it never contains
    # more than MAX_TRACKED_KEYS keys.
    assert len(limiter._exceeded) <= 2  # noqa: SLF001 - the table whose size is bounded


def test_failed_storage_is_skipped_briefly():
    def timed_check() -> float:
        started = time.monotonic()
        limiter.check("key_1", "org_1")
        return time.monotonic() - started

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        storage_url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        clock = _FakeMonotonic()
        limiter = RateLimiter("2/minute", build_storage(storage_url, "unused"), storage_url, monotonic=clock)

        timed_out = timed_check()
        skipped = timed_check()
        clock.now += STORAGE_RETRY_SECONDS
        retried = timed_check()

    assert timed_out >= REDIS_TIMEOUT_SECONDS * 0.9
    assert skipped < REDIS_TIMEOUT_SECONDS / 5
    assert retried >= REDIS_TIMEOUT_SECONDS * 0.9


def test_limit_returns_after_outage(tmp_path, caplog):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; this test starts one of its own")
    port = free_port()
    storage_url = f"redis://127.0.0.1:{port}/0"
    clock = _FakeMonotonic()
    limiter = RateLimiter("2/minute", build_storage(storage_url, "outage"), storage_url, monotonic=clock)

    with caplog.at_level(logging.INFO, logger="tallystick.server.rate_limit"):
        for _ in range(3):
            limiter.check("key_1", "org_1")

        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_for_redis(port)
            clock.now += STORAGE_RETRY_SECONDS
            limiter.check("key_1", "org_1")
            limiter.check("key_1", "org_1")
            with pytest.raises(ApiError) as rejected:
                limiter.check("key_1", "org_1")
        finally:
            server.terminate()
            server.wait(timeout=10)

    assert rejected.value.status == 429
    [recovered] = _events(caplog.records, "rate_limit.storage_recovered")
    # The first of the three requests was counted in the warning; the other two passed after it.
    assert recovered.unchecked_requests == 2  # type: ignore[attr-defined]


def _wait_for_redis(port: int) -> None:
    import redis

    deadline = time.monotonic() + 10
    with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1) as client:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def test_sign_in_works_while_storage_fails(store, database_url, closed_port, caplog):
    app = _app(store, database_url, rate_limit_storage_url=f"redis://127.0.0.1:{closed_port}/0")

    with caplog.at_level(logging.INFO, logger="tallystick"), serve_app(app, database_url) as running:
        tenant = make_tenant(running, store)
        tenant.http.close()
        operator = make_operator(store, tenant.organization_id)
        browser = DashboardClient(running.root)
        wrong = browser.sign_in(Operator(email=operator.email, password="wrong password 123"))
        right = browser.sign_in(operator)
        browser.close()

    assert wrong.status_code == 401
    assert right.status_code == 303
    assert _events(caplog.records, "sign_in_throttle.storage_failed") != []


INVALID_STORAGE_URLS = {
    f"nosuch://user:{PASSWORD}@127.0.0.1:6379": "unknown storage scheme",
    f"redis://:{PASSWORD}@127.0.0.1:notaport/0": "Port could not be cast",
    f"async+redis://:{PASSWORD}@127.0.0.1:6379/0": "asynchronous storage is not supported",
    f"redis://127.0.0.1:6379/0?password={PASSWORD}&socket_timeout=soon": "socket_timeout",
    "redis://[::1": "cannot be parsed",
    f"redis://:{PASSWORD}@127.0.0.1:6379/0?socket_timout=0.2": "socket_timout",
}


@pytest.mark.parametrize("storage_url", list(INVALID_STORAGE_URLS))
def test_invalid_storage_url_fails_app(storage_url, store, database_url):
    for rate_limit in ("1000/second", "off"):
        with pytest.raises(RateLimitStorageError) as raised:
            _app(store, database_url, rate_limit=rate_limit, rate_limit_storage_url=storage_url)

        message = str(raised.value)
        assert message.startswith("Invalid TALLYSTICK_RATE_LIMIT_STORAGE_URL"), message
        assert INVALID_STORAGE_URLS[storage_url] in message
        assert PASSWORD not in message
        assert raised.value.__cause__ is None


def test_invalid_storage_url_stops_serve(tmp_path):
    # In a child process, since serve configures logging for the whole process.
    environment = dict(os.environ, TALLYSTICK_RATE_LIMIT_STORAGE_URL=f"nosuch://user:{PASSWORD}@127.0.0.1:6379")
    result = subprocess.run(
        [
            sys.executable, "-m", "tallystick.cli.main", "serve",
            "--port", str(free_port()), "--database-url", f"sqlite:///{tmp_path / 'serve.db'}",
        ],  # fmt: skip
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert "Invalid TALLYSTICK_RATE_LIMIT_STORAGE_URL 'nosuch://user:***@127.0.0.1:6379'" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "serve.db").exists()


def test_unexpected_storage_error_lets_request_through(caplog):
    limiter = RateLimiter("2/minute", MemoryStorage(), "memory://")

    def failing_hit(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TypeError("unexpected keyword argument 'socket_timout'")

    limiter.limiter.hit = failing_hit  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="tallystick"):
        limiter.check("key_1", "org_1")

    [warning] = _events(caplog.records, "rate_limit.storage_failed")
    assert warning.error_type == "TypeError"  # type: ignore[attr-defined]
    assert warning.api_key_id == "key_1"  # type: ignore[attr-defined]


def test_unexpected_throttle_error_allows_sign_in(caplog):
    from tallystick.server.dashboard.throttle import SignInThrottle

    throttle = SignInThrottle(MemoryStorage(), "memory://")

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TypeError("unexpected keyword argument")

    throttle.limiter.test = failing  # type: ignore[method-assign]
    throttle.limiter.hit = failing  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="tallystick"):
        allowed = throttle.allowed("ada@example.com", "")
        throttle.record_failure("ada@example.com", "")

    assert allowed is True
    [warning] = _events(caplog.records, "sign_in_throttle.storage_failed")
    assert warning.error_type == "TypeError"  # type: ignore[attr-defined]
