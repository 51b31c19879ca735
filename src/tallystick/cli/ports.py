"""Check that `tallystick serve` can listen on its address before it opens the database."""

from __future__ import annotations

import errno
import socket
from contextlib import ExitStack

# Advice for the bind errors that a wrong --host or --port causes.
_BIND_ADVICE = {
    errno.EADDRINUSE: "stop the program that uses it or pass --port with a free port",
    errno.EACCES: "ports below 1024 need extra privileges; pass --port 1024 or higher",
    errno.EADDRNOTAVAIL: "pass --host with an address of this machine",
}


def listen_problem(host: str, port: int) -> str | None:
    """Return why a server cannot listen on (`host`, `port`), with the fix, or None when it can.

    Every address that `host` resolves to is bound at once and then released, as asyncio's
    create_server binds them for uvicorn with one worker. SO_REUSEADDR is set as there, so a
    port with only connections in TIME_WAIT counts as free. IPv6 sockets are IPv6-only.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot resolve --host {host!r}: {error.strerror}; pass --host with an address or host name of this machine"
    with ExitStack() as stack:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            sock = stack.enter_context(socket.socket(family, kind, protocol))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                endpoint = f"[{address[0]}]:{port}" if family == socket.AF_INET6 else f"{address[0]}:{port}"
                advice = _BIND_ADVICE.get(error.errno, "pass another --host or --port")
                return f"cannot listen on {endpoint}: {error.strerror or error}; {advice}"
    return None
