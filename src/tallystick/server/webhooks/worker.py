"""The background task that sends webhooks from the server process.

Every server process runs one `WebhookWorker` (unless `webhook_delivery_enabled` is false). The
outbox and delivery tables are the only queue: the worker polls them, claims due deliveries
and sends each one in its own asyncio task, so one slow receiver does not hold up the others.
Database calls run on a small thread pool because the store's sessions are synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

from tallystick.server import clock
from tallystick.server.db import Store
from tallystick.server.settings import Settings
from tallystick.server.webhooks import delivery
from tallystick.server.webhooks.delivery import ClaimedDelivery
from tallystick.server.webhooks.sender import SendResult, WebhookSender

log = logging.getLogger(__name__)

# Most requests one process has in flight at once.
MAX_IN_FLIGHT = 32
# Outbox events turned into deliveries per transaction.
DISPATCH_BATCH_SIZE = 200
# Maximum pause, in seconds, after repeated database errors in the polling loop.
MAX_ERROR_PAUSE_SECONDS = 30.0
# Seconds between two prunes of old outbox events, and events deleted per prune transaction.
PRUNE_INTERVAL_SECONDS = 3600.0
PRUNE_BATCH_SIZE = 1000

T = TypeVar("T")


class WebhookWorker:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._sender = WebhookSender(
            timeout_seconds=settings.webhook_timeout_seconds,
            allow_private_targets=settings.allow_private_webhook_targets,
        )
        self._database = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhooks-db")
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # time.monotonic() at which the next prune is due; the first comes soon after start.
        self._next_prune = 0.0

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="webhooks-worker")
        log.info("webhooks.worker_started")

    async def stop(self) -> None:
        """Stop polling and abandon requests in flight; their claims lapse and are retried."""
        tasks = [task for task in (self._loop_task, *self._in_flight) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Let database calls already running finish before the caller disposes the store.
        await asyncio.to_thread(self._database.shutdown, wait=True, cancel_futures=True)
        await self._sender.aclose()
        log.info("webhooks.worker_stopped")

    async def _run(self) -> None:
        consecutive_errors = 0
        while True:
            try:
                busy = await self.run_once()
                consecutive_errors = 0
            except Exception:  # noqa: BLE001 - the loop must survive a database outage
                consecutive_errors += 1
                log.exception("webhooks.worker_failed", extra={"consecutive_errors": consecutive_errors})
                pause = min(MAX_ERROR_PAUSE_SECONDS, self.settings.webhook_poll_interval_seconds * 2**consecutive_errors)
                await asyncio.sleep(pause)
                continue
            if not busy:
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
                    await self.prune()
                await asyncio.sleep(self.settings.webhook_poll_interval_seconds)

    async def prune(self) -> int:
        """Delete the outbox events past the retention period, a batch per transaction; return
        how many were deleted. A failure is logged and left to the next prune."""
        deleted = 0
        try:
            while True:
                count = await self._in_database(self._prune_batch)
                deleted += count
                if count < PRUNE_BATCH_SIZE:
                    break
        except Exception:  # noqa: BLE001 - pruning must not stop deliveries
            log.exception("webhooks.prune_failed", extra={"deleted": deleted})
            return deleted
        if deleted:
            log.info("webhooks.pruned", extra={"deleted_events": deleted})
        return deleted

    async def run_once(self) -> bool:
        """Dispatch new outbox events and start sending due deliveries; return whether any were found."""
        self._in_flight = {task for task in self._in_flight if not task.done()}
        if not await self._in_database(self._has_work):
            return False

        dispatched = await self._in_database(self._dispatch)
        capacity = MAX_IN_FLIGHT - len(self._in_flight)
        claimed = await self._in_database(lambda: self._claim(capacity)) if capacity > 0 else []
        for item in claimed:
            task = asyncio.create_task(self._deliver(item), name=f"webhooks-{item.delivery_id}")
            self._in_flight.add(task)
        return dispatched > 0 or bool(claimed)

    async def deliver_now(self, event_ids: Sequence[str]) -> int:
        """Send the first delivery attempt of each event of `event_ids` before returning; return
        how many attempts this call made.

        The events must be committed. A delivery that another worker claimed first is waited
        for until its attempt is recorded, for at most the claim time plus the request timeout.
        A failed attempt is retried later by the polling loop, on the usual schedule.
        """
        # An event leaves this set at its first attempt, so a retry that falls due meanwhile
        # is left to the polling loop.
        remaining = set(event_ids)
        settings = self.settings
        deadline = time.monotonic() + settings.webhook_claim_seconds + settings.webhook_timeout_seconds
        attempts = 0
        while remaining:
            ids = sorted(remaining)
            dispatched = await self._in_database(lambda: self._dispatch(ids))
            claimed = await self._in_database(lambda: self._claim(MAX_IN_FLIGHT, ids))
            await asyncio.gather(*(self._deliver(item) for item in claimed))
            attempts += len(claimed)
            remaining.difference_update(item.event_id for item in claimed)
            if dispatched or claimed:
                continue

            waiting = await self._in_database(lambda: self._count_unattempted(ids))
            if waiting == 0:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "webhooks.deliver_now_timed_out",
                    extra={"unattempted": waiting, "first_event_id": ids[0]},
                )
                break
            await asyncio.sleep(min(settings.webhook_poll_interval_seconds, 0.05))
        return attempts

    async def _deliver(self, item: ClaimedDelivery) -> None:
        result = await self._sender.send(item.url, item.body, item.secret)
        try:
            await self._in_database(lambda: self._record(item, result))
        except Exception:  # noqa: BLE001 - the claim lapses and the delivery is retried
            log.exception(
                "webhooks.attempt_not_recorded",
                extra={"delivery_id": item.delivery_id, "event_id": item.event_id},
            )

    async def _in_database(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._database, work)

    def _has_work(self) -> bool:
        with self.store.read_sessions() as session:
            return delivery.has_work(session, clock.now())

    def _dispatch(self, event_ids: Sequence[str] | None = None) -> int:
        with self.store.transaction() as session:
            return delivery.dispatch_outbox(
                session, clock.now(), self.settings, DISPATCH_BATCH_SIZE, event_ids=event_ids
            )

    def _claim(self, limit: int, event_ids: Sequence[str] | None = None) -> list[ClaimedDelivery]:
        with self.store.transaction() as session:
            return delivery.claim_due_deliveries(session, clock.now(), self.settings, limit, event_ids=event_ids)

    def _prune_batch(self) -> int:
        retention = timedelta(days=self.settings.webhook_retention_days)
        with self.store.transaction() as session:
            return delivery.prune_finished(session, clock.now(), retention, PRUNE_BATCH_SIZE)

    def _count_unattempted(self, event_ids: Sequence[str]) -> int:
        with self.store.read_sessions() as session:
            return delivery.count_unattempted(session, event_ids)

    def _record(self, item: ClaimedDelivery, result: SendResult) -> None:
        with self.store.transaction() as session:
            delivery.record_attempt(session, item, result, clock.now(), self.settings)


def start_webhook_worker(store: Store, settings: Settings) -> WebhookWorker | None:
    """Start the worker on the running event loop, or return None when this process sends none."""
    if not settings.webhook_delivery_enabled:
        return None
    worker = WebhookWorker(store, settings)
    worker.start()
    return worker
