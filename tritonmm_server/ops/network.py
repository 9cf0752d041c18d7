"""Loopback ports and plain HTTP requests to a local server (stdlib only: urllib)."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request
from contextlib import ExitStack

from tritonmm_server.ops.errors import PortInUse

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports the kernel considers free right now.

    All sockets are held open until every port is picked so the same port cannot
    come back twice. Another process may still take one before tritonserver binds
    it; the server then exits and ``start()`` reports ``PortInUse``.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def check_port_free(host: str, port: int, purpose: str) -> None:
    """Raise ``PortInUse`` if ``port`` cannot be bound.

    SO_REUSEADDR mirrors what the server does, so a port that only has
    connections in TIME_WAIT is not reported as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(
                    f"{purpose} port {host}:{port} is already in use "
                    f"(pick another with --{purpose.lower()}-port, or stop the process holding it)"
                ) from exc
            raise


# --- talking to the server (stdlib only) ------------------------------------------------

# No proxies: an http_proxy in the environment must not capture loopback health checks.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def loopback_request(
    method: str, url: str, body: bytes | None = None, timeout: float = 2.0
) -> tuple[int, bytes] | None:
    """(status, body) of one request, or None when nothing answered."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None
