"""Exceptions raised by the SDK's REST clients."""

from __future__ import annotations

from typing import Any

import httpx


class TallystickError(Exception):
    """Base class of every exception the SDK raises on purpose."""


class ApiError(TallystickError):
    """A non-2xx response from the server, with its status, error code and message.

    `code` is the server's stable snake_case code (such as ``not_found``), or None when the body
    was not the API's error shape. `body` is the decoded JSON body, or the raw text.
    """

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code or 'error'}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = headers or {}


class ApiConnectionError(TallystickError, httpx.TransportError):
    """The server could not be reached, or did not respond in time, after every retry.

    It is also an httpx.TransportError, so code that catches httpx errors keeps working.
    """

    def __init__(self, message: str, *, method: str, url: str) -> None:
        super().__init__(f"{method} {url}: {message}")
        self.message = message
        self.method = method
        self.url = url
