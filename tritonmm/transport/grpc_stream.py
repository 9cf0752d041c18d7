"""Streaming inference over Triton's gRPC ``ModelStreamInfer``, one stream per request.

Why raw stubs rather than ``tritonclient.grpc``'s callback API: its stream
errors lose the request id and its callback runs on a native gRPC thread that
never wakes the gevent hub inside the Dify SDK (triton-server-notes §1.7, §9).
A synchronous response iterator, with ``grpc.experimental.gevent`` initialised
when gevent has patched the process, streams correctly in both worlds.

Media travel as raw bytes in ``raw_input_contents``: no base64, no JSON.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonmm.errors import ConnectionFailed, RequestTimeout
from tritonmm.settings import ServerSettings
from tritonmm.transport import tensors
from tritonmm.transport.errors import from_server_message, translated

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # gRPC servers (Triton included) answer pings more often than every 5 minutes without
    # data with GOAWAY "too_many_pings", which kills a stream waiting on a slow first
    # token. Dead connections are caught by the read-timeout watchdog instead.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_permit_without_calls", 0),
]

_channels: dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()
_gevent_ready = False


def _init_gevent_once() -> None:
    """gRPC's own threads must cooperate with gevent or streams hang (notes §9)."""
    global _gevent_ready
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


def _channel(target: str) -> grpc.Channel:
    with _channels_lock:
        _init_gevent_once()
        channel = _channels.get(target)
        if channel is None:
            channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
            _channels[target] = channel
        return channel


@dataclass(frozen=True)
class StreamResponse:
    outputs: dict[str, list]
    final: bool


class InferStream:
    """An iterator of ``StreamResponse`` for one request; ``close()`` cancels it.

    The server is told to cancel as soon as the consumer stops iterating early
    (closing the generator, a Dify timeout, a client disconnect), which frees
    the model: Triton's cancellation reaches ``request.is_cancelled()``.
    """

    def __init__(self, settings: ServerSettings, model: str, request: service_pb2.ModelInferRequest) -> None:
        self._settings = settings
        self._model = model
        self._done = threading.Event()
        self._activity = threading.Event()
        self._timed_out = False
        channel = _channel(settings.grpc_target)
        self._wait_connected(channel)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with translated(settings.grpc_target, model):
            self._call = stub.ModelStreamInfer(self._requests(request), metadata=settings.headers or None)
        self._watchdog = threading.Thread(target=self._watch, name="tmm-stream-watchdog", daemon=True)
        self._watchdog.start()

    def _wait_connected(self, channel: grpc.Channel) -> None:
        try:
            grpc.channel_ready_future(channel).result(timeout=self._settings.timeouts.connect)
        except grpc.FutureTimeoutError:
            raise ConnectionFailed(
                f"cannot connect to Triton gRPC at {self._settings.grpc_target} within "
                f"{self._settings.timeouts.connect:g} s (is the server running and the gRPC endpoint right?)"
            ) from None

    def _requests(self, request: service_pb2.ModelInferRequest) -> Iterator[service_pb2.ModelInferRequest]:
        yield request
        self._done.wait()  # keep the request side open until our answer is complete

    def _watch(self) -> None:
        """Cancel the call when the server stays silent longer than the read timeout."""
        while not self._done.is_set():
            if not self._activity.wait(self._settings.timeouts.read):
                if not self._done.is_set():
                    self._timed_out = True
                    self._call.cancel()
                return
            self._activity.clear()

    def __iter__(self) -> Iterator[StreamResponse]:
        try:
            with translated(self._settings.grpc_target, self._model):
                for message in self._call:
                    self._activity.set()
                    if message.error_message:
                        raise from_server_message(message.error_message, self._model)
                    response = _decode(message.infer_response)
                    yield response
                    if response.final:
                        return
        except Exception:
            if self._timed_out:
                raise RequestTimeout(
                    f"model '{self._model}' sent nothing for {self._settings.timeouts.read:g} s (read timeout)"
                ) from None
            raise
        finally:
            self.close()

    def close(self) -> None:
        if not self._done.is_set():
            self._done.set()
            self._activity.set()
            self._call.cancel()


def _decode(response: service_pb2.ModelInferResponse) -> StreamResponse:
    outputs = {
        out.name: tensors.decode(out.datatype, raw)
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    final_param = response.parameters.get("triton_final_response")
    return StreamResponse(outputs=outputs, final=bool(final_param and final_param.bool_param))


def build_request(model: str, inputs: list[tensors.InputTensor], outputs: list[str]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=uuid.uuid4().hex)
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


def stream_infer(
    settings: ServerSettings, model: str, inputs: list[tensors.InputTensor], outputs: list[str]
) -> InferStream:
    """Open the stream now (connection errors raise here), iterate for responses."""
    return InferStream(settings, model, build_request(model, inputs, outputs))
