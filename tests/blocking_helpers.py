"""Helpers for tests that hold a server's signal writes back to watch what queues behind them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import text


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll `condition` every 20 ms; return whether it became true within `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@contextmanager
def signal_writes_blocked(store) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Hold a transaction that makes every signal insert wait until the block ends."""
    with store.transaction() as session:
        if store.is_sqlite:
            # Write sessions begin with BEGIN IMMEDIATE, so this one holds the write lock.
            session.execute(text("SELECT 1"))
        else:
            session.execute(text("LOCK TABLE signals IN EXCLUSIVE MODE"))
        yield
