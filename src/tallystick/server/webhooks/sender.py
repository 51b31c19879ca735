"""Build webhook envelopes and send them as signed HTTP POST requests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore

from tallystick import __version__
from tallystick.server import clock
from tallystick.server.observability import WEBHOOK_FAILURES
from tallystick.server.webhooks.targets import PublicOnlyNetworkBackend
from tallystick.webhooks import SIGNATURE_HEADER, sign_webhook_payload

log = logging.getLogger(__name__)

USER_AGENT = f"tallystick-webhooks/{__version__}"
# Connections kept open to receivers, shared by all concurrent deliveries of one process.
MAX_CONNECTIONS = 50


def build_envelope(
    *,
    event_id: str,
    name: str,
    payload_key: str,
    payload: dict[str, Any],
    occurred_at: datetime,
    is_test: bool,
) -> bytes:
    """Serialise the envelope ``{id, event, timestamp, isTest, data: {<key>: payload}}``.

    `id` is the outbox event id: it stays the same on every retry and redelivery, so receivers
    can drop repeats. `timestamp` is when the event was recorded, not when it was sent.
    """
    envelope = {
        "id": event_id,
        "event": name,
        "timestamp": format_timestamp(occurred_at),
        "isTest": is_test,
        "data": {payload_key: payload},
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def format_timestamp(moment: datetime) -> str:
    """Render `moment` as RFC 3339 UTC with milliseconds, such as 2026-01-01T00:00:00.000Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SendResult:
    started_at: datetime
    # None when no response arrived.
    response_status: int | None
    latency_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300


class WebhookSender:
    """Send signed webhook requests over a shared connection pool.

    Redirects are not followed (a 3xx counts as a failure), so a receiver cannot redirect a
    webhook to an address the target rules forbid.
    """

    def __init__(self, *, timeout_seconds: float, allow_private_targets: bool) -> None:
        self.timeout_seconds = timeout_seconds
        backend = None if allow_private_targets else PublicOnlyNetworkBackend()
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=MAX_CONNECTIONS, network_backend=backend
        )

    async def send(self, url: str, body: bytes, secret: str) -> SendResult:
        """POST `body` to `url`, signed with `secret` at the current time.

        Every failure to get a response, timeouts included, is returned as a SendResult with
        an error instead of raised.
        """
        started_at = clock.now()
        timestamp_ms = int(started_at.timestamp() * 1000)
        headers = [
            (b"Content-Type", b"application/json"),
            (b"User-Agent", USER_AGENT.encode("ascii")),
            (SIGNATURE_HEADER.encode("ascii"), sign_webhook_payload(body, secret, timestamp_ms).encode("ascii")),
        ]
        timeout = self.timeout_seconds
        extensions = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}

        status: int | None = None
        error: str | None = None
        began = time.perf_counter()
        try:
            # httpcore's timeouts apply per operation; this bounds the whole request, so a
            # receiver that sends its response slowly cannot hold the delivery past the timeout.
            async with asyncio.timeout(timeout):
                # The body is not read: only the status decides the outcome.
                async with self._pool.stream(
                    "POST", url, headers=headers, content=body, extensions=extensions
                ) as response:
                    status = response.status
        except (TimeoutError, httpcore.TimeoutException):
            error = f"timed out after {timeout:g} s"
        except httpcore.ConnectError as failure:
            error = f"connection failed: {_describe(failure)}"
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as failure:
            error = f"request failed: {_describe(failure)}"
        except OSError as failure:
            error = f"request failed: {failure}"
        except Exception as failure:  # noqa: BLE001 - an unexpected error must not stop the worker
            # The URL is not logged: it may carry a receiver's secret token.
            log.exception("webhooks.request_failed")
            error = f"request failed: {type(failure).__name__}: {failure}"
        latency_ms = round((time.perf_counter() - began) * 1000)

        # Once a status arrived it decides the outcome, even if closing the stream failed.
        if status is not None:
            error = None if 200 <= status < 300 else f"receiver responded with HTTP {status}"
        if error is not None:
            WEBHOOK_FAILURES.inc()
        return SendResult(
            started_at=started_at,
            response_status=status,
            latency_ms=latency_ms,
            error=error[:500] if error else None,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _describe(failure: Exception) -> str:
    return str(failure) or type(failure).__name__
