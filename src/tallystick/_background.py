"""One daemon thread that retries buffered work (signals, span batches) while any is pending."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("tallystick")

# Seconds between two passes over the registered retry tasks while any of them has work.
RETRY_INTERVAL = 0.5


class RetryLoop:
    """Run registered tasks every RETRY_INTERVAL seconds while one reports pending work.

    A task is a callable returning True while it still holds work; each task applies its own
    backoff, so a pass over a task that is waiting costs nothing. The thread starts on the
    first `wake()` and sleeps on an Event while nothing is pending.
    """

    def __init__(self) -> None:
        self._tasks: list[Callable[[], bool]] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, task: Callable[[], bool]) -> None:
        with self._lock:
            if task not in self._tasks:
                self._tasks.append(task)

    def wake(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopped.clear()
                self._thread = threading.Thread(target=self._run, name="tallystick-retry", daemon=True)
                self._thread.start()
        self._wakeup.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wakeup.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wakeup.wait()
            if self._stopped.is_set():
                return
            # Cleared before the pass, so a wake() during the pass is not lost.
            self._wakeup.clear()
            pending = False
            for task in list(self._tasks):
                try:
                    pending = task() or pending
                except Exception:  # noqa: BLE001 - the loop must survive any task failure
                    log.exception("retry.task_failed")
                    pending = True
            if pending:
                self._wakeup.set()
            self._stopped.wait(RETRY_INTERVAL)


retry_loop = RetryLoop()
