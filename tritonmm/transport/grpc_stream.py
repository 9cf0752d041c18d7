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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonmm.errors import ConnectionFailed, RequestTimeout
from tritonmm.transport import tensors
from tritonmm.transport.errors import from_server_message, translated


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


class GrpcStreamOpener:
    """Calls on one gRPC channel, with the API-key metadata on each."""

    def __init__(
        self, channel: grpc.Channel, target: str, headers: tuple[tuple[str, str], ...], connect_timeout: float
    ) -> None:
        self._channel = channel
        self._target = target
        self._metadata = headers or None
        self._connect_timeout = connect_timeout
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def open(self, requests: Iterator[service_pb2.ModelInferRequest]) -> StreamCall:
        ready = grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=self._connect_timeout)
        except grpc.FutureTimeoutError:
            ready.cancel()  # else it keeps polling the channel, after close() too
            raise ConnectionFailed(
                f"cannot connect to Triton gRPC at {self._target} within {self._connect_timeout:g} s "
                "(is the server running and the gRPC endpoint right?)"
            ) from None
        return self._stub.ModelStreamInfer(requests, metadata=self._metadata)

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
    """

    def __init__(
        self,
        opener: StreamOpener,
        model: str,
        request: service_pb2.ModelInferRequest,
        *,
        target: str,
        read_timeout: float,
    ) -> None:
        self._model = model
        self._target = target
        self._read_timeout = read_timeout
        self._done = threading.Event()
        self._activity = threading.Event()
        self._timed_out = False
        with translated(target, model):
            self._call = opener.open(self._requests(request))
        self._watchdog = threading.Thread(target=self._watch, name="tmm-stream-watchdog", daemon=True)
        self._watchdog.start()

    def _requests(self, request: service_pb2.ModelInferRequest) -> Iterator[service_pb2.ModelInferRequest]:
        yield request
        self._done.wait()  # keep the request side open until our answer is complete

    def _watch(self) -> None:
        """Cancel the call when the server stays silent longer than the read timeout."""
        while not self._done.is_set():
            if not self._activity.wait(self._read_timeout):
                if not self._done.is_set():
                    self._timed_out = True
                    self._call.cancel()
                return
            self._activity.clear()

    def __iter__(self) -> Iterator[StreamResponse]:
        try:
            with translated(self._target, self._model):
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
                    f"model '{self._model}' sent nothing for {self._read_timeout:g} s (read timeout)"
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
