"""Shared transactions for concurrent one-signal requests of one organization.

Storing one signal takes about as many round trips to the database as storing a thousand:
look up the customer, product and pricing line, lock the credit account, load its grants,
write the ledger entry and the signal. Clients that send each signal as it happens (the Paid
SDK's `signal()` does) would pay all of them per signal. So one-signal requests that arrive
while earlier ones are being written wait, and are then written together in one transaction.

There is no timer: a request that finds no group of its organization being written starts a
transaction at once, so a quiet server adds no delay. Each request still gets the response it would get alone. When any signal
of a shared transaction fails, the transaction is rolled back and each request is written on
its own, so a failure keeps its usual response (and rolls back a customer created for it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tallystick.server.observability import SIGNAL_REQUESTS_PER_TRANSACTION

log = logging.getLogger(__name__)

# Requests written in one shared transaction at most, as many signals as one bulk request.
MAX_REQUESTS_PER_TRANSACTION = 1_000


@dataclass
class WaitingRequest:
    """A one-signal request waiting for its transaction, with what writing it alone needs."""

    body: Any
    principal: Any
    request: Any
    future: asyncio.Future[Any] = field(init=False)


# Writes a group of requests of one organization in a worker thread. It returns one result or
# exception per request, in order.
GroupWriter = Callable[[str, list[WaitingRequest]], Awaitable[list[Any]]]


class SignalCoalescer:
    """Groups one-signal requests by organization and writes each group in one transaction.

    One group of an organization is written at a time, and the requests that arrive meanwhile
    form the next group. On 2 cores, 16 clients sending one signal after another were written
    at about 670 requests per second this way, against about 550 with two groups at a time,
    which split the waiting requests into smaller groups.
    """

    def __init__(self, max_transactions: int = 1) -> None:
        self.max_transactions = max_transactions
        self._queues: dict[str, list[WaitingRequest]] = {}
        self._running: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, organization_id: str, waiting: WaitingRequest, write_group: GroupWriter) -> Any:
        """Queue the request and return its result once the transaction it joined ends."""
        waiting.future = asyncio.get_running_loop().create_future()
        self._queues.setdefault(organization_id, []).append(waiting)
        if self._running.get(organization_id, 0) < self.max_transactions:
            self._running[organization_id] = self._running.get(organization_id, 0) + 1
            task = asyncio.create_task(self._drain(organization_id, write_group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: a client that goes away cancels its wait, not the transaction it is part of.
        return await asyncio.shield(waiting.future)

    async def _drain(self, organization_id: str, write_group: GroupWriter) -> None:
        """Write the organization's queued requests, group after group, until none are left."""
        group: list[WaitingRequest] = []
        try:
            while True:
                queue = self._queues.get(organization_id)
                if not queue:
                    return
                group = queue[:MAX_REQUESTS_PER_TRANSACTION]
                del queue[:MAX_REQUESTS_PER_TRANSACTION]
                SIGNAL_REQUESTS_PER_TRANSACTION.observe(len(group))
                results = await write_group(organization_id, group)
                for waiting, result in zip(group, results, strict=True):
                    _settle(waiting.future, result)
                group = []
        except BaseException as error:
            # The writer returns failures as results, so this is a bug or a shutdown: the
            # requests of the group in hand must not wait forever.
            log.exception("signals.group_write_failed", extra={"organization_id": organization_id})
            for waiting in group:
                _settle(waiting.future, error)
            raise
        finally:
            # No await between the empty-queue check above and this line, so a request queued
            # after that check always finds a free slot and starts its own drain.
            self._running[organization_id] -= 1
            if self._running[organization_id] == 0:
                del self._running[organization_id]
                if not self._queues.get(organization_id):
                    self._queues.pop(organization_id, None)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
