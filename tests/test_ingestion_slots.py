"""Ingestion slots: a server process writes at most `ingestion_concurrency` signal batches at once."""

from __future__ import annotations

import threading

import httpx

from tallystick.server.app import create_app
from tallystick.server.settings import Settings
from tests.blocking_helpers import signal_writes_blocked, wait_until
from tests.conftest import make_tenant, serve_app
from tests.test_signals_api import chat_message, create_catalog


def _post_batch(tenant, key: str, answers: list[httpx.Response]) -> None:  # type: ignore[no-untyped-def]
    # Two signals: one-signal requests wait in the coalescer's queue instead (see
    # test_signal_coalescing).
    body = {"signals": [chat_message("slot-customer", idempotencyKey=f"{key}-{part}") for part in ("a", "b")]}
    with httpx.Client(base_url=tenant.server.api_url, headers=tenant.http.headers, timeout=30) as client:
        answers.append(client.post("/signals/bulk", json=body))


def test_second_batch_waits_for_slot(store, database_url: str) -> None:  # type: ignore[no-untyped-def]
    app = create_app(Settings(database_url=database_url, ingestion_concurrency=1), store=store)
    with serve_app(app, database_url) as running:
        tenant = make_tenant(running, store)
        create_catalog(store, tenant.organization_id)
        answers: list[httpx.Response] = []
        _post_batch(tenant, "warm-up", answers)
        assert answers.pop().status_code == 200
        limiter = app.state.ingestion_limiter

        threads = []
        # The first batch keeps its slot until the test lets go.
        with signal_writes_blocked(store):
            for key in ("first", "second"):
                thread = threading.Thread(target=_post_batch, args=(tenant, key, answers))
                thread.start()
                threads.append(thread)
            assert wait_until(lambda: limiter.statistics().tasks_waiting == 1)
            assert limiter.statistics().borrowed_tokens == 1
            assert answers == []

        for thread in threads:
            thread.join(timeout=30)
        assert [answer.status_code for answer in answers] == [200, 200]
        assert [answer.json()["ingested"] for answer in answers] == [2, 2]
        assert limiter.statistics().borrowed_tokens == 0
        tenant.http.close()


def test_default_allows_two_batches() -> None:
    assert Settings().ingestion_concurrency == 2
