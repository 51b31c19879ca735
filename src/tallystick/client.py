"""Synchronous client for the tallystick REST API, with only httpx as a dependency."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tallystick._http import (
    API_PREFIX,
    DEFAULT_API_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Call,
    RetryPolicy,
    SyncSender,
    build_headers,
    check_client_options,
    resolve_api_key,
)
from tallystick.errors import ApiConnectionError, ApiError
from tallystick.resources import Namespaces

__all__ = ["DEFAULT_API_URL", "ApiConnectionError", "ApiError", "Client"]


class Client(Namespaces):
    """Call the REST API of a tallystick server.

    The server root and key come from the arguments or from TALLYSTICK_API_URL and
    TALLYSTICK_API_KEY; the client adds ``/api/v2`` itself. Resources are attributes
    (``client.customers.get_by_external_id("acme")``); ``get``/``post``/``put``/``delete`` send
    raw requests to any path. Non-2xx responses raise ApiError; a server that cannot be reached
    after the retries raises ApiConnectionError. A server root that is not an http:// or
    https:// URL with a host, or a timeout of 0 or less, raises ValueError here.

    Args:
        timeout: seconds to wait for each attempt, greater than 0 (None waits without limit).
        max_retries: retries after the first attempt (see tallystick._http for which requests
            are retried); 0 disables them.
        transport: an httpx transport, such as httpx.MockTransport in tests.
        headers: extra headers sent with every request.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        key = resolve_api_key(api_key)
        if not key:
            raise ValueError("No API key: pass api_key= or set TALLYSTICK_API_KEY")
        self.api_url = check_client_options(api_url, timeout)
        self._http = httpx.Client(
            base_url=self.api_url + API_PREFIX,
            headers=build_headers(key, headers),
            timeout=timeout,
            transport=transport,
        )
        self._sender = SyncSender(self._http, RetryPolicy(max_retries=max_retries))
        self._attach_resources(self._sender.send)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request to `path` (relative to /api/v2) and return the decoded JSON body."""
        return self._sender.send(Call(method.upper(), path, params=params, body=json, idempotent=idempotent))

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
