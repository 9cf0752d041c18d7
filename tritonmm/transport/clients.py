"""The registry of Triton clients: one ``TritonClient`` per distinct ``ServerSettings``.

Handlers call :func:`client_for` with the settings their credentials parse to;
equal settings (the same provider credentials) share one client, so one plugin
process keeps one HTTP pool and one gRPC connection per server. Every client is
closed at process exit (:func:`close_all`), so Triton does not wait on open
connections when it shuts down.

Clients are not evicted: closing one that another request is using would break
that request, and a plugin process sees a handful of credential sets.
"""

from __future__ import annotations

import atexit
import threading

from tritonmm.settings import ServerSettings
from tritonmm.transport.client import TritonClient

_clients: dict[ServerSettings, TritonClient] = {}
_lock = threading.Lock()


def client_for(settings: ServerSettings) -> TritonClient:
    """The open client for ``settings``, created on first use."""
    with _lock:
        client = _clients.get(settings)
        if client is None or client.closed:
            client = _clients[settings] = TritonClient(settings)
        return client


def register(client: TritonClient) -> None:
    """Make ``client_for(client.settings)`` answer ``client``: how a test hands code that looks
    its client up a client on a fake transport. A client registered before is closed."""
    with _lock:
        previous = _clients.get(client.settings)
        _clients[client.settings] = client
    if previous is not None and previous is not client:
        previous.close()


def close_all() -> None:
    """Close every client; the next ``client_for`` opens new ones."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


atexit.register(close_all)
