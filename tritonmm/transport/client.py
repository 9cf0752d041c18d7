"""One Triton server as the core sees it: every call the core makes goes through a ``TritonClient``.

A client owns, for one ``ServerSettings``, the pooled HTTP connections (control
plane, unary ``/infer``, metrics), the gRPC channel (streaming inference) and the
models' capability cache, and releases them in ``close()``. Handlers get theirs
from ``tritonmm.transport.clients.client_for``; nothing else opens a connection
to Triton.

``_endpoint()`` is the one place that picks the server a call goes to: several
endpoints, retries and failover belong there.

Tests hand a client a fake wire: ``http_transport`` (``httpx.MockTransport``) for
HTTP and ``stream_opener`` (a ``StreamOpener``) for gRPC streams.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx

from tritonmm.capabilities import CapabilityCache, from_config, require_task
from tritonmm.contract import Capabilities, Task
from tritonmm.errors import ConnectionFailed, ModelNotReady
from tritonmm.settings import ServerSettings
from tritonmm.transport import http
from tritonmm.transport.errors import translated
from tritonmm.transport.grpc_stream import GrpcStreamOpener, InferStream, StreamOpener, build_request
from tritonmm.transport.sse import GenerateStream, open_generate_stream
from tritonmm.transport.tensors import InputTensor

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # gRPC servers (Triton included) answer pings more often than every 5 minutes without
    # data with GOAWAY "too_many_pings", which kills a stream waiting on a slow first
    # token. Dead connections are caught by the stream's read-timeout watchdog instead.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_permit_without_calls", 0),
]
HTTP_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=8)
METRICS_EXTRA_SECONDS = 5.0  # Prometheus text of a busy server takes a moment to render


@dataclass(frozen=True)
class Endpoint:
    http_url: str  # e.g. http://127.0.0.1:8000, no trailing slash
    grpc_target: str  # host:port


class TritonClient:
    def __init__(
        self,
        settings: ServerSettings,
        *,
        http_transport: httpx.BaseTransport | None = None,
        stream_opener: StreamOpener | None = None,
        clock: Callable[[], float] = time.monotonic,
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
        self._openers: dict[str, StreamOpener] = {}  # gRPC target -> opener on its channel
        self._lock = threading.Lock()
        self._closed = False
        self._capabilities = CapabilityCache(self._read_capabilities, clock=clock)

    # --- where calls go ---------------------------------------------------------------------------

    def _endpoint(self) -> Endpoint:
        """The server the next call goes to: the settings' one endpoint today."""
        if self._closed:
            raise ConnectionFailed(f"the client of Triton at {self.settings.http_url} is closed")
        return Endpoint(self.settings.http_url, self.settings.grpc_target)

    @property
    def url(self) -> str:
        """The server as people know it, for messages."""
        return self.settings.http_url

    def _opener(self, target: str) -> StreamOpener:
        if self._injected_opener is not None:
            return self._injected_opener
        with self._lock:
            if self._closed:
                raise ConnectionFailed(f"the client of Triton at {self.settings.http_url} is closed")
            opener = self._openers.get(target)
            if opener is None:
                _init_gevent_once()
                channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
                opener = GrpcStreamOpener(channel, target, self.settings.headers, self.settings.timeouts.connect)
                self._openers[target] = opener
            return opener

    # --- HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, model: str = "", **kwargs: Any) -> httpx.Response:
        base = self._endpoint().http_url
        with translated(base, model):
            return self._http.request(method, base + path, **kwargs)

    def is_live(self) -> bool:
        return self._request("GET", "/v2/health/live").status_code == 200

    def is_ready(self) -> bool:
        return self._request("GET", "/v2/health/ready").status_code == 200

    def is_model_ready(self, model: str) -> bool:
        return self._request("GET", f"/v2/models/{model}/ready", model).status_code == 200

    def model_config(self, model: str) -> dict[str, Any]:
        response = self._request("GET", f"/v2/models/{model}/config", model)
        http.raise_for_status(response, model)
        return response.json()

    def model_statistics(self, model: str = "") -> dict[str, Any]:
        """``/v2/models[/<m>]/stats``: every model's statistics, or one model's."""
        response = self._request("GET", f"/v2/models/{model}/stats" if model else "/v2/models/stats", model)
        http.raise_for_status(response, model)
        return response.json()

    def load_model(self, model: str) -> None:
        """Load (or, when loaded, reload) a model; needs explicit model-control mode."""
        response = self._request("POST", f"/v2/repository/models/{model}/load", model, json={})
        http.raise_for_status(response, model)

    def unload_model(self, model: str) -> None:
        response = self._request("POST", f"/v2/repository/models/{model}/unload", model, json={})
        http.raise_for_status(response, model)

    def repository_index(self) -> list[dict[str, Any]]:
        response = self._request("POST", "/v2/repository/index", json={})
        http.raise_for_status(response)
        return response.json()

    def infer(self, model: str, inputs: list[InputTensor], outputs: list[str]) -> dict[str, list]:
        """Unary ``/infer``, every tensor as raw bytes; each requested output as a flat list."""
        body, headers = http.infer_body(inputs, outputs)
        response = self._request("POST", f"/v2/models/{model}/infer", model, content=body, headers=headers)
        http.raise_for_status(response, model)
        return http.decode_infer_response(response)

    def metrics_text(self, url: str) -> str:
        """Triton's Prometheus metrics at ``url`` (another port than the API, same pool and headers)."""
        self._endpoint()  # refuses on a closed client
        with translated(url):
            response = self._http.get(url, timeout=self.settings.timeouts.connect + METRICS_EXTRA_SECONDS)
        http.raise_for_status(response, context=f"metrics at {url}")
        return response.text

    # --- gRPC streaming ---------------------------------------------------------------------------

    def stream_infer(self, model: str, inputs: list[InputTensor], outputs: list[str]) -> InferStream:
        """Open the stream now (connection errors raise here); iterate it for the responses."""
        target = self._endpoint().grpc_target
        request = build_request(model, inputs, outputs)
        return InferStream(
            self._opener(target), model, request, target=target, read_timeout=self.settings.timeouts.read
        )

    def stream_generate(self, model: str, body: dict[str, Any]) -> GenerateStream:
        """Triton's generate extension, streamed (``/generate_stream``, Server-Sent Events): send
        ``body`` now (an error status raises here); iterate for the events, each a dict; an
        ``{"error": ...}`` event raises. For models reached over HTTP only."""
        base = self._endpoint().http_url
        url = f"{base}/v2/models/{model}/generate_stream"
        return open_generate_stream(self._http, url, body, model=model, target=base)

    # --- capabilities -----------------------------------------------------------------------------

    def capabilities(
        self, model: str, task: Task | tuple[Task, ...] | None = None, *, fresh: bool = False
    ) -> Capabilities:
        """The model's capabilities (cached briefly; ``fresh`` re-reads); with ``task``, refuse
        a model that does something else."""
        return require_task(self._capabilities.get(model, fresh=fresh), model, task)

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
            openers = list(self._openers.values())
            self._openers.clear()
        self._http.close()
        for opener in openers:
            opener.close()
        if self._injected_opener is not None:
            self._injected_opener.close()
        self._capabilities.clear()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_gevent_ready = False
_gevent_lock = threading.Lock()


def _init_gevent_once() -> None:
    """gRPC's own threads must cooperate with gevent, or a stream never wakes the handler waiting on it.

    The Dify SDK monkey-patches the process with gevent; outside it (tests, tools) nothing is done.
    """
    global _gevent_ready
    with _gevent_lock:
        if _gevent_ready:
            return
        try:
            from gevent import monkey
        except ImportError:
            monkey = None
        if monkey is not None and monkey.is_module_patched("socket"):
            from grpc.experimental import gevent as grpc_gevent

            grpc_gevent.init_gevent()
        _gevent_ready = True
