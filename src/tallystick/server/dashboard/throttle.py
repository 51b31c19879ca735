"""Limits on failed dashboard sign-ins, against password guessing.

Failed attempts are counted per email in a moving window (the `limits` package), so an
attacker can lock one operator out for the window but cannot lock out every operator. Counts are
not kept per client address, because behind a reverse proxy every request has the proxy's
address. The counts use the storage of the API rate limit (`rate_limit_storage_url`). In memory,
each server process counts on its own; with a shared storage such as Redis, the limit applies
across processes.
"""

from __future__ import annotations

from fastapi import Request
from limits import parse
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

FAILURES_PER_EMAIL = parse("10/15minutes")


class SignInThrottle:
    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)

    @staticmethod
    def _key(email: str) -> str:
        return f"dashboard-sign-in:{email.strip().lower()}"

    def allowed(self, email: str) -> bool:
        """Return whether another sign-in attempt is allowed for this email."""
        return self.limiter.test(FAILURES_PER_EMAIL, self._key(email))

    def record_failure(self, email: str) -> None:
        self.limiter.hit(FAILURES_PER_EMAIL, self._key(email))


def sign_in_throttle(request: Request) -> SignInThrottle:
    """Return the app's throttle, made on first use with the rate limit's storage."""
    throttle = getattr(request.app.state, "sign_in_throttle", None)
    if throttle is None:
        throttle = SignInThrottle(request.app.state.rate_limit_storage)
        request.app.state.sign_in_throttle = throttle
    return throttle
