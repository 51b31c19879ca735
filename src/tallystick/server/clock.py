"""The one place that reads the wall clock, so tests and test clocks can pin time."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_frozen: datetime | None = None
# Time pinned for the current thread or task only, by `at()`.
_pinned: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("pinned_time", default=None)


def now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    pinned = _pinned.get()
    if pinned is not None:
        return pinned
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC)


def freeze(at: datetime | None) -> None:
    """Pin `now()` to `at` (aware) for the whole process, or release it with None. For tests only."""
    global _frozen
    if at is not None and at.tzinfo is None:
        raise ValueError("freeze() needs an aware datetime")
    _frozen = at


@contextmanager
def at(moment: datetime) -> Iterator[None]:
    """Make `now()` return `moment` inside the block, in this thread or task only.

    Billing uses it to run work as of another instant: a test clock's frozen time, or the
    billing periods of an order activated with a start date in the past.
    """
    if moment.tzinfo is None:
        raise ValueError("at() needs an aware datetime")
    token = _pinned.set(moment)
    try:
        yield
    finally:
        _pinned.reset(token)
