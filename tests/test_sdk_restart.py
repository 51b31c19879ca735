"""The server dies mid-run: the application keeps serving, and its signals arrive once.

A real `tallystick serve` process (the CLI, a SQLite file, a loopback port) is killed with
SIGKILL while the application keeps handling chat messages, then restarted on the same port.
"""

from __future__ import annotations

import json
import signal as os_signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

import tallystick
from tallystick import Client
from tallystick.signals import buffer
from tallystick.signals import stats as signal_stats
from tallystick.tracing import stats as span_stats
from tests.conftest import free_port
from tests.sdk_fakes import create_chatbot, openai_clients

CLI = str(Path(sys.executable).parent / "tallystick")
# Seconds the SDK may wait for the server on the application's thread.
SIGNAL_TIMEOUT = 1.0


class ServerProcess:
    def __init__(self, port: int, database_url: str, log_path: Path) -> None:
        self.port = port
        self.database_url = database_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                CLI,
                "serve",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.root + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start within 30 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(os_signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    database_url = f"sqlite:///{tmp_path / 'restart.db'}"
    created = subprocess.run(
        [CLI, "api-keys", "create", "--org", "Restart test", "--database-url", database_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = json.loads(created.stdout)["apiKey"]
    running = ServerProcess(free_port(), database_url, tmp_path / "server.log")
    running.start()
    yield running, api_key
    running.stop()


def chat(openai_sync, keys: list[str], statuses: list[str]) -> float:  # type: ignore[no-untyped-def]
    """Handle one chat message as the guide's chatbot does; return the seconds it took."""
    started = time.monotonic()
    assert tallystick.has_credits("acme", "chat_credits")
    with tallystick.tracing("acme", external_product_id="chatbot"):
        reply = openai_sync.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        receipt = tallystick.signal("chat_message", enable_cost_tracing=True)
    assert reply.choices[0].message.content == "Hello there!"
    keys.append(receipt.idempotency_key)
    statuses.append(receipt.status)
    return time.monotonic() - started


@pytest.mark.slow
def test_signals_survive_server_restart(server_process: tuple[ServerProcess, str]):
    running, api_key = server_process
    with Client(running.root, api_key) as client:
        create_chatbot(client)
        client.customers.create(name="Acme", external_id="acme")
        client.customers.grant_credits(
            external_customer_id="acme", credit_currency_key="chat_credits", amount=100
        )
        # A fresh process handles its first signal slowly (imports, statement compilation). On
        # a loaded machine that took longer than the signal timeout, so the checks below would
        # read it as the server being down.
        warmed = client.signals.send("chat_message", external_customer_id="warm-up", external_product_id="chatbot")
        assert warmed["ingested"] == 1
        client.customers.credit_balances(external_customer_id="acme")
    tallystick.initialize_tracing(api_key=api_key, api_url=running.root, signal_timeout=SIGNAL_TIMEOUT)
    tallystick.autoinstrument(["openai"])
    openai_sync, _ = openai_clients()
    sent_before = signal_stats()["signals_sent"]
    keys: list[str] = []
    statuses: list[str] = []

    for _ in range(3):
        chat(openai_sync, keys, statuses)
    running.kill()
    durations = [chat(openai_sync, keys, statuses) for _ in range(5)]
    buffered = buffer.pending_keys() & set(keys)
    running.start()

    deadline = time.monotonic() + 60
    while (
        buffer.pending_keys() & set(keys) or span_stats()["spans_pending"]
    ) and time.monotonic() < deadline:
        # The retry thread resends in the background; the test only waits for it.
        time.sleep(0.2)

    assert statuses == ["sent"] * 3 + ["buffered"] * 5
    assert buffered == set(keys[3:])
    # While the server is down each message waits at most for the balance check and the
    # signal's connection attempt, both bounded by the signal timeout.
    assert max(durations) < 2 * SIGNAL_TIMEOUT + 0.5
    assert not buffer.pending_keys() & set(keys)
    assert signal_stats()["signals_sent"] - sent_before == 8
    with Client(running.root, api_key) as client:
        stored = client.signals.list(external_customer_id="acme", limit=100)
        balances = client.customers.credit_balances(external_customer_id="acme")["data"]
    stored_keys = [item["idempotencyKey"] for item in stored["data"]]
    assert stored["pagination"]["total"] == 8
    assert sorted(stored_keys) == sorted(keys)
    assert Decimal(balances[0]["availableDecimal"]) == 100 - 8
    assert span_stats()["spans_pending"] == 0


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback socket that accepts connections and never responds, like a hung server."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_hanging_server_blocks_briefly(silent_server: str, tenant):  # type: ignore[no-untyped-def]
    tallystick.initialize_tracing(api_key="sk_test", api_url=silent_server, signal_timeout=0.3)
    try:
        started = time.monotonic()
        receipt = tallystick.signal("chat_message", external_customer_id="acme")
        signal_seconds = time.monotonic() - started
        started = time.monotonic()
        allowed = tallystick.has_credits("acme", "chat_credits")
        check_seconds = time.monotonic() - started
    finally:
        # Signals stay buffered for the hanging server; the next settings send to a live one.
        tallystick.initialize_tracing(api_key=tenant.api_key, api_url=tenant.server.root)

    assert receipt.status == "buffered"
    assert signal_seconds < 1.0
    assert allowed is True
    assert check_seconds < 1.0
