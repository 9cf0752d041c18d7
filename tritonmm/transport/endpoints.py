"""Which server a request goes to, when the credentials name one or several.

Each configured endpoint (an HTTP URL and its gRPC ``host:port``) becomes one or more
**addresses**: a name that resolves to several IPs (a Kubernetes headless Service
lists every ready pod) becomes one address per IP, looked up again every
``RESOLVE_INTERVAL`` seconds, so pods that come and go are followed. Requests to an
IP carry the configured name where the server sees it: the HTTP ``Host`` header, the
TLS server name (SNI and the certificate check) for https, the gRPC ``:authority``.

Why the plugin balances itself, over one connection per address, rather than gRPC's
``dns:///name`` target with the ``round_robin`` policy: round_robin spreads calls
evenly, blind to how long each runs, and a chat stream runs for seconds while an
embedding call takes milliseconds; it knows nothing of which server has the model
READY, and it hides its reconnects from us. One picker for HTTP and gRPC alike keeps
one view of each server: requests in flight, model readiness, failures.

A request goes to the address with the fewest requests in flight (ties in turn) that
is not taken out and, when there is more than one address, has the model READY
(asked on ``/v2/models/<m>/ready``, trusted for ``READY_TTL`` seconds). An address
that fails to connect or answers UNAVAILABLE is taken out for ``EJECT_BASE`` seconds,
doubling with each failure up to ``EJECT_MAX``; after that it is probed on
``/v2/health/ready`` in the background and gets traffic again once the probe passes.
When every address is out, requests try them anyway, the soonest due first: a lone
server that blinked must not refuse requests for seconds after it is back.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tritonmm.errors import ConnectionFailed, TritonMMError
from tritonmm.server_endpoints import ServerEndpoint
from tritonmm.url_policy import Resolver

LOG = logging.getLogger(__name__)

RESOLVE_INTERVAL = 30.0  # seconds between DNS look-ups of a configured name
READY_TTL = 10.0  # seconds a model's readiness on one address is trusted
EJECT_BASE = 1.0  # seconds out after the first failure; doubles with each further one
EJECT_MAX = 10.0  # the longest time out: an address that failed is probed at least this often


@dataclass(eq=False)
class Address:
    """One server as connected to: a configured endpoint, or one IP its name resolves to."""

    http_base: str  # where HTTP requests go: http://10.0.0.5:8000 (or the URL as configured)
    grpc_target: str  # where the gRPC channel connects: 10.0.0.5:8001
    label: str  # for people: http://triton-headless:8000 (10.0.0.5)
    grpc_label: str
    host_header: str = ""  # the configured host:port, when connecting to an IP for a name
    sni: str = ""  # the configured name, for https to an IP
    authority: str = ""  # the configured gRPC host:port, when connecting to an IP
    in_flight: int = 0
    failures: int = 0  # consecutive; 0: in service
    retry_at: float = 0.0  # taken out until then; then probed
    probing: bool = False
    retired: bool = False  # its name no longer resolves to it
    models: dict[str, tuple[float, bool]] = field(default_factory=dict)  # model -> (when asked, READY)
    channel: Any = None  # the client's gRPC stream opener for this address, once opened

    def http_options(self) -> dict[str, Any]:
        """``headers`` and ``extensions`` that make a request to an IP look like one to the configured name."""
        options: dict[str, Any] = {}
        if self.host_header:
            options["headers"] = {"Host": self.host_header}
        if self.sni:
            options["extensions"] = {"sni_hostname": self.sni}
        return options


def expand(endpoint: ServerEndpoint, resolve: Resolver) -> list[tuple[str, Address]] | None:
    """The addresses of one endpoint, keyed by IP ("" for the endpoint as configured);
    None when its name does not resolve now."""
    http = urlsplit(endpoint.http_url)
    host = (http.hostname or "").lower()
    grpc_host, _, grpc_port = endpoint.grpc_target.rpartition(":")
    as_given = Address(endpoint.http_url, endpoint.grpc_target, endpoint.http_url, endpoint.grpc_target)
    # An IP needs no look-up; a gRPC endpoint on another name than the URL cannot be paired
    # with the URL's addresses, so both are used as configured (httpx and gRPC resolve them).
    if _is_ip(host) or grpc_host.strip("[]").lower() != host:
        return [("", as_given)]
    port = http.port or (443 if http.scheme == "https" else 80)
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        LOG.warning("cannot resolve %s (%s); keeping the addresses known so far", host, exc)
        return None
    ips: list[str] = []
    for info in infos:
        ip = str(info[4][0])
        if _is_ip(ip) and ip not in ips:
            ips.append(ip)
    if not ips:
        return None
    path = http.path.rstrip("/")
    addresses = []
    for ip in ips:
        spelled = f"[{ip}]" if ":" in ip else ip
        addresses.append(
            (
                ip,
                Address(
                    http_base=f"{http.scheme}://{spelled}:{port}{path}",
                    grpc_target=f"{spelled}:{grpc_port}",
                    label=f"{endpoint.http_url} ({ip})",
                    grpc_label=f"{endpoint.grpc_target} ({ip})",
                    host_header=http.netloc.rpartition("@")[2],
                    sni=host if http.scheme == "https" else "",
                    authority=endpoint.grpc_target,
                ),
            )
        )
    return addresses


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


class EndpointPool:
    """The addresses of a client's endpoints, their health, and the choice of one per request.

    ``health(address)`` says whether a server is ready (the probe), ``model_ready(address, m)``
    whether it has model ``m`` READY; ``spawn(fn)`` runs a probe in the background (tests run
    it at once); ``retire(address)`` releases what the client opened for an address that is gone.
    """

    def __init__(
        self,
        endpoints: tuple[ServerEndpoint, ...],
        *,
        health: Callable[[Address], bool],
        model_ready: Callable[[Address, str], bool],
        resolve: Resolver = socket.getaddrinfo,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        retire: Callable[[Address], None] = lambda address: None,
    ) -> None:
        self._endpoints = endpoints
        self._health = health
        self._model_ready = model_ready
        self._resolve = resolve
        self._clock = clock
        self._spawn = spawn or _in_thread
        self._retire = retire
        self._lock = threading.Lock()
        self._resolve_lock = threading.Lock()
        self._by_endpoint: list[dict[str, Address]] = [{} for _ in endpoints]
        self._next_resolve = float("-inf")
        self._turn = itertools.count()

    # --- the addresses ----------------------------------------------------------------------------

    def addresses(self, *, refresh: bool = True) -> list[Address]:
        """Every current address, in configuration order (looked up first when it is time)."""
        if refresh:
            self._refresh_if_due()
        with self._lock:
            return [a for by_ip in self._by_endpoint for a in by_ip.values()]

    def _refresh_if_due(self) -> None:
        if self._clock() < self._next_resolve:
            return
        # The first look-up waits; later ones are done by one caller while the others go on.
        if not self._resolve_lock.acquire(blocking=not any(self._by_endpoint)):
            return
        try:
            if self._clock() < self._next_resolve:
                return
            found = [expand(endpoint, self._resolve) for endpoint in self._endpoints]
            gone: list[Address] = []
            with self._lock:
                for index, addresses in enumerate(found):
                    old = self._by_endpoint[index]
                    if addresses is None:  # no answer now: keep what we had, or the name as given
                        if not old:
                            endpoint = self._endpoints[index]
                            old[""] = Address(
                                endpoint.http_url, endpoint.grpc_target, endpoint.http_url, endpoint.grpc_target
                            )
                        continue
                    new = {key: old.get(key, address) for key, address in addresses}
                    for key, address in old.items():
                        if key not in new:
                            address.retired = True
                            if address.in_flight == 0:
                                gone.append(address)
                    self._by_endpoint[index] = new
                self._next_resolve = self._clock() + RESOLVE_INTERVAL
        finally:
            self._resolve_lock.release()
        for address in gone:
            LOG.info("Triton address %s no longer resolves; closed", address.label)
            self._retire(address)

    # --- the choice -------------------------------------------------------------------------------

    def choose(self, model: str | None, tried: Collection[Address] = ()) -> Address | None:
        """The address for the next attempt, not one of ``tried``; with ``model``, one that has it
        READY (asked only when there is a choice to make). None when none is left."""
        current = self.addresses()
        now = self._clock()
        asks_model = model is not None and len(current) > 1
        with self._lock:
            due = [a for a in current if a.failures and now >= a.retry_at and not a.probing]
            for address in due:
                address.probing = True
            in_service = [a for a in current if not a.failures]
            if in_service:
                # Known not to have the model: out of the turn, so the others share its share evenly.
                candidates = [
                    a for a in in_service if a not in tried and not (asks_model and _known(a, model, now) is False)
                ]
                turn = next(self._turn)
                ranked = sorted(
                    range(len(candidates)), key=lambda i: (candidates[i].in_flight, (i - turn) % len(candidates))
                )
                candidates = [candidates[i] for i in ranked]
            else:  # every address failed lately: try them anyway, the soonest due first
                candidates = sorted((a for a in current if a not in tried), key=lambda a: a.retry_at)
        for address in due:
            self._spawn(lambda address=address: self._probe(address))
        if not asks_model:
            return candidates[0] if candidates else None
        for address in candidates:
            if self._has_ready(address, model, now):
                return address
        return None

    def _has_ready(self, address: Address, model: str, now: float) -> bool:
        with self._lock:
            known = _known(address, model, now)
        if known is not None:
            return known
        try:
            ready = self._model_ready(address, model)
        except ConnectionFailed as exc:
            self.eject(address, exc)
            return False
        self.mark_model(address, model, ready)
        return ready

    # --- what happened ----------------------------------------------------------------------------

    @contextmanager
    def serving(self, address: Address) -> Iterator[None]:
        """Count a request in flight on ``address`` while the block runs."""
        self.acquire(address)
        try:
            yield
        finally:
            self.release(address)

    def acquire(self, address: Address) -> None:
        with self._lock:
            address.in_flight += 1

    def release(self, address: Address) -> None:
        with self._lock:
            address.in_flight -= 1
            gone = address.retired and address.in_flight == 0
        if gone:
            self._retire(address)

    def succeeded(self, address: Address) -> None:
        """A request got its answer: an address that was out is back."""
        if address.failures:
            with self._lock:
                address.failures, address.retry_at = 0, 0.0
            LOG.warning("Triton at %s answers again", address.label)

    def eject(self, address: Address, cause: TritonMMError) -> None:
        """Take ``address`` out for a while (longer after each failure in a row)."""
        with self._lock:
            address.failures += 1
            pause = min(EJECT_BASE * 2 ** (address.failures - 1), EJECT_MAX)
            address.retry_at = self._clock() + pause
            address.models.clear()
        LOG.warning("Triton at %s taken out for %g s: %s", address.label, pause, cause)

    def mark_model(self, address: Address, model: str, ready: bool) -> None:
        with self._lock:
            address.models[model] = (self._clock(), ready)

    def forget_model(self, model: str) -> None:
        """Ask again where ``model`` is READY (it was just loaded or unloaded)."""
        with self._lock:
            for by_ip in self._by_endpoint:
                for address in by_ip.values():
                    address.models.pop(model, None)

    def _probe(self, address: Address) -> None:
        try:
            healthy = self._health(address)
        except Exception:  # a probe reports, it never raises: anything unexpected means "not yet"
            healthy = False
        with self._lock:
            address.probing = False
        if healthy:
            self.succeeded(address)
        else:
            self.eject(address, ConnectionFailed("the health probe on /v2/health/ready failed"))


def _known(address: Address, model: str | None, now: float) -> bool | None:
    """Whether ``address`` has ``model`` READY, as last asked; None when never or too long ago."""
    known = address.models.get(model or "")
    return known[1] if known is not None and now - known[0] < READY_TTL else None


def _in_thread(probe: Callable[[], None]) -> None:
    threading.Thread(target=probe, name="tmm-endpoint-probe", daemon=True).start()
