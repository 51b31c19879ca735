"""Balance checks before billable work: `has_credits`, and holds that reserve credits first.

`has_credits` reads the customer's balance; it suits a check before each chat message. Two
parallel requests can both pass it for the last credit, so for expensive work reserve the
credits instead: `reserve_credits` places a hold (credits stop counting as available), the
work runs, and `Hold.settle` sends the signal that consumes the held credits. A hold that is
not settled is released when the `with` block ends, or expires on the server after its TTL.

Customers are named by external id, as in `tracing(...)`. These helpers use a client built
from the `initialize_tracing` settings (or TALLYSTICK_API_URL / TALLYSTICK_API_KEY) with the
short signal timeout and no retries, unless a `client=` is passed. Placing a hold is the
exception: it is retried once, quickly (see HOLD_RETRY_POLICY). When the server cannot be
reached, fails (5xx) or rejects the request as timed out (408), they return `if_unreachable`
(True by default: the application keeps serving, and the signals it sends are buffered and
billed when the server is back, as pending consumption if the credits ran out meanwhile). A
request rejected as rate limited (429) returns `if_rate_limited`, which defaults to
`if_unreachable`. Other API errors, such as a wrong key, raise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tallystick import tracing as tracing_module
from tallystick._http import RetryPolicy, decimal_argument, new_idempotency_key
from tallystick.client import Client
from tallystick.errors import ApiConnectionError, ApiError
from tallystick.signals import SignalReceipt, signal

log = logging.getLogger("tallystick")

_clients: dict[tuple[str, str, float], Client] = {}
_clients_lock = threading.Lock()

# Placing a hold sits on the hot path of an AI request, so it gets one quick retry in place of
# the client's policy. The default client here has no retries, and a Client() with default
# settings retries twice, after about 0.5 s and 1 s. The retry comes after about 0.1 s and
# follows a failed connection, a lost response, a 5xx, or a 408 or 429 whose Retry-After is at
# most 0.25 s. A timed-out attempt is not retried, because a server that does not respond would
# take another full timeout. So the fallback comes at most about two timeouts and 0.25 s after
# the call, and one timeout after it when the server does not respond. These are estimates,
# because httpx times each phase of a request (connect, write, read) on its own.
HOLD_RETRY_POLICY = RetryPolicy(
    max_retries=1, initial_delay=0.1, max_delay=0.1, max_retry_after=0.25, retry_timeouts=False
)
# Statuses below 500 that mean the server could not serve the request now. The helpers handle
# them as an unreachable server, except that a 429 may get its own fallback (`if_rate_limited`).
_UNAVAILABLE_STATUSES = frozenset({408, 429})


def _default_client() -> Client:
    settings = tracing_module.current_settings()
    if settings is None:
        raise RuntimeError(
            "tallystick is not configured: call initialize_tracing(api_key=...) or set TALLYSTICK_API_KEY"
        )
    key = (settings.api_url, settings.api_key, settings.signal_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = Client(
                settings.api_url, settings.api_key, timeout=settings.signal_timeout, max_retries=0
            )
            _clients[key] = client
        return client


def _amount(amount: Decimal | int | float | str, *, allow_zero: bool = False) -> Decimal:
    """Convert `amount` to Decimal; raise ValueError unless it is a number greater than 0 (or
    equal to 0 with `allow_zero`)."""
    requested = decimal_argument("amount", amount)
    if requested < 0 or (requested == 0 and not allow_zero):
        expected = "0 or more" if allow_zero else "greater than 0"
        raise ValueError(f"invalid amount {amount!r}: expected a number of credits {expected}")
    return requested


def _unavailable(error: Exception) -> bool:
    if isinstance(error, ApiConnectionError):
        return True
    return isinstance(error, ApiError) and (error.status >= 500 or error.status in _UNAVAILABLE_STATUSES)


def _fallback(error: Exception, if_unreachable: bool, if_rate_limited: bool | None) -> bool:
    """Return the fallback value for a call that failed with `error`, which `_unavailable` accepts."""
    rate_limited = isinstance(error, ApiError) and error.status == 429
    if rate_limited and if_rate_limited is not None:
        return if_rate_limited
    return if_unreachable


def available_credits(customer: str, currency_key: str, *, client: Client | None = None) -> Decimal:
    """Return the credits of `currency_key` available to the customer (0 for an unknown customer).

    Raises ApiConnectionError or ApiError when the server cannot respond.
    """
    client = client or _default_client()
    try:
        balances = client.customers.credit_balances(external_customer_id=customer)
    except ApiError as error:
        if error.status == 404:
            return Decimal(0)
        raise

    total = Decimal(0)
    for balance in balances.get("data", []):
        if balance.get("currencyKey") == currency_key:
            exact = balance.get("availableDecimal")
            total += Decimal(exact) if exact is not None else Decimal(balance["available"])
    return total


def has_credits(
    customer: str,
    currency_key: str,
    amount: Decimal | int | float | str = 1,
    *,
    client: Client | None = None,
    if_unreachable: bool = True,
    if_rate_limited: bool | None = None,
) -> bool:
    """Return True when the customer has at least `amount` credits of `currency_key` available.

    When the check fails, return `if_unreachable`, or `if_rate_limited` for a 429 when given.
    `amount` may be 0, for an action that costs nothing. Raises ValueError, before any
    request, unless `amount` is a number of 0 or more.
    """
    requested = _amount(amount, allow_zero=True)
    try:
        return available_credits(customer, currency_key, client=client) >= requested
    except (ApiConnectionError, ApiError) as error:
        if not _unavailable(error):
            raise
        returned = _fallback(error, if_unreachable, if_rate_limited)
        log.warning(
            "balance.check_unavailable",
            extra={
                "customer": customer,
                "currency_key": currency_key,
                "returned": returned,
                "error": str(error),
            },
        )
        return returned


@dataclass
class Hold:
    """A reservation of credits; `allowed` tells whether the work may go ahead.

    `hold_id` is None when the hold was denied, or when the server could not be reached and
    `allowed` came from `if_unreachable` or `if_rate_limited`. Settling then sends a plain signal.
    """

    customer: str
    currency_key: str
    amount: Decimal
    allowed: bool
    hold_id: str | None
    available: Decimal | None
    expires_at: str | None = None
    settled: bool = False
    released: bool = False

    def settle(
        self,
        event_name: str,
        data: Mapping[str, Any] | None = None,
        enable_cost_tracing: bool = False,
        **options: Any,
    ) -> SignalReceipt:
        """Send the signal for the finished work; its consumption draws the held credits first.

        Takes the arguments of `signal()`; the customer defaults to the hold's.
        """
        options.setdefault("external_customer_id", self.customer)
        receipt = signal(event_name, data, enable_cost_tracing, hold_id=self.hold_id, **options)
        self.settled = True
        return receipt

    def release(self, *, client: Client | None = None) -> None:
        """Give the credits back without consuming them. Failures are logged; the hold then
        expires on the server by itself."""
        if self.hold_id is None or self.settled or self.released:
            return
        try:
            (client or _default_client()).credits.release_hold(self.hold_id)
        except (ApiConnectionError, ApiError) as error:
            log.warning("hold.release_failed", extra={"hold_id": self.hold_id, "error": str(error)})
            return
        self.released = True


def hold_credits(
    customer: str,
    currency_key: str,
    amount: Decimal | int | float | str = 1,
    *,
    ttl_seconds: int | None = None,
    idempotency_key: str | None = None,
    client: Client | None = None,
    if_unreachable: bool = True,
    if_rate_limited: bool | None = None,
) -> Hold:
    """Reserve `amount` credits for the customer if that many are available.

    The request carries `idempotency_key`, or a fresh key when None, so a retry after a lost
    response gets the hold that the server already placed instead of a second one. The retry
    follows HOLD_RETRY_POLICY whatever the client's `max_retries`: at most one, after about
    0.1 s, and none after a timeout. With the default 2 s signal timeout, the fallback to
    `if_unreachable` thus comes after about 4.25 s at most, or about 2 s when the server does
    not respond. Both are estimates, because httpx times each phase of a request on its own.
    Pass your own key to make a later retry of the same call safe as well. A key names one
    hold: the server returns that hold to every request with the key, even after it ended.
    A request still rejected as rate limited (429) after the retry returns `if_rate_limited`,
    or `if_unreachable` when that is None. Raises ValueError, before any request, unless
    `amount` is a number greater than 0.
    """
    requested = _amount(amount)
    key = idempotency_key or new_idempotency_key()
    try:
        placed = (client or _default_client()).credits.hold(
            external_customer_id=customer,
            credit_currency_key=currency_key,
            amount=requested,
            ttl_seconds=ttl_seconds,
            idempotency_key=key,
            retry=HOLD_RETRY_POLICY,
        )
    except (ApiConnectionError, ApiError) as error:
        if not _unavailable(error):
            raise
        # NOTE: when every response was lost, the server may still have placed the hold. Its
        # credits then stay reserved until its TTL ends, unless a hold request with the logged
        # key gets the hold back so that it can be released.
        returned = _fallback(error, if_unreachable, if_rate_limited)
        log.warning(
            "hold.unavailable",
            extra={
                "customer": customer,
                "currency_key": currency_key,
                "idempotency_key": key,
                "returned": returned,
                "error": str(error),
            },
        )
        return Hold(customer, currency_key, requested, returned, None, None)

    exact = placed.get("availableDecimal")
    return Hold(
        customer=customer,
        currency_key=currency_key,
        amount=requested,
        allowed=bool(placed["allowed"]),
        hold_id=placed.get("holdId"),
        available=Decimal(exact) if exact is not None else Decimal(placed["available"]),
        expires_at=placed.get("expiresAt"),
    )


@contextmanager
def reserve_credits(
    customer: str,
    currency_key: str,
    amount: Decimal | int | float | str = 1,
    *,
    ttl_seconds: int | None = None,
    idempotency_key: str | None = None,
    client: Client | None = None,
    if_unreachable: bool = True,
    if_rate_limited: bool | None = None,
) -> Iterator[Hold]:
    """Hold credits for the block; release them at the end unless `hold.settle(...)` was called.

    ``with reserve_credits("acme", "chat_credits", 5) as hold:`` then check `hold.allowed`.
    The hold is placed by `hold_credits`, with its idempotency key and retry.
    """
    hold = hold_credits(
        customer,
        currency_key,
        amount,
        ttl_seconds=ttl_seconds,
        idempotency_key=idempotency_key,
        client=client,
        if_unreachable=if_unreachable,
        if_rate_limited=if_rate_limited,
    )
    try:
        yield hold
    finally:
        if hold.allowed and not hold.settled:
            hold.release(client=client)
