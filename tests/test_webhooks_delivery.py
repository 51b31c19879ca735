"""Webhook delivery end to end: outbox events reach a receiver on 127.0.0.1, signed, retried.

The test server runs with TALLYSTICK_ALLOW_PRIVATE_WEBHOOK_TARGETS=true and fast retries (see
conftest). Events are recorded through `record_event`, as billing code records them, or through
the ledger for the credit events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tallystick.server import clock, events
from tallystick.webhooks import SIGNATURE_HEADER, verify_webhook_signature

# Seconds a test waits for something the worker should do within well under a second.
WAIT_SECONDS = 15


@dataclass
class ReceivedRequest:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the request arrived

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass(frozen=True)
class Hang:
    """A scripted response: keep the request open this many seconds (or until released)."""

    seconds: float


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every request and responds from a script.

    `script` lists the responses to the first requests in order (an HTTP status or a Hang).
    Later requests get 200.
    """

    def __init__(self, script: list[int | Hang] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[ReceivedRequest] = []
        self.hanging = threading.Event()
        self.release = threading.Event()
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server method name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver._record(ReceivedRequest(headers, body, time.monotonic()))
                if isinstance(answer, Hang):
                    receiver.hanging.set()
                    receiver.release.wait(answer.seconds)
                    answer = 200
                try:
                    self.send_response(answer)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the sender gave up on this request already

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def _record(self, request: ReceivedRequest) -> int | Hang:
        with self._changed:
            self.requests.append(request)
            answer = self.script.pop(0) if self.script else 200
            self._changed.notify_all()
        return answer

    def wait_for(self, condition: Callable[[list[ReceivedRequest]], bool], timeout: float = WAIT_SECONDS) -> list[ReceivedRequest]:
        """Wait until `condition(requests)` holds; fail the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"receiver saw {len(self.requests)} requests, condition unmet")
                self._changed.wait(left)
            return list(self.requests)

    def requests_for(self, event_id: str) -> list[ReceivedRequest]:
        with self._changed:
            return [request for request in self.requests if request.envelope.get("id") == event_id]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    made = WebhookReceiver()
    yield made
    made.close()


def enable_webhooks(tenant, url: str, *names: str) -> str:  # type: ignore[no-untyped-def]
    """Point `names` at `url`, enabled, and return the organization's signing secret."""
    for name in names:
        response = tenant.http.patch(f"/webhooks/{name}", json={"url": url, "enabled": True})
        assert response.status_code == 200, response.text
    response = tenant.http.post("/webhooks/rotate-secret", json={})
    assert response.status_code == 200, response.text
    return response.json()["signingSecret"]


def record(store, organization_id: str, event_type: str, payload: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    """Record one outbox event in its own committed transaction; return its id."""
    with store.transaction() as session:
        return events.record_event(session, organization_id, event_type, payload).id


def wait_for_delivery(tenant, event_id: str, status: str = "delivered") -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Poll the deliveries API until the event's delivery has `status`; return its detail."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        listed = tenant.http.get("/webhooks/deliveries", params={"eventId": event_id}).json()["data"]
        if listed and listed[0]["status"] == status:
            return tenant.http.get(f"/webhooks/deliveries/{listed[0]['id']}").json()
        time.sleep(0.05)
    pytest.fail(f"delivery of {event_id} did not reach status {status}: {listed}")


def test_each_event_arrives_once_signed(tenant, store, receiver):
    names = [events.CHECKOUT_COMPLETED, events.INVOICE_PAID, events.PAYMENT_FAILED]
    secret = enable_webhooks(tenant, receiver.url, *names)
    payloads = {
        events.CHECKOUT_COMPLETED: {"id": "chk_1", "status": "completed"},
        events.INVOICE_PAID: {"id": "inv_1", "amountPaid": 2900},
        events.PAYMENT_FAILED: {"id": "pay_1", "status": "failed"},
    }
    event_ids = {name: record(store, tenant.organization_id, name, payload) for name, payload in payloads.items()}

    receiver.wait_for(lambda seen: len(seen) >= 3)
    for event_id in event_ids.values():
        wait_for_delivery(tenant, event_id)
    time.sleep(0.5)  # a duplicate would arrive within a few polls

    assert len(receiver.requests) == 3
    for name, event_id in event_ids.items():
        (request,) = receiver.requests_for(event_id)
        verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], secret)
        envelope = request.envelope
        assert envelope["event"] == name
        assert envelope["isTest"] is False
        assert envelope["timestamp"].endswith("Z")
        assert request.headers["content-type"] == "application/json"
    assert receiver.requests_for(event_ids[events.CHECKOUT_COMPLETED])[0].envelope["data"] == {
        "checkout": payloads[events.CHECKOUT_COMPLETED]
    }
    assert receiver.requests_for(event_ids[events.INVOICE_PAID])[0].envelope["data"] == {
        "invoice": payloads[events.INVOICE_PAID]
    }


def test_retries_after_500_with_same_id(tenant, store):
    receiver = WebhookReceiver(script=[500, 500, 200])
    try:
        secret = enable_webhooks(tenant, receiver.url, events.INVOICE_CREATED)
        event_id = record(store, tenant.organization_id, events.INVOICE_CREATED, {"id": "inv_2"})

        seen = receiver.wait_for(lambda requests: len(requests) >= 3)
        detail = wait_for_delivery(tenant, event_id)
    finally:
        receiver.close()

    assert [request.envelope["id"] for request in seen] == [event_id] * 3
    for request in seen:
        verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], secret)
    assert detail["attemptCount"] == 3
    assert [attempt["responseStatus"] for attempt in detail["attempts"]] == [500, 500, 200]
    assert [attempt["succeeded"] for attempt in detail["attempts"]] == [False, False, True]
    assert detail["attempts"][0]["error"] == "receiver responded with HTTP 500"
    assert detail["attempts"][2]["error"] is None
    assert all(attempt["latencyMs"] >= 0 for attempt in detail["attempts"])
    # Backoff doubles from the 0.2 s base the test server uses.
    assert seen[1].at - seen[0].at >= 0.2
    assert seen[2].at - seen[1].at >= 0.4


def test_timeout_is_retried(tenant, store):
    receiver = WebhookReceiver(script=[Hang(seconds=5)])
    try:
        enable_webhooks(tenant, receiver.url, events.PAYMENT_SUCCEEDED)
        event_id = record(store, tenant.organization_id, events.PAYMENT_SUCCEEDED, {"id": "pay_2"})

        detail = wait_for_delivery(tenant, event_id)
    finally:
        receiver.close()

    first, second = detail["attempts"]
    assert first["responseStatus"] is None
    assert first["error"] == "timed out after 1.5 s"
    assert first["latencyMs"] >= 1400
    assert second["responseStatus"] == 200


def test_connection_error_retried_to_new_url(tenant, store, receiver):
    closed = WebhookReceiver()
    dead_url = closed.url
    closed.close()
    enable_webhooks(tenant, dead_url, events.CHECKOUT_EXPIRED)
    event_id = record(store, tenant.organization_id, events.CHECKOUT_EXPIRED, {"id": "chk_3"})

    failing = _wait_for_attempts(tenant, event_id, 1)
    assert failing["attempts"][0]["error"].startswith("connection failed")
    assert failing["status"] == "pending"
    tenant.http.patch(f"/webhooks/{events.CHECKOUT_EXPIRED}", json={"url": receiver.url})

    detail = wait_for_delivery(tenant, event_id)
    assert detail["attempts"][-1]["url"] == receiver.url
    assert receiver.requests_for(event_id)


def _wait_for_attempts(tenant, event_id: str, count: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        listed = tenant.http.get("/webhooks/deliveries", params={"eventId": event_id}).json()["data"]
        if listed and listed[0]["attemptCount"] >= count:
            return tenant.http.get(f"/webhooks/deliveries/{listed[0]['id']}").json()
        time.sleep(0.05)
    pytest.fail(f"delivery of {event_id} did not reach {count} attempts")


def test_rolled_back_change_sends_nothing(tenant, store, receiver):
    enable_webhooks(tenant, receiver.url, events.CHECKOUT_CREATED)

    with pytest.raises(RuntimeError), store.transaction() as session:
        events.record_event(session, tenant.organization_id, events.CHECKOUT_CREATED, {"id": "chk_rolled_back"})
        raise RuntimeError("the change failed after recording its event")
    marker_id = record(store, tenant.organization_id, events.CHECKOUT_CREATED, {"id": "chk_committed"})

    receiver.wait_for(lambda seen: len(seen) >= 1)
    wait_for_delivery(tenant, marker_id)
    time.sleep(0.5)

    assert [request.envelope["data"]["checkout"]["id"] for request in receiver.requests] == ["chk_committed"]


def test_disabled_webhook_sends_nothing(tenant, store, receiver):
    enable_webhooks(tenant, receiver.url, events.INVOICE_POSTED, events.INVOICE_CREATED)
    tenant.http.patch(f"/webhooks/{events.INVOICE_POSTED}", json={"enabled": False})
    skipped_id = record(store, tenant.organization_id, events.INVOICE_POSTED, {"id": "inv_off"})
    # The worker takes outbox events in recording order, so once this one is delivered the
    # skipped one has been handled too.
    marker_id = record(store, tenant.organization_id, events.INVOICE_CREATED, {"id": "inv_on"})

    wait_for_delivery(tenant, marker_id)
    time.sleep(0.3)

    assert receiver.requests_for(skipped_id) == []
    assert tenant.http.get("/webhooks/deliveries", params={"eventId": skipped_id}).json()["data"] == []


def test_redeliver_sends_same_event_again(tenant, store, receiver):
    enable_webhooks(tenant, receiver.url, events.INVOICE_PAID)
    event_id = record(store, tenant.organization_id, events.INVOICE_PAID, {"id": "inv_again"})
    first = wait_for_delivery(tenant, event_id)

    response = tenant.http.post(f"/webhooks/deliveries/{first['id']}/redeliver", json={})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    second = wait_for_delivery(tenant, event_id)

    assert second["id"] == first["id"]
    assert second["attemptCount"] == 2
    assert [request.envelope["id"] for request in receiver.requests_for(event_id)] == [event_id, event_id]


def test_other_tenant_cannot_see_deliveries(tenant, other_tenant, store, receiver):
    enable_webhooks(tenant, receiver.url, events.INVOICE_PAID)
    event_id = record(store, tenant.organization_id, events.INVOICE_PAID, {"id": "inv_private"})
    delivery = wait_for_delivery(tenant, event_id)

    assert other_tenant.http.get("/webhooks/deliveries").json()["data"] == []
    assert other_tenant.http.get(f"/webhooks/deliveries/{delivery['id']}").status_code == 404
    redelivered = other_tenant.http.post(f"/webhooks/deliveries/{delivery['id']}/redeliver", json={})
    assert redelivered.status_code == 404


def test_two_workers_deliver_each_event_once(tenant, store, server, receiver):
    """A second worker (as in a second server process) shares the load without duplicates."""
    from tallystick.server.settings import Settings
    from tallystick.server.webhooks.worker import WebhookWorker

    enable_webhooks(tenant, receiver.url, events.OVERAGE_INCURRED)
    second_worker = _WorkerThread(lambda: WebhookWorker(store, Settings(database_url=server.database_url)))
    try:
        event_ids = [
            record(store, tenant.organization_id, events.OVERAGE_INCURRED, {"id": f"over_{index}"})
            for index in range(40)
        ]
        receiver.wait_for(lambda seen: len(seen) >= 40)
        for event_id in event_ids:
            wait_for_delivery(tenant, event_id)
        time.sleep(0.5)
    finally:
        second_worker.stop()

    received = [request.envelope["id"] for request in receiver.requests]
    assert sorted(received) == sorted(event_ids)


class _WorkerThread:
    """Run a WebhookWorker on its own event loop in a thread, like another server process."""

    def __init__(self, make_worker: Callable[[], Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._make_worker = make_worker
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.worker = self._make_worker()
        self._loop.call_soon(self.worker.start)
        self._loop.call_soon(self._started.set)
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.worker.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def test_credits_depleted_and_low_balance_from_ledger(tenant, store, receiver):
    from tallystick.server.ledger import service as ledger
    from tests.ledger_factories import create_currency, create_customer

    with store.transaction() as session:
        customer = create_customer(session, organization_id=tenant.organization_id, external_id="user-low")
        currency = create_currency(session, organization_id=tenant.organization_id)
        customer_id, currency_id = customer.id, currency.id
    response = tenant.http.put(f"/webhooks/low-balance-thresholds/{currency_id}", json={"threshold": "3"})
    assert response.status_code == 200, response.text
    secret = enable_webhooks(tenant, receiver.url, events.CREDITS_LOW, events.CREDITS_DEPLETED)
    account = {"organization_id": tenant.organization_id, "customer_id": customer_id, "currency_id": currency_id}

    def grant(amount: str) -> None:
        with store.transaction() as session:
            ledger.grant(session, **account, amount=Decimal(amount))

    def consume(amount: str) -> None:
        with store.transaction() as session:
            ledger.consume(
                session, **account, amount=Decimal(amount), signal_id=None, event_name="chat_message",
                product_id=None, occurred_at=clock.now(),
            )

    grant("10")
    consume("6")  # 10 -> 4: still above 3
    consume("1.5")  # 4 -> 2.5: crosses 3
    consume("1")  # 2.5 -> 1.5: already below, no second event
    consume("1.5")  # 1.5 -> 0: depleted
    grant("10")  # 0 -> 10: back above the threshold
    consume("8")  # 10 -> 2: crosses again

    seen = receiver.wait_for(lambda requests: len(requests) >= 3)
    time.sleep(0.5)
    seen = receiver.requests
    by_event = [(request.envelope["event"], request.envelope["data"]["credits"]) for request in seen]
    low = [data for name, data in by_event if name == events.CREDITS_LOW]
    depleted = [data for name, data in by_event if name == events.CREDITS_DEPLETED]
    # Deliveries run concurrently, so the two crossings may arrive in either order.
    assert sorted((item["available"], item["threshold"]) for item in low) == [("2", "3"), ("2.5", "3")]
    assert low[0]["customerId"] == customer_id
    assert low[0]["externalCustomerId"] == "user-low"
    assert low[0]["creditsCurrencyId"] == currency_id
    assert len(depleted) == 1
    assert depleted[0]["customerId"] == customer_id
    for request in seen:
        verify_webhook_signature(request.body, request.headers[SIGNATURE_HEADER], secret)
