"""The form-signing secret generated once and shared through the database."""

from __future__ import annotations

from tallystick.server.app import create_app
from tallystick.server.server_secrets import SECRET_KEY_NAME, shared_secret
from tallystick.server.settings import Settings
from tests.conftest import serve_app


def test_shared_secret_is_created_once(store):
    first = shared_secret(store, "test_secret_once")
    second = shared_secret(store, "test_secret_once")

    assert first == second
    assert len(first) >= 40


def test_processes_without_secret_key_agree(store, database_url):
    settings = Settings(database_url=database_url, webhook_delivery_enabled=False, billing_worker_enabled=False)
    first, second = create_app(settings, store=store), create_app(settings, store=store)

    with serve_app(first, database_url), serve_app(second, database_url):
        keys = (first.state.secret_key, second.state.secret_key)

    assert keys[0] == keys[1] == shared_secret(store, SECRET_KEY_NAME)
