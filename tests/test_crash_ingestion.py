"""SIGKILL during bulk ingestion: after restarts and client retries, every signal counts once.

A real `tallystick serve` process (the CLI) runs on its own database. Client threads send
batches of signals, each signal with its own idempotency key, and resend a batch with the same
keys until the server acknowledges it. Meanwhile the server is killed with SIGKILL several times
and restarted on the same port. Afterwards the database must hold each signal once, rated once,
and the ledger must add up when recomputed from its entries.
"""

from __future__ import annotations

import json
import os
import signal as os_signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import free_port, scratch_database

CLI = str(Path(sys.executable).parent / "tallystick")

CUSTOMERS = 5
GRANT_PER_CUSTOMER = Decimal(300)
CLIENTS = 4
BATCHES_PER_CLIENT = 20
BATCH_SIZE = 25
KILLS = 3
# Seconds a client keeps resending one batch before the test gives up on the server.
RETRY_DEADLINE_SECONDS = 60


class ServerProcess:
    """`tallystick serve` on a fixed loopback port, started and killed by the test."""

    def __init__(
        self,
        port: int,
        database_url: str,
        log_path: Path,
        log_level: str = "warning",
        environment: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.log_level = log_level
        self.environment = environment or {}
        self.database_url = database_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [CLI, "serve", "--port", str(self.port), "--database-url", self.database_url, "--log-level", self.log_level],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TALLYSTICK_RATE_LIMIT": "off", **self.environment},
            )
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.root + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready within 30 s")

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
                self.process.wait(timeout=10)


@pytest.fixture
def crash_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own, so the killed server shares nothing with the other tests."""
    with scratch_database(backend, tmp_path, "crash") as url:
        yield url


@pytest.fixture
def crash_server(crash_database_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    created = subprocess.run(
        [CLI, "api-keys", "create", "--org", "Crash test", "--database-url", crash_database_url, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = json.loads(created.stdout)["apiKey"]
    running = ServerProcess(free_port(), crash_database_url, tmp_path / "server.log")
    running.start()
    yield running, api_key
    running.stop()


def create_catalog(http: httpx.Client) -> str:
    """A currency, a product whose chat_message costs one credit, and granted customers."""
    currency = http.post("/credits/currencies", json={"name": "Chat Credits", "key": "chat_credits"}).json()
    product = http.post("/products/", json={"name": "Chatbot", "externalId": "chatbot", "active": True}).json()
    line = {
        "name": "Chat message",
        "pricing": {
            "pricingType": "UsagePrepaidCredits",
            "eventName": "chat_message",
            "creditsCurrencyId": currency["id"],
            "creditCost": 1,
        },
    }
    assert http.put(f"/products/{product['id']}", json={"productAttributes": [line]}).status_code == 200
    for number in range(CUSTOMERS):
        external_id = f"user-{number}"
        assert http.post("/customers/", json={"name": external_id, "externalId": external_id}).status_code == 201
        grant = {"creditCurrencyKey": "chat_credits", "amount": str(GRANT_PER_CUSTOMER)}
        assert http.post(f"/customers/external/{external_id}/credits/grants", json=grant).status_code == 201
    return currency["id"]


@dataclass
class ClientTally:
    """What the clients saw, summed over all threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged_batches: int = 0
    failed_attempts: int = 0
    resent_batches: int = 0
    duplicates_reported: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def batch_of(client_number: int, batch_number: int) -> list[dict[str, object]]:
    signals = []
    for index in range(BATCH_SIZE):
        sequence = (client_number * BATCHES_PER_CLIENT + batch_number) * BATCH_SIZE + index
        signals.append(
            {
                "eventName": "chat_message",
                "customer": {"externalCustomerId": f"user-{sequence % CUSTOMERS}"},
                "attribution": {"externalProductId": "chatbot"},
                "idempotencyKey": f"crash-{sequence}",
            }
        )
    return signals


def run_client(root: str, api_key: str, client_number: int, tally: ClientTally) -> None:
    """Send this client's batches in order, resending each with the same keys until acknowledged."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=root + "/api/v2", headers=headers, timeout=10) as http:
        for batch_number in range(BATCHES_PER_CLIENT):
            body = {"signals": batch_of(client_number, batch_number)}
            deadline = time.monotonic() + RETRY_DEADLINE_SECONDS
            attempts = 0
            while True:
                attempts += 1
                try:
                    response = http.post("/signals/bulk", json=body)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    result = response.json()
                    if result["ingested"] + result["duplicates"] != BATCH_SIZE:
                        tally.errors.append(f"batch {client_number}/{batch_number}: {result}")
                    tally.add(
                        acknowledged_batches=1,
                        resent_batches=int(attempts > 1),
                        duplicates_reported=result["duplicates"],
                    )
                    break
                tally.add(failed_attempts=1)
                if time.monotonic() > deadline:
                    tally.errors.append(f"batch {client_number}/{batch_number} not acknowledged in time")
                    return
                time.sleep(0.1)


@dataclass(frozen=True)
class StoreTotals:
    signals: int
    distinct_keys: int
    rated_units: Decimal
    consumed: Decimal
    pending: Decimal
    spend_entries: Decimal
    grant_entries: Decimal
    grants_remaining: Decimal
    grants_recomputed: Decimal
    grants_mismatched: int
    orphan_spends: int


def store_totals(database_url: str) -> StoreTotals:
    """Read the database directly and recompute the ledger from its entries."""
    from tallystick.server.db import Store
    from tallystick.server.models import CreditGrant, LedgerEntry, PendingConsumption, Signal

    store = Store.open(database_url)
    try:
        with store.read_sessions() as session:
            signals = session.scalar(select(func.count()).select_from(Signal))
            distinct_keys = session.scalar(select(func.count(func.distinct(Signal.idempotency_key))))
            consumed = session.scalar(select(func.coalesce(func.sum(Signal.credits_consumed), 0)))
            pending_on_signals = session.scalar(select(func.coalesce(func.sum(Signal.credits_pending), 0)))
            pending = session.scalar(select(func.coalesce(func.sum(PendingConsumption.remaining), 0)))
            assert Decimal(pending_on_signals) == Decimal(pending)

            def entry_sum(entry_type: str) -> Decimal:
                total = session.scalar(
                    select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.entry_type == entry_type)
                )
                return Decimal(total)

            per_grant = dict(
                session.execute(select(LedgerEntry.grant_id, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.grant_id)).all()
            )
            grants = session.scalars(select(CreditGrant)).all()
            mismatched = sum(Decimal(per_grant.get(grant.id, 0)) != grant.remaining for grant in grants)
            orphan_spends = session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.entry_type == "spend", LedgerEntry.signal_id.not_in(select(Signal.id)))
            )
            return StoreTotals(
                signals=signals,
                distinct_keys=distinct_keys,
                rated_units=Decimal(consumed) + Decimal(pending_on_signals),
                consumed=Decimal(consumed),
                pending=Decimal(pending),
                spend_entries=-entry_sum("spend"),
                grant_entries=entry_sum("grant"),
                grants_remaining=sum((grant.remaining for grant in grants), Decimal(0)),
                grants_recomputed=sum((Decimal(value) for value in per_grant.values()), Decimal(0)),
                grants_mismatched=mismatched,
                orphan_spends=orphan_spends,
            )
    finally:
        store.dispose()


@pytest.mark.slow
def test_sigkill_during_ingestion_counts_once(crash_server, backend):
    running, api_key = crash_server
    with httpx.Client(base_url=running.root + "/api/v2", headers={"Authorization": f"Bearer {api_key}"}) as http:
        create_catalog(http)
    tally = ClientTally()
    total_batches = CLIENTS * BATCHES_PER_CLIENT
    clients = [
        threading.Thread(target=run_client, args=(running.root, api_key, number, tally), daemon=True)
        for number in range(CLIENTS)
    ]

    for thread in clients:
        thread.start()
    kills = 0
    for kill_number in range(1, KILLS + 1):
        # Kill at evenly spread points of the run, while every client is sending.
        while tally.acknowledged_batches < total_batches * kill_number // (KILLS + 1):
            time.sleep(0.005)
        running.kill()
        kills += 1
        time.sleep(0.3)
        running.start()
    for thread in clients:
        thread.join(timeout=RETRY_DEADLINE_SECONDS * 2)

    sent = total_batches * BATCH_SIZE
    totals = store_totals(running.database_url)
    print(
        f"{backend}: {sent} signals in {total_batches} batches, {kills} kills, "
        f"{tally.failed_attempts} failed attempts, {tally.resent_batches} batches resent, "
        f"{tally.duplicates_reported} duplicates reported on resend"
    )
    assert tally.errors == []
    assert tally.acknowledged_batches == total_batches
    assert kills == KILLS
    # The kills hit requests in flight, and some of those had committed before the response.
    assert tally.resent_batches >= 1
    # Each signal stored and rated once.
    assert totals.signals == sent
    assert totals.distinct_keys == sent
    assert totals.rated_units == sent
    # The ledger recomputed from its entries matches the signals and the grants' cached remaining.
    granted = GRANT_PER_CUSTOMER * CUSTOMERS
    assert totals.grant_entries == granted
    assert totals.spend_entries == totals.consumed
    assert totals.grants_mismatched == 0
    assert totals.grants_recomputed == totals.grants_remaining
    assert totals.grants_remaining == granted - totals.consumed
    assert totals.orphan_spends == 0
    # 400 signals per customer against 300 credits: 300 consumed and 100 pending each.
    assert totals.consumed == granted
    assert totals.pending == sent - granted
    balances = httpx.get(
        running.root + "/api/v2/customers/external/user-0/credits/balances",
        headers={"Authorization": f"Bearer {api_key}"},
    ).json()
    assert Decimal(str(balances["data"][0]["available"])) == 0
