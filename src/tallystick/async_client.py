"""Asynchronous client for the tallystick REST API: the same resources as Client, awaited."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tallystick._http import (
    API_PREFIX,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    AsyncSender,
    Call,
    RetryPolicy,
    build_headers,
    check_client_options,
    resolve_api_key,
)
from tallystick.resources import Namespaces

__all__ = ["AsyncClient"]


class AsyncClient(Namespaces):
    """Call the REST API from asyncio code: ``await client.customers.get(...)``.

    Takes the same arguments as Client and sends identical requests with the same retry rules.
    Every resource method returns an awaitable of what Client's method returns.
    """

    # NOTE: resource methods are annotated with Client's return types; under AsyncClient they
    # return awaitables of those types, which static type checkers cannot see.

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        key = resolve_api_key(api_key)
        if not key:
            raise ValueError("No API key: pass api_key= or set TALLYSTICK_API_KEY")
        self.api_url = check_client_options(api_url, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.api_url + API_PREFIX,
            headers=build_headers(key, headers),
            timeout=timeout,
            transport=transport,
        )
        self._sender = AsyncSender(self._http, RetryPolicy(max_retries=max_retries))
        self._attach_resources(self._sender.send)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request to `path` (relative to /api/v2) and return the decoded JSON body."""
        return await self._sender.send(
            Call(method.upper(), path, params=params, body=json, idempotent=idempotent)
        )

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, json=body if body is not None else {})

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, json=body)

    async def patch(self, path: str, body: Any) -> Any:
        return await self.request("PATCH", path, json=body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
