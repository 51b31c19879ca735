"""The background task that renews orders and expires checkouts from each server process.

Every server process runs one `BillingWorker` (unless `billing_worker_enabled` is false). Each
poll it advances the orders whose billing is due (see `renewals.renew_due_orders`, which is
safe with any number of processes) and stores the expiry of checkouts past their `expires_at`
(claimed with FOR UPDATE SKIP LOCKED). The orders table is the only queue.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from tallystick.server import clock
from tallystick.server.billing.renewals import renew_due_orders
from tallystick.server.checkout.service import expire_due_checkouts
from tallystick.server.db import Store
from tallystick.server.models import Checkout, Order
from tallystick.server.settings import Settings

log = logging.getLogger(__name__)

# Orders advanced, or checkouts expired, per poll before the task yields to the next poll.
BATCH_SIZE = 200
# Maximum pause, in seconds, after repeated database errors.
MAX_ERROR_PAUSE_SECONDS = 300.0


class BillingWorker:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        # Sessions are synchronous, so each poll runs on this one thread.
        self._database = ThreadPoolExecutor(max_workers=1, thread_name_prefix="billing-db")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="billing-worker")
        log.info("billing.worker_started")

    async def stop(self) -> None:
        """Stop polling; a poll in progress finishes its current transaction first."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # Let a poll already running finish before the caller disposes the store.
        await asyncio.to_thread(self._database.shutdown, wait=True, cancel_futures=True)
        log.info("billing.worker_stopped")

    async def _run(self) -> None:
        consecutive_errors = 0
        while True:
            try:
                busy = await asyncio.get_running_loop().run_in_executor(self._database, self.run_once)
                consecutive_errors = 0
            except Exception:
                consecutive_errors += 1
                log.exception("billing.worker_failed", extra={"consecutive_errors": consecutive_errors})
                pause = min(MAX_ERROR_PAUSE_SECONDS, self.settings.billing_poll_interval_seconds * 2**consecutive_errors)
                await asyncio.sleep(pause)
                continue
            if not busy:
                await asyncio.sleep(self.settings.billing_poll_interval_seconds)

    def run_once(self) -> bool:
        """Renew due orders and expire due checkouts once; return whether a batch was full."""
        now = clock.now()
        # A read first, so that an idle poll takes no write lock (SQLite has one for everyone).
        with self.store.read_sessions() as session:
            orders_due = session.scalar(
                select(Order.id).where(Order.billing_due_at <= now, Order.status == "active").limit(1)
            )
            checkouts_due = session.scalar(
                select(Checkout.id).where(Checkout.status == "active", Checkout.expires_at <= now).limit(1)
            )
        renewed = expired = 0
        if orders_due is not None:
            renewed = renew_due_orders(self.store.transaction, now, limit=BATCH_SIZE)
        if checkouts_due is not None:
            with self.store.transaction() as session:
                expired = expire_due_checkouts(session, now, limit=BATCH_SIZE)
        if renewed or expired:
            log.info("billing.worker_pass", extra={"orders_renewed": renewed, "checkouts_expired": expired})
        return renewed >= BATCH_SIZE or expired >= BATCH_SIZE


def start_billing_worker(store: Store, settings: Settings) -> BillingWorker | None:
    """Start the worker on the running event loop, or return None when this process runs none."""
    if not settings.billing_worker_enabled:
        return None
    worker = BillingWorker(store, settings)
    worker.start()
    return worker
