"""Streaming inference over Triton's gRPC ``ModelStreamInfer``, one stream per request.

Why raw stubs rather than ``tritonclient.grpc``'s callback API: its stream errors
lose the request id, and its callback runs on a native gRPC thread that never
wakes the gevent hub the Dify SDK runs handlers on, so a handler waiting for the
callback hangs. A synchronous response iterator, with ``grpc.experimental.gevent``
initialised when gevent has patched the process, streams correctly in both worlds.

Media travel as raw bytes in ``raw_input_contents``: no base64, no JSON.

The call itself is opened by a :class:`StreamOpener`: ``GrpcStreamOpener`` on a
real channel (``tritonmm.transport.client`` owns it), or a stand-in in tests, so
that everything above the wire (chunking, error mapping, cancellation) runs
without a server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonmm.errors import ConnectionFailed, RequestTimeout, TritonMMError
from tritonmm.transport import tensors
from tritonmm.transport.errors import from_server_message, translated
from tritonmm.transport.failover import Outcome, classify


class StreamCall(Protocol):
    """One open ``ModelStreamInfer`` call: iterate for the server's messages; ``cancel()`` ends it."""

    def __iter__(self) -> Iterator[service_pb2.ModelStreamInferResponse]: ...

    def cancel(self) -> Any: ...


class StreamOpener(Protocol):
    """Opens ``ModelStreamInfer`` calls to one server; owns whatever connection that takes."""

    def open(self, requests: Iterator[service_pb2.ModelInferRequest]) -> StreamCall:
        """Start a call that sends ``requests``; raise ``ConnectionFailed`` when the server cannot be reached."""
        ...

    def close(self) -> None: ...


CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # gRPC servers (Triton included) answer pings more often than every 5 minutes without
    # data with GOAWAY "too_many_pings", which kills a stream waiting on a slow first
    # token. Dead connections are caught by the stream's read-timeout watchdog instead.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # A server that was down is reconnected within 2 s of coming back (gRPC's default backoff
    # grows to 2 minutes), so the health probe that puts it back in service finds it connected.
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


# Triton's --grpc-restricted-protocol reads a key from "triton-grpc-protocol-<header>" (its HTTP
# --http-restricted-api from "<header>" itself), so each header also goes under that name: one
# key setting opens Triton's restricted gRPC protocols and a gateway in front of it alike.
TRITON_GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


def _grpc_metadata(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    prefix = TRITON_GRPC_HEADER_PREFIX
    return headers + tuple((prefix + name, value) for name, value in headers if not name.startswith(prefix))


class GrpcStreamOpener:
    """Calls on one gRPC channel, with the API-key metadata on each."""

    @classmethod
    def connect(
        cls,
        target: str,
        label: str,
        headers: tuple[tuple[str, str], ...],
        connect_timeout: float,
        *,
        authority: str = "",
    ) -> GrpcStreamOpener:
        """An opener on a new channel to ``target`` (``host:port``); ``authority``: the name the
        server sees when ``target`` is an IP that a configured name resolved to."""
        _init_gevent_once()
        options = list(CHANNEL_OPTIONS)
        if authority:
            options.append(("grpc.default_authority", authority))
        return cls(grpc.insecure_channel(target, options=options), label, headers, connect_timeout)

    def __init__(
        self, channel: grpc.Channel, target: str, headers: tuple[tuple[str, str], ...], connect_timeout: float
    ) -> None:
        self._channel = channel
        self._target = target
        self._metadata = _grpc_metadata(headers) or None
        self._connect_timeout = connect_timeout
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def open(self, requests: Iterator[service_pb2.ModelInferRequest]) -> StreamCall:
        if not self.wait_ready(self._connect_timeout):
            raise ConnectionFailed(
                f"cannot connect to Triton gRPC at {self._target} within {self._connect_timeout:g} s "
                "(is the server running and the gRPC endpoint right?)"
            )
        return self._stub.ModelStreamInfer(requests, metadata=self._metadata)

    def wait_ready(self, timeout: float) -> bool:
        """Whether the channel is connected, or connects within ``timeout`` seconds."""
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=timeout)
        except grpc.FutureTimeoutError:
            ready.cancel()  # else it keeps polling the channel, after close() too
            return False
        return True

    def close(self) -> None:
        self._channel.close()


@dataclass(frozen=True)
class StreamResponse:
    outputs: dict[str, list]
    final: bool


class InferStream:
    """An iterator of ``StreamResponse`` for one request; ``close()`` cancels it.

    The server is told to cancel as soon as the consumer stops iterating early
    (closing the generator, a Dify timeout, a client disconnect), which frees
    the model: Triton's cancellation reaches ``request.is_cancelled()``.

    ``start()`` waits for the first response: a failure until then is one a retry
    elsewhere may fix (the client's failover runs it). A failure after the first
    response has reached the caller ends the stream with an error that says so: a
    retry would repeat what was already sent. ``on_close(error)`` runs once, when the
    stream ends for any reason, with the error that broke it after its first response,
    if one did (a failure before it is raised to whoever waits in ``start()``).
    """

    def __init__(
        self,
        opener: StreamOpener,
        model: str,
        request: service_pb2.ModelInferRequest,
        *,
        target: str,
        read_timeout: float,
        on_close: Callable[[TritonMMError | None], None] | None = None,
    ) -> None:
        self._model = model
        self._target = target
        self._read_timeout = read_timeout
        self._on_close = on_close
        self._error: TritonMMError | None = None
        self._done = threading.Event()
        self._activity = threading.Event()
        self._timed_out = False
        self._started = False
        self._first_read = False
        self._first: StreamResponse | None = None
        try:
            with translated(target, model):
                self._call = opener.open(self._requests(request))
        except TritonMMError:
            self._done.set()
            self._finish(None)
            raise
        self._responses = self._read()
        self._watchdog = threading.Thread(target=self._watch, name="tmm-stream-watchdog", daemon=True)
        self._watchdog.start()

    def start(self) -> None:
        """Wait for the first response; a failure before it raises here."""
        if not self._started:
            self._started = True
            self._first = next(self._responses, None)

    def _requests(self, request: service_pb2.ModelInferRequest) -> Iterator[service_pb2.ModelInferRequest]:
        yield request
        self._done.wait()  # keep the request side open until our answer is complete

    def _watch(self) -> None:
        """Cancel the call when the server stays silent longer than the read timeout (closing it
        also ends a stream nobody reads any more, so its server is not counted busy forever)."""
        while not self._done.is_set():
            if not self._activity.wait(self._read_timeout):
                if not self._done.is_set():
                    self._timed_out = True
                    self.close()
                return
            self._activity.clear()

    def __iter__(self) -> Iterator[StreamResponse]:
        self.start()
        first, self._first = self._first, None
        if first is None:
            return
        yield first
        try:
            yield from self._responses
        except TritonMMError as exc:
            if classify(exc) is Outcome.FINAL:  # the request's own failure: no retry could have helped
                raise
            raise type(exc)(
                f"{exc} (the answer had begun on {self._target}; it is not retried, as a retry would repeat "
                "what was already sent)"
            ) from exc

    def _read(self) -> Iterator[StreamResponse]:
        try:
            with translated(self._target, self._model):
                for message in self._call:
                    self._activity.set()
                    if message.error_message:
                        raise from_server_message(message.error_message, self._model)
                    response = _decode(message.infer_response)
                    self._first_read = True
                    yield response
                    if response.final:
                        return
        except Exception as exc:
            if self._timed_out:
                error = RequestTimeout(
                    f"model '{self._model}' sent nothing for {self._read_timeout:g} s (read timeout)"
                )
            elif isinstance(exc, TritonMMError):
                error = exc
            else:
                raise
            if self._first_read:
                self._error = error
            if error is exc:
                raise
            raise error from None
        finally:
            self.close()

    def close(self) -> None:
        if not self._done.is_set():
            self._done.set()
            self._activity.set()
            self._call.cancel()
            self._finish(self._error)

    def _finish(self, error: TritonMMError | None) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(error)


def _decode(response: service_pb2.ModelInferResponse) -> StreamResponse:
    outputs = {
        out.name: tensors.decode(out.datatype, raw)
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    final_param = response.parameters.get("triton_final_response")
    return StreamResponse(outputs=outputs, final=bool(final_param and final_param.bool_param))


def build_request(
    model: str, inputs: list[tensors.InputTensor], outputs: list[str], request_id: str = ""
) -> service_pb2.ModelInferRequest:
    """``request_id`` names the request in Triton's log and traces (one per call, the same on a retry)."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id or uuid.uuid4().hex)
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    for tensor in inputs:
        entry = request.inputs.add()
        entry.name = tensor.spec.name
        entry.datatype = tensor.spec.wire_dtype
        entry.shape.extend(tensor.shape)
        request.raw_input_contents.append(tensor.raw())
    for name in outputs:
        request.outputs.add().name = name
    return request


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
