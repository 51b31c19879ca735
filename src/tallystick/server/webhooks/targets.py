"""Rules for webhook target URLs: http(s) only, and by default public addresses only.

The URL is checked when an operator sets it, and every connection checks the addresses its
host resolves to again, so a DNS name that later resolves to a private address (DNS rebinding)
is still refused. `TALLYSTICK_ALLOW_PRIVATE_WEBHOOK_TARGETS=true` lifts the address rule for
development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

from tallystick.server.errors import ApiError, bad_request

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")
PRIVATE_TARGETS_HINT = (
    "set TALLYSTICK_ALLOW_PRIVATE_WEBHOOK_TARGETS=true to allow such targets in development"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddressError(Exception):
    """The host resolved to an address that webhooks may not reach."""


def address_problem(address: IPAddress) -> str | None:
    """Return why webhooks may not reach `address` (such as "a loopback address"), or None.

    Only globally routable unicast addresses pass. IPv4 addresses embedded in IPv6 (mapped,
    6to4, Teredo) are judged by the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return address_problem(embedded)

    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private-range address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def check_addresses(host: str, addresses: Iterable[str]) -> None:
    """Raise BlockedAddressError when any of `addresses` is not public.

    Every address must pass, because a client may connect to any of them.
    """
    for text in addresses:
        # getaddrinfo returns scoped IPv6 addresses as "fe80::1%eth0".
        address = ipaddress.ip_address(text.split("%", 1)[0])
        problem = address_problem(address)
        if problem is not None:
            raise BlockedAddressError(f"{host} resolves to {address}, {problem}")


def resolve_host(host: str, port: int) -> list[str]:
    """Return the addresses `host` resolves to for TCP; raise OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return _unique_addresses(infos)


def _unique_addresses(infos: Iterable[Any]) -> list[str]:
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def validate_webhook_url(url: str, *, allow_private: bool) -> str:
    """Return `url` when webhooks may be sent to it; raise a 400 naming the problem otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise _invalid_url(url, f"must be at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _invalid_url(url, f"not a valid URL ({error})") from None

    if parts.scheme not in ALLOWED_SCHEMES:
        raise _invalid_url(url, "must start with http:// or https://")
    host = parts.hostname
    if not host:
        raise _invalid_url(url, "has no host name")
    if not host.isascii():
        raise _invalid_url(url, "host name must be ASCII; use its punycode (xn--) form")
    if parts.username is not None or parts.password is not None:
        raise _invalid_url(url, "must not contain a user name or password")
    if any(character.isspace() for character in url):
        raise _invalid_url(url, "must not contain spaces; percent-encode them")

    if allow_private:
        return url
    try:
        addresses = resolve_host(host, port or (443 if parts.scheme == "https" else 80))
    except OSError:
        raise _invalid_url(url, f"host {host} could not be resolved") from None
    try:
        check_addresses(host, addresses)
    except BlockedAddressError as error:
        raise _invalid_url(
            url, f"{error}; webhooks go to public addresses only ({PRIVATE_TARGETS_HINT})"
        ) from None
    return url


def _invalid_url(url: str, message: str) -> ApiError:
    return bad_request("url", message, url)


class PublicOnlyNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses `address_problem` accepts.

    It resolves the host itself, checks every address, then connects to the address, so no
    second lookup can return something else. TLS still verifies the certificate against the
    host name, because httpcore passes the URL's host to the TLS handshake separately.
    """

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise httpcore.ConnectError(f"host {host} could not be resolved: {error}") from error
        addresses = _unique_addresses(infos)
        try:
            check_addresses(host, addresses)
        except BlockedAddressError as error:
            raise httpcore.ConnectError(f"{error}; webhooks go to public addresses only") from error

        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
        assert last_error is not None, "getaddrinfo returned no addresses"
        raise last_error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
