"""Limits on failed dashboard sign-ins, against password guessing.

Failed attempts are counted per email in a moving window (the `limits` package), so an
attacker can lock one operator out for the window but cannot lock out every operator. The count
also belongs to the operator's current password, so setting a new one (`tallystick users
set-password`) lets the operator sign in again at once, on every server process. Counts are
not kept per client address, because behind a reverse proxy every request has the proxy's
address. The counts use the storage of the API rate limit (`rate_limit_storage_url`). In memory,
each server process counts on its own; with a shared storage such as Redis, the limit applies
across processes. While that storage fails, sign-ins are not throttled. Argon2id password
hashing still slows guessing, and operators can still sign in.
"""

from __future__ import annotations

import hashlib
import math
import time

from fastapi import Request
from limits import parse
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

from tallystick.server.rate_limit import StorageFailureLog

FAILURES_PER_EMAIL = parse("10/15minutes")


class SignInThrottle:
    def __init__(self, storage: Storage, storage_url: str) -> None:
        self.limiter = MovingWindowRateLimiter(storage)
        self.failures = StorageFailureLog(
            storage_url,
            failed_event="sign_in_throttle.storage_failed",
            recovered_event="sign_in_throttle.storage_recovered",
        )

    @staticmethod
    def _key(email: str, password_fingerprint: str) -> str:
        # A digest, so that a shared storage such as Redis does not list operators' emails.
        digest = hashlib.sha256(f"{email.strip().lower()}\0{password_fingerprint}".encode()).hexdigest()
        return f"dashboard-sign-in:{digest}"

    def allowed(self, email: str, password_fingerprint: str) -> bool:
        """Return whether another sign-in attempt is allowed for this email and password, or
        True when the storage fails.

        `password_fingerprint` identifies the operator's current password ("" when no operator
        has this email).
        """
        try:
            allowed = self.limiter.test(FAILURES_PER_EMAIL, self._key(email, password_fingerprint))
        # Any error, as the API's rate limit does: a failing storage must not stop sign-ins.
        except Exception as error:  # noqa: BLE001 - logged by record_failure
            # The email is left out of the log, because it identifies a person.
            self.failures.record_failure(error)
            return True
        self.failures.record_success()
        return allowed

    def record_failure(self, email: str, password_fingerprint: str) -> None:
        try:
            self.limiter.hit(FAILURES_PER_EMAIL, self._key(email, password_fingerprint))
        except Exception as error:  # noqa: BLE001 - logged by record_failure
            self.failures.record_failure(error)
            return
        self.failures.record_success()

    def seconds_until_allowed(self, email: str, password_fingerprint: str) -> int:
        """Return the whole seconds until the oldest counted failure leaves the window."""
        try:
            stats = self.limiter.get_window_stats(FAILURES_PER_EMAIL, self._key(email, password_fingerprint))
        except Exception as error:  # noqa: BLE001 - logged by record_failure
            self.failures.record_failure(error)
            return 0
        return max(1, math.ceil(stats.reset_time - time.time()))


def sign_in_throttle(request: Request) -> SignInThrottle:
    """Return the app's throttle, made on first use with the rate limit's storage."""
    throttle = getattr(request.app.state, "sign_in_throttle", None)
    if throttle is None:
        storage_url = request.app.state.settings.rate_limit_storage_url.get_secret_value()
        throttle = SignInThrottle(request.app.state.rate_limit_storage, storage_url)
        request.app.state.sign_in_throttle = throttle
    return throttle
