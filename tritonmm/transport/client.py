"""The Triton servers of one credential set as the core sees them: every call goes through a ``TritonClient``.

A client owns, for one ``ServerSettings``, the pooled HTTP connections (control
plane, unary ``/infer``, metrics), one gRPC channel per server address (streaming
inference) and the models' capability cache, and releases them in ``close()``.
Handlers get theirs from ``tritonmm.transport.clients.client_for``; nothing else
opens a connection to Triton.

Where a call goes is decided here and nowhere else: the endpoint pool
(``endpoints.py``: several servers, DNS names with several addresses, health,
taking a failing server out and probing it) chooses, and the failover policy
(``failover.py``: retries on another server and the fallback model, before the first
byte only) retries. One id names each request on every server it is tried on.

Tests hand a client a fake wire: ``http_transport`` (``httpx.MockTransport``) for
HTTP, ``stream_opener`` (a ``StreamOpener``) or ``stream_openers`` (one per gRPC
target) for gRPC streams, and ``resolve``, ``clock``, ``sleep`` and ``spawn`` for
name look-ups, time and the background probes.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from tritonmm.capabilities import CapabilityCache, from_config, require_task
from tritonmm.contract import Capabilities, Task
from tritonmm.errors import ConnectionFailed, ModelNotReady, TritonMMError, Unavailable
from tritonmm.settings import ServerSettings
from tritonmm.transport import http
from tritonmm.transport.endpoints import Address, EndpointPool
from tritonmm.transport.errors import translated
from tritonmm.transport.failover import Failover, Outcome, classify, note_failure
from tritonmm.transport.grpc_stream import GrpcStreamOpener, InferStream, StreamOpener, build_request
from tritonmm.transport.sse import GenerateStream, open_generate_stream
from tritonmm.transport.tensors import InputTensor
from tritonmm.url_policy import Resolver

T = TypeVar("T")

HTTP_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)
METRICS_EXTRA_SECONDS = 5.0  # Prometheus text of a busy server takes a moment to render


class TritonClient:
    def __init__(
        self,
        settings: ServerSettings,
        *,
        http_transport: httpx.BaseTransport | None = None,
        stream_opener: StreamOpener | None = None,
        stream_openers: Callable[[str], StreamOpener] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        resolve: Resolver = socket.getaddrinfo,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.settings = settings
        t = settings.timeouts
        self._http = httpx.Client(
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect),
            limits=HTTP_LIMITS,
            headers=dict(settings.headers),
            transport=http_transport,
        )
        self._injected_opener = stream_opener
        self._opener_factory = stream_openers
        self._lock = threading.Lock()
        self._closed = False
        self._capabilities = CapabilityCache(self._read_capabilities, clock=clock)
        self._pool = EndpointPool(
            settings.endpoints,
            health=self._healthy,
            model_ready=self._model_ready_on,
            resolve=resolve,
            clock=clock,
            spawn=spawn,
            retire=self._close_address,
        )
        self._failover = Failover(
            self._pool, settings.failover_timeout, settings.fallback_model, clock=clock, sleep=sleep
        )

    # --- where calls go ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server(s) as people know them, for messages."""
        return ", ".join(endpoint.http_url for endpoint in self.settings.endpoints)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionFailed(f"the client of Triton at {self.url} is closed")

    def _run(
        self, model: str | None, attempt: Callable[[Address, str | None], T], request_id: str = "", *, fallback: bool
    ) -> T:
        """``attempt`` on the chosen server, retried elsewhere (and, with ``fallback``, on the
        fallback model) as the failover policy allows."""
        self._check_open()
        return self._failover.run(model, attempt, request_id=request_id, fallback=fallback)

    def _opener(self, address: Address) -> StreamOpener:
        if self._injected_opener is not None:
            return self._injected_opener
        with self._lock:
            self._check_open()
            if address.channel is None:
                if self._opener_factory is not None:
                    address.channel = self._opener_factory(address.grpc_target)
                else:
                    address.channel = GrpcStreamOpener.connect(
                        address.grpc_target,
                        address.grpc_label,
                        self.settings.headers,
                        self.settings.timeouts.connect,
                        authority=address.authority,
                    )
            return address.channel

    def _close_address(self, address: Address) -> None:
        with self._lock:
            opener, address.channel = address.channel, None
        if opener is not None and opener is not self._injected_opener:
            opener.close()

    def _send(
        self, address: Address, method: str, path: str, model: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        options = address.http_options()
        if "headers" in options:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **options["headers"]}
        with translated(address.label, model or ""):
            return self._http.request(method, address.http_base + path, extensions=options.get("extensions"), **kwargs)

    def _healthy(self, address: Address) -> bool:
        """The probe of a server that was taken out: ready on HTTP, and its gRPC channel connects."""
        if self._send(address, "GET", "/v2/health/ready").status_code != 200:
            return False
        opener = address.channel
        return not isinstance(opener, GrpcStreamOpener) or opener.wait_ready(self.settings.timeouts.connect)

    def _model_ready_on(self, address: Address, model: str) -> bool:
        return self._send(address, "GET", f"/v2/models/{model}/ready", model).status_code == 200

    # --- HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, model: str = "", **kwargs: Any) -> httpx.Response:
        """A control-plane request on one server (with ``model``, one that has it READY), failed over."""
        return self._run(
            model or None, lambda address, _: self._checked(address, method, path, model, **kwargs), fallback=False
        )

    def _checked(self, address: Address, method: str, path: str, model: str, **kwargs: Any) -> httpx.Response:
        """The answer; one that says "try another server" (503, 429, busy) raises instead."""
        response = self._send(address, method, path, model, **kwargs)
        if response.status_code in (429, 503):
            http.raise_for_status(response, model)
        return response

    def is_live(self) -> bool:
        return self._request("GET", "/v2/health/live").status_code == 200

    def is_ready(self) -> bool:
        try:
            return self._request("GET", "/v2/health/ready").status_code == 200
        except Unavailable:  # 503 on every server: none is ready
            return False

    def is_model_ready(self, model: str) -> bool:
        """READY on at least one server."""
        self._check_open()
        if len(self._pool.addresses()) > 1:
            return self._pool.choose(model) is not None
        return self._request("GET", f"/v2/models/{model}/ready").status_code == 200

    def model_config(self, model: str) -> dict[str, Any]:
        response = self._request("GET", f"/v2/models/{model}/config", model)
        http.raise_for_status(response, model)
        return response.json()

    def model_statistics(self, model: str = "") -> dict[str, Any]:
        """``/v2/models[/<m>]/stats`` of one server: every model's statistics, or one model's."""
        response = self._request("GET", f"/v2/models/{model}/stats" if model else "/v2/models/stats", model)
        http.raise_for_status(response, model)
        return response.json()

    def load_model(self, model: str) -> None:
        """Load (or, when loaded, reload) a model on every server; needs explicit model-control mode."""
        self._on_every_server("POST", f"/v2/repository/models/{model}/load", model)

    def unload_model(self, model: str) -> None:
        self._on_every_server("POST", f"/v2/repository/models/{model}/unload", model)

    def _on_every_server(self, method: str, path: str, model: str) -> None:
        self._check_open()
        addresses = self._pool.addresses()
        failures: list[tuple[Address, TritonMMError]] = []
        for address in addresses:
            try:
                http.raise_for_status(self._send(address, method, path, model, json={}), model)
            except TritonMMError as exc:
                failures.append((address, exc))
        self._pool.forget_model(model)
        self._capabilities.clear()
        if len(addresses) == 1 and failures:
            raise failures[0][1]
        if failures:
            where = "; ".join(f"{address.label}: {exc}" for address, exc in failures)
            raise type(failures[-1][1])(f"failed on {len(failures)} of {len(addresses)} servers: {where}")

    def repository_index(self) -> list[dict[str, Any]]:
        response = self._request("POST", "/v2/repository/index", json={})
        http.raise_for_status(response)
        return response.json()

    def infer(self, model: str, inputs: list[InputTensor], outputs: list[str]) -> dict[str, list]:
        """Unary ``/infer``, every tensor as raw bytes; each requested output as a flat list."""
        request_id = uuid.uuid4().hex
        body, headers = http.infer_body(inputs, outputs, request_id)

        def attempt(address: Address, name: str | None) -> dict[str, list]:
            with self._pool.serving(address):
                path = f"/v2/models/{name}/infer"
                response = self._send(address, "POST", path, name, content=body, headers=headers)
            http.raise_for_status(response, name or model)
            return http.decode_infer_response(response)

        return self._run(model, attempt, request_id, fallback=True)

    def metrics_text(self, url: str) -> str:
        """Triton's Prometheus metrics at ``url`` (another port than the API, same pool and headers)."""
        self._check_open()
        with translated(url):
            response = self._http.get(url, timeout=self.settings.timeouts.connect + METRICS_EXTRA_SECONDS)
        http.raise_for_status(response, context=f"metrics at {url}")
        return response.text

    # --- gRPC streaming ---------------------------------------------------------------------------

    def stream_infer(self, model: str, inputs: list[InputTensor], outputs: list[str]) -> InferStream:
        """Send the request and wait for its first response (a failure until then raises here,
        after the failover policy's retries); iterate the stream for the responses."""
        request_id = uuid.uuid4().hex

        def attempt(address: Address, name: str | None) -> InferStream:
            request = build_request(name or model, inputs, outputs, request_id)
            self._pool.acquire(address)
            stream = InferStream(
                self._opener(address),
                name or model,
                request,
                target=address.grpc_label,
                read_timeout=self.settings.timeouts.read,
                on_close=lambda error: self._stream_ended(address, name, error),
            )
            stream.start()
            return stream

        return self._run(model, attempt, request_id, fallback=True)

    def _stream_ended(self, address: Address, model: str | None, error: TritonMMError | None) -> None:
        """``error``: what broke the stream after its first response (earlier ones are the failover
        policy's to note): a server that went away mid-answer is taken out all the same."""
        self._pool.release(address)
        if error is not None:
            note_failure(self._pool, address, model, error)

    def stream_generate(self, model: str, body: dict[str, Any]) -> GenerateStream:
        """Triton's generate extension, streamed (``/generate_stream``, Server-Sent Events): send
        ``body`` now (an error status raises here, after the failover policy's retries); iterate
        for the events, each a dict; an ``{"error": ...}`` event raises. For models reached over
        HTTP only."""

        def attempt(address: Address, name: str | None) -> GenerateStream:
            url = f"{address.http_base}/v2/models/{name or model}/generate_stream"
            self._pool.acquire(address)
            try:
                return open_generate_stream(
                    self._http,
                    url,
                    body,
                    model=name or model,
                    target=address.label,
                    on_close=lambda: self._pool.release(address),
                    **address.http_options(),
                )
            except BaseException:
                self._pool.release(address)
                raise

        return self._run(model, attempt, fallback=True)

    # --- capabilities -----------------------------------------------------------------------------

    def capabilities(
        self, model: str, task: Task | tuple[Task, ...] | None = None, *, fresh: bool = False
    ) -> Capabilities:
        """The model's capabilities (cached briefly; ``fresh`` re-reads); with ``task``, refuse
        a model that does something else. A model unavailable on every server answers with its
        fallback model's capabilities, when the credentials name one: the fallback serves it."""
        try:
            caps = self._capabilities.get(model, fresh=fresh)
        except TritonMMError as exc:
            fallback = self.settings.fallback_model
            if not fallback or fallback == model or classify(exc) is Outcome.FINAL:
                raise
            caps = self._capabilities.get(fallback, fresh=fresh)
        return require_task(caps, model, task)

    def _read_capabilities(self, model: str) -> Capabilities:
        config = self.model_config(model)  # raises ModelNotFound for an unknown name
        caps = from_config(model, config, http.config_parameters(config), self.url)
        if not self.is_model_ready(model):
            raise ModelNotReady(f"model '{model}' is in the repository of {self.url} but not loaded (not ready)")
        return caps

    # --- lifetime ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the HTTP pool and every gRPC channel; later calls raise ``ConnectionFailed``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._http.close()
        for address in self._pool.addresses(refresh=False):
            self._close_address(address)
        if self._injected_opener is not None:
            self._injected_opener.close()
        self._capabilities.clear()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
