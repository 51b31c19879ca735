"""Ids given to the CLI address one item: encoded as one path segment, never empty, cus_ ids as customer ids."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.cli_helpers import api_env, invoke


@pytest.fixture
def cli_env(tenant):  # type: ignore[no-untyped-def]
    return api_env(tenant)


def test_delete_with_dot_segments_deletes_nothing(tenant, cli_env):
    other = tenant.http.post("/customers/", json={"name": "Bo", "externalId": "bo"}).json()

    result = invoke(cli_env, "customers", "delete", f"nosuch/../../{other['id']}")

    assert result.exit_code == 1
    assert "Deleted" not in result.output
    assert tenant.http.get(f"/customers/{other['id']}").status_code == 200


def test_get_with_query_string_is_not_found(tenant, cli_env):
    tenant.http.post("/customers/", json={"name": "Alice", "externalId": "alice"})

    result = invoke(cli_env, "customers", "get", "alice?foo=1")

    assert result.exit_code == 1
    assert "Customer with externalId 'alice?foo=1' not found" in result.output


def test_checkout_get_cannot_reach_customer(tenant, cli_env):
    customer = tenant.http.post("/customers/", json={"name": "Alice", "externalId": "alice"}).json()

    result = invoke(cli_env, "checkouts", "get", f"../customers/{customer['id']}")

    assert result.exit_code == 1
    assert "Alice" not in result.output


@pytest.mark.parametrize("group", ["orders", "invoices", "checkouts", "products", "plans", "customers"])
def test_get_rejects_empty_id(cli_env, group: str):
    result = invoke(cli_env, group, "get", "")

    assert result.exit_code == 2
    assert "must not be empty" in result.output


@pytest.mark.parametrize("item_id", [".", ".."])
def test_get_rejects_dot_segment(cli_env, item_id: str):
    result = invoke(cli_env, "checkouts", "get", item_id)

    assert result.exit_code == 2
    assert f"'{item_id}' is not a valid id" in result.output


def test_grants_list_rejects_empty_customer(cli_env):
    result = invoke(cli_env, "grants", "list", "")

    assert result.exit_code == 2
    assert "must not be empty" in result.output


def test_signal_send_by_customer_id(tenant, cli_env):
    customer = tenant.http.post("/customers/", json={"name": "Ada", "externalId": "ada"}).json()

    sent = invoke(cli_env, "signals", "send", "chat_message", "--customer", customer["id"])
    listed = invoke(cli_env, "signals", "list", "--customer", customer["id"], "--json")

    assert sent.exit_code == 0, sent.output
    assert "ingested" in sent.output
    assert tenant.http.get(f"/customers/external/{customer['id']}").status_code == 404
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 1
    [signal] = json.loads(listed.output)["data"]
    assert signal["externalCustomerId"] == "ada"


def test_signal_send_unknown_customer_id_fails(tenant, cli_env):
    result = invoke(cli_env, "signals", "send", "chat_message", "--customer", "cus_nobody")

    assert result.exit_code == 1
    assert "customer.customerId 'cus_nobody': customer not found" in result.output
    assert tenant.http.get("/customers/").json()["pagination"]["total"] == 0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Yield the root URL of a loopback server that accepts connections and never responds."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def test_list_timeout_option(tenant, silent_server: str):
    env = {"TALLYSTICK_API_URL": silent_server, "TALLYSTICK_API_KEY": tenant.api_key, "COLUMNS": "200"}

    started = time.monotonic()
    result = invoke(env, "customers", "list", "--timeout", "0.5")
    elapsed = time.monotonic() - started

    assert result.exit_code == 1, result.output
    assert "timed out after 0.5 s" in result.output
    # Three attempts of 0.5 s with backoff between them. The default of 30 s would take minutes.
    assert elapsed < 15
