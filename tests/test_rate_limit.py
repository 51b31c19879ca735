"""The per-API-key rate limit in a shared Redis storage, and invalid storage URIs.

Tests that need Redis use the server at 127.0.0.1:6379 and skip when it is unreachable, except
under CI=true, where they fail. Each test writes its keys under a prefix of its own and deletes
only those keys afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from tallystick.server.rate_limit import RateLimitStorageError
from tests.conftest import free_port, make_tenant, serve_app

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


def _app(store, database_url: str, **settings):  # type: ignore[no-untyped-def]
    from tallystick.server.app import create_app
    from tallystick.server.settings import Settings

    return create_app(Settings(database_url=database_url, **settings), store=store)


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


INVALID_STORAGE_URLS = {
    f"nosuch://user:{PASSWORD}@127.0.0.1:6379": "unknown storage scheme",
    f"redis://:{PASSWORD}@127.0.0.1:notaport/0": "Port could not be cast",
    f"async+redis://:{PASSWORD}@127.0.0.1:6379/0": "asynchronous storage is not supported",
    f"redis://127.0.0.1:6379/0?password={PASSWORD}&socket_timeout=soon": "socket_timeout",
    "redis://[::1": "cannot be parsed",
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


def test_invalid_storage_url_stops_serve(tmp_path, monkeypatch):
    from tallystick.cli.main import app
    from tallystick.server.settings import get_settings

    monkeypatch.setenv("TALLYSTICK_RATE_LIMIT_STORAGE_URL", f"nosuch://user:{PASSWORD}@127.0.0.1:6379")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["serve", "--port", str(free_port()), "--database-url", f"sqlite:///{tmp_path / 'serve.db'}"]
        )
    finally:
        monkeypatch.delenv("TALLYSTICK_RATE_LIMIT_STORAGE_URL")
        get_settings.cache_clear()

    assert result.exit_code == 1
    assert "Invalid TALLYSTICK_RATE_LIMIT_STORAGE_URL 'nosuch://user:***@127.0.0.1:6379'" in result.output
    assert PASSWORD not in result.output
    assert not (tmp_path / "serve.db").exists()
