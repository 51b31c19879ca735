"""A committed event is delivered even when the server is killed while sending it.

The server runs as a real `tallystick serve` process on its own database. The test kills it
with SIGKILL while the receiver keeps the webhook request open, then starts a new process and
checks that it sends the event again, with the same id, once the claim lapses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tallystick.server import events
from tallystick.webhooks import SIGNATURE_HEADER, verify_webhook_signature
from tests.conftest import free_port, scratch_database
from tests.test_webhooks_delivery import Hang, WebhookReceiver, record

pytestmark = pytest.mark.slow


@pytest.fixture
def own_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database that only this test's server processes use."""
    with scratch_database(backend, tmp_path, "restart") as url:
        yield url


def start_server(database_url: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `tallystick serve` on a free port; return the process and its root URL."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from tallystick.cli.main import run; run()",
        "serve",
        "--port",
        str(port),
        "--database-url",
        database_url,
        "--log-level",
        "warning",
    ]
    log_file = log_path.open("ab")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(root + "/healthz", timeout=1).status_code == 200:
                return process, root
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"server did not start within 60 s: {log_path.read_text()}")


def test_event_delivered_after_server_killed(own_database_url, tmp_path):
    from tallystick.server.api_keys import create_api_key
    from tallystick.server.db import Store

    log_path = tmp_path / "server.log"
    receiver = WebhookReceiver(script=[Hang(seconds=60)])
    first, first_root = start_server(own_database_url, log_path)
    second = None
    store = Store.open(own_database_url)
    try:
        with store.transaction() as session:
            created = create_api_key(session, "restart-org")
        headers = {"Authorization": f"Bearer {created.secret}"}
        response = httpx.patch(
            f"{first_root}/api/v2/webhooks/{events.CHECKOUT_COMPLETED}",
            json={"url": receiver.url, "enabled": True},
            headers=headers,
        )
        secret = response.json()["signingSecret"]
        event_id = record(store, created.organization_id, events.CHECKOUT_COMPLETED, {"id": "chk_killed"})

        # The first server has claimed the delivery and is waiting for the receiver's response.
        assert receiver.hanging.wait(30), log_path.read_text()
        first.kill()
        first.wait(timeout=30)
        second, second_root = start_server(own_database_url, log_path)

        seen = receiver.wait_for(lambda requests: len(requests) >= 2, timeout=60)
        deliveries = _wait_for_delivered(second_root, headers, event_id)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        receiver.close()
        store.dispose()

    assert [request.envelope["id"] for request in seen] == [event_id, event_id]
    verify_webhook_signature(seen[1].body, seen[1].headers[SIGNATURE_HEADER], secret)
    assert deliveries["status"] == "delivered"
    # The killed process never recorded its attempt; the new one recorded the successful one.
    assert [attempt["responseStatus"] for attempt in deliveries["attempts"]] == [200]


def _wait_for_delivered(root: str, headers: dict[str, str], event_id: str) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = httpx.get(
            f"{root}/api/v2/webhooks/deliveries", params={"eventId": event_id}, headers=headers
        ).json()["data"]
        if listed and listed[0]["status"] == "delivered":
            return httpx.get(f"{root}/api/v2/webhooks/deliveries/{listed[0]['id']}", headers=headers).json()
        time.sleep(0.1)
    pytest.fail(f"event {event_id} was not delivered after the restart")
