"""A small HTTP client for the tallystick REST API, with only httpx as a dependency."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v2"
# Seconds to wait for a response before giving up.
DEFAULT_TIMEOUT = 30.0


class ApiError(Exception):
    """A non-2xx answer from the server, with its status, error code and message."""

    def __init__(self, status: int, code: str | None, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code or 'error'}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class Client:
    """Call the REST API of a tallystick server.

    The server root and key come from the arguments or from TALLYSTICK_API_URL and
    TALLYSTICK_API_KEY; the client adds ``/api/v2`` itself.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = (api_url or os.environ.get("TALLYSTICK_API_URL") or DEFAULT_API_URL).rstrip("/")
        key = api_key or os.environ.get("TALLYSTICK_API_KEY")
        if not key:
            raise ValueError("No API key: pass api_key= or set TALLYSTICK_API_KEY")
        self.api_url = root
        self._http = httpx.Client(
            base_url=root + API_PREFIX,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            transport=transport,
        )

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Send one request to `path` (relative to /api/v2) and return the decoded JSON body."""
        if params is not None:
            params = {name: value for name, value in params.items() if value is not None}
        response = self._http.request(method, path, json=json, params=params)
        return _decode(response)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _decode(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.is_success:
        return body
    if isinstance(body, dict):
        raise ApiError(response.status_code, body.get("code"), str(body.get("error", body)), body)
    raise ApiError(response.status_code, None, str(body) or response.reason_phrase, body)
