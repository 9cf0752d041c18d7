"""A Triton stand-in below the transport seam, for unit tests without a server.

HTTP goes through ``httpx.MockTransport`` with a small router; gRPC streams through
``ScriptedStreams``, a ``StreamOpener`` that answers each call with a script of
``ModelStreamInferResponse`` messages (or exceptions). ``Cluster`` puts several such servers
behind one client (one router and one opener per host, a fake clock, name look-ups that fail,
health probes run at once). Everything above the seam (``TritonClient``, the task modules) is
the real code.
"""

from __future__ import annotations

import array
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
from tritonclient.grpc import service_pb2

from tritonmm.contract import TensorSpec
from tritonmm.settings import ServerSettings
from tritonmm.transport import InputTensor, TritonClient
from tritonmm.transport.tensors import decode, encode_bytes

URL = "http://triton.test:8000"
Output = tuple[str, bytes]  # (KServe datatype, raw little-endian bytes)


def bytes_out(*elements: bytes) -> Output:
    return "BYTES", encode_bytes(list(elements))


def int32_out(*values: int) -> Output:
    return "INT32", array.array("i", values).tobytes()


def fp32_out(*values: float) -> Output:
    return "FP32", array.array("f", values).tobytes()


def infer_answer(outputs: dict[str, Output]) -> httpx.Response:
    """A binary-data ``/infer`` answer as Triton sends it."""
    header = {
        "outputs": [
            {"name": name, "datatype": dtype, "shape": [1], "parameters": {"binary_data_size": len(raw)}}
            for name, (dtype, raw) in outputs.items()
        ]
    }
    head = json.dumps(header).encode()
    body = head + b"".join(raw for _, raw in outputs.values())
    return httpx.Response(200, content=body, headers={"Inference-Header-Content-Length": str(len(head))})


def infer_inputs(request: httpx.Request) -> dict[str, list]:
    """The tensors of a binary ``/infer`` request, decoded: what the client sent."""
    body = request.read()
    head_len = int(request.headers["Inference-Header-Content-Length"])
    header = json.loads(body[:head_len])
    pos, out = head_len, {}
    for entry in header["inputs"]:
        size = entry["parameters"]["binary_data_size"]
        out[entry["name"]] = decode(entry["datatype"], body[pos : pos + size])
        pos += size
    return out


def config(task: str, max_batch_size: int = 0, **parameters: str) -> dict[str, Any]:
    """A model config as ``/v2/models/<m>/config`` returns it."""
    params = {"tmm.task": task, **parameters}
    return {"max_batch_size": max_batch_size, "parameters": {k: {"string_value": v} for k, v in params.items()}}


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


class Router:
    """``httpx.MockTransport`` handler: ``(method, path)`` -> response or a function of the request.

    Unrouted paths answer 404 like Triton; every request is recorded in ``seen``.
    """

    def __init__(self, routes: dict[tuple[str, str], Any] | None = None) -> None:
        self.routes: dict[tuple[str, str], Any] = dict(routes or {})
        self.seen: list[httpx.Request] = []

    def model(self, name: str, model_config: dict[str, Any], *, ready: bool = True) -> Router:
        self.routes[("GET", f"/v2/models/{name}/config")] = lambda _: httpx.Response(200, json=model_config)
        self.routes[("GET", f"/v2/models/{name}/ready")] = lambda _: httpx.Response(200 if ready else 400)
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return error(404, f"no route {request.method} {request.url.path}")
        if isinstance(route, BaseException):
            raise route
        return route(request) if callable(route) else route

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.seen if (r.method, r.url.path) == (method, path))


class ClosingMockTransport(httpx.MockTransport):
    """A MockTransport that remembers being closed (the pool's end)."""

    closed = False

    def close(self) -> None:
        self.closed = True


def stream_message(outputs: dict[str, Output] | None = None, *, final: bool = False, error: str = ""):
    """One ``ModelStreamInferResponse``: outputs as raw tensors, the final flag, or an error text."""
    message = service_pb2.ModelStreamInferResponse(error_message=error)
    response = message.infer_response
    for name, (dtype, raw) in (outputs or {}).items():
        entry = response.outputs.add()
        entry.name = name
        entry.datatype = dtype
        response.raw_output_contents.append(raw)
    if final:
        response.parameters["triton_final_response"].bool_param = True
    return message


class FakeRpcError(grpc.RpcError):
    """What a gRPC call raises when it fails: a status code and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class ScriptedCall:
    def __init__(self, script: list) -> None:
        self.script = script
        self.cancelled = False

    def __iter__(self) -> Iterator[service_pb2.ModelStreamInferResponse]:
        for item in self.script:
            if self.cancelled:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class ScriptedStreams:
    """A ``StreamOpener``: each ``open`` takes the next script; ``open_error`` fails the open itself."""

    def __init__(self, *scripts: list, open_error: Exception | None = None) -> None:
        self.scripts = list(scripts)
        self.open_error = open_error
        self.requests: list[service_pb2.ModelInferRequest] = []
        self.calls: list[ScriptedCall] = []
        self.closed = False

    def open(self, requests: Iterator[service_pb2.ModelInferRequest]) -> ScriptedCall:
        if self.open_error is not None:
            raise self.open_error
        self.requests.append(next(requests))
        call = ScriptedCall(self.scripts.pop(0))
        self.calls.append(call)
        return call

    def close(self) -> None:
        self.closed = True

    def sent(self, index: int = -1) -> dict[str, list]:
        """The tensors of a request the client sent, decoded."""
        request = self.requests[index]
        return {
            entry.name: decode(entry.datatype, raw)
            for entry, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        }


def no_dns(host: str, port: int, **kwargs: Any) -> list:
    """A resolver that knows no name: each endpoint is used as configured."""
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: no such name in the test")


def run_now(probe: Callable[[], None]) -> None:
    """Run a background health probe at once, so that a test sees its effect in order."""
    probe()


def fake_client(
    router: Callable[[httpx.Request], httpx.Response] | None = None,
    streams: ScriptedStreams | None = None,
    *,
    clock: Callable[[], float] | None = None,
    **credentials: str,
) -> TritonClient:
    settings = ServerSettings.from_credentials({"server_url": URL, **credentials})
    extra = {"clock": clock} if clock is not None else {}
    transport = httpx.MockTransport(router or Router())
    return TritonClient(
        settings,
        http_transport=transport,
        stream_opener=streams or ScriptedStreams(),
        resolve=no_dns,
        spawn=run_now,
        **extra,
    )


# --- several servers ----------------------------------------------------------------------------

CLUSTER_HOSTS = ("a.test", "b.test", "c.test")
INFER = ("POST", "/v2/models/chat/infer")
BLOB = TensorSpec("BLOB", "TYPE_STRING", (1,))


class Clock:
    """A monotonic clock that moves only when a test (or a recorded pause) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """A client over fake servers; ``routers[host]`` and ``streams[host]`` script each one."""

    def __init__(self, hosts: tuple[str, ...] = CLUSTER_HOSTS, resolve=no_dns, **credentials: str) -> None:
        self.routers = {host: Router().model("chat", config("chat")) for host in hosts}
        for router in self.routers.values():
            router.routes[("GET", "/v2/health/ready")] = httpx.Response(200)
            router.routes[INFER] = infer_answer({"OUT": bytes_out(b"ok")})
        self.streams = {host: ScriptedStreams() for host in hosts}
        self.opened: list[str] = []  # gRPC targets, in the order their channels were opened
        self.clock = Clock()
        self.sleeps: list[float] = []
        urls = ",".join(f"http://{host}:8000" for host in hosts)
        settings = ServerSettings.from_credentials({"server_url": urls, **credentials})
        self.client = TritonClient(
            settings,
            http_transport=httpx.MockTransport(self.route),
            stream_openers=self.opener,
            clock=self.clock,
            sleep=self.sleep,
            resolve=resolve,
            spawn=run_now,
        )

    def route(self, request: httpx.Request) -> httpx.Response:
        return self.routers[request.url.host](request)

    def opener(self, target: str) -> ScriptedStreams:
        self.opened.append(target)
        host = target.rpartition(":")[0]
        return self.streams.get(host) or self.streams[next(iter(self.streams))]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds

    def infer(self, model: str = "chat") -> dict:
        return self.client.infer(model, [InputTensor(BLOB, (b"q",))], ["OUT"])

    def infers(self, path: tuple[str, str] = INFER) -> dict[str, int]:
        return {host: router.count(*path) for host, router in self.routers.items()}

    def stream(self, model: str = "chat"):
        return self.client.stream_infer(model, [InputTensor(BLOB, (b"q",))], ["TEXT"])


def tokens(*texts: bytes) -> list:
    *head, last = texts
    return [
        *(stream_message({"TEXT": bytes_out(t)}) for t in head),
        stream_message({"TEXT": bytes_out(last)}, final=True),
    ]
