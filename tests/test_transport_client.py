"""The Triton client without a server: HTTP through httpx.MockTransport, streams through a
scripted opener. Error mapping, the binary infer format, the capability cache, closing,
and the registry that hands handlers their client."""

from __future__ import annotations

import socket

import grpc
import httpx
import pytest

from tests.fake_triton import (
    URL,
    ClosingMockTransport,
    FakeRpcError,
    Router,
    ScriptedStreams,
    bytes_out,
    config,
    error,
    fake_client,
    fp32_out,
    infer_answer,
    infer_inputs,
    stream_message,
)
from tritonmm.capabilities import TTL
from tritonmm.contract import Task, TensorSpec
from tritonmm.errors import (
    Cancelled,
    ConnectionFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    RequestTimeout,
    ServerError,
    Unauthorized,
    Unavailable,
)
from tritonmm.settings import ServerSettings
from tritonmm.transport import InputTensor, TritonClient, client_for, close_all
from tritonmm.transport.clients import register

BLOB = TensorSpec("BLOB", "TYPE_STRING", (1,))


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (404, "Request for unknown model: 'm' is not found", ModelNotFound),
        (400, "Request for unknown model: 'm' has no available versions", ModelNotFound),
        (503, "Server not ready", Unavailable),
        (400, "model 'm' is not ready", Unavailable),
        (401, "missing api key", Unauthorized),
        (403, "forbidden", Unauthorized),
        (400, "unexpected shape for input 'BLOB'", InvalidInput),
        (400, "invalid input: the text is empty", InvalidInput),
        (500, "CUDA out of memory", ServerError),
    ],
)
def test_http_status_becomes_our_error_class(status: int, message: str, expected: type) -> None:
    router = Router(
        {("POST", "/v2/models/m/infer"): error(status, message), ("GET", "/v2/models/m/config"): error(status, message)}
    )
    client = fake_client(router)
    with pytest.raises(expected) as raised:
        client.infer("m", [InputTensor(BLOB, (b"x",))], ["OUT"])
    assert message.removeprefix("invalid input: ") in str(raised.value)
    with pytest.raises(expected):
        client.model_config("m")


@pytest.mark.parametrize(
    ("failure", "expected", "text"),
    [
        (httpx.ConnectError("connection refused"), ConnectionFailed, "cannot reach Triton at http://triton.test:8000"),
        (httpx.ConnectTimeout("slow connect"), ConnectionFailed, "timed out"),
        (httpx.ReadTimeout("slow answer"), RequestTimeout, "timed out"),
        (httpx.RemoteProtocolError("peer closed"), ConnectionFailed, "peer closed"),
    ],
)
def test_transport_failures_become_connection_errors(failure: Exception, expected: type, text: str) -> None:
    client = fake_client(Router({("GET", "/v2/health/ready"): failure}))
    with pytest.raises(expected, match=text) as raised:
        client.is_ready()
    assert type(raised.value) is expected  # ConnectTimeout is not a read timeout
    assert raised.value.__cause__ is failure


def test_infer_sends_raw_bytes_and_decodes_each_output() -> None:
    router = Router()
    seen: dict = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.update(infer_inputs(request))
        return infer_answer({"TEXT": bytes_out(b"\x00a\x00", b""), "SCORES": fp32_out(0.5, -2.0)})

    router.routes[("POST", "/v2/models/m/infer")] = answer
    out = fake_client(router).infer("m", [InputTensor(BLOB, (b"\x00\xff", b""), batched=True)], ["TEXT", "SCORES"])
    assert seen == {"BLOB": [b"\x00\xff", b""]}  # NULs and empty rows kept, no base64
    assert out == {"TEXT": [b"\x00a\x00", b""], "SCORES": [0.5, -2.0]}


def test_api_key_header_goes_with_every_http_request() -> None:
    router = Router(
        {
            ("GET", "/v2/health/live"): httpx.Response(200),
            ("POST", "/v2/repository/index"): httpx.Response(200, json=[]),
        }
    )
    client = fake_client(router, api_key="s3cret", api_key_header="X-Triton-Key")
    client.is_live()
    client.repository_index()
    assert [r.headers.get("x-triton-key") for r in router.seen] == ["s3cret", "s3cret"]


def test_metrics_go_through_the_same_client() -> None:
    router = Router({("GET", "/metrics"): httpx.Response(200, text="nv_inference_count 3\n")})
    client = fake_client(router, api_key="k")
    assert client.metrics_text("http://triton.test:8002/metrics") == "nv_inference_count 3\n"
    assert router.seen[0].url.port == 8002 and router.seen[0].headers["x-api-key"] == "k"
    with pytest.raises(Unauthorized, match="metrics at http://triton.test:8002/nope"):
        router.routes[("GET", "/nope")] = error(401, "no key")
        client.metrics_text("http://triton.test:8002/nope")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_capabilities_are_cached_for_the_ttl_and_fresh_rereads() -> None:
    router = Router().model("chat", config("chat", **{"tmm.features": "vision"}))
    clock = Clock()
    client = fake_client(router, clock=clock)
    reads = lambda: router.count("GET", "/v2/models/chat/config")  # noqa: E731
    assert client.capabilities("chat", Task.CHAT).task is Task.CHAT
    clock.now += TTL - 1
    client.capabilities("chat")
    assert reads() == 1
    clock.now += 2  # past the TTL: read again
    client.capabilities("chat")
    assert reads() == 2
    client.capabilities("chat", fresh=True)
    assert reads() == 3
    assert TTL == 30.0


def test_capabilities_refuse_by_name() -> None:
    router = Router().model("rr", config("rerank", 8)).model("cold", config("rerank"), ready=False)
    router.model("odd", config("no_such_task"))
    client = fake_client(router)
    assert client.capabilities("rr").max_batch_size == 8
    with pytest.raises(InvalidInput, match="model 'rr' is a rerank model, not a chat or text_embedding model"):
        client.capabilities("rr", (Task.CHAT, Task.TEXT_EMBEDDING))
    with pytest.raises(ModelNotReady, match="'cold' is in the repository of http://triton.test:8000 but not loaded"):
        client.capabilities("cold")
    with pytest.raises(InvalidInput, match="model 'odd' .* does not follow the tritonmm model contract"):
        client.capabilities("odd")
    with pytest.raises(ModelNotFound):
        client.capabilities("missing")


def test_stream_decodes_responses_until_the_final_one() -> None:
    streams = ScriptedStreams(
        [stream_message({"TEXT": bytes_out(b"Hel")}), stream_message({"TEXT": bytes_out(b"lo")}, final=True)]
    )
    stream = fake_client(streams=streams).stream_infer("m", [InputTensor(BLOB, (b"q",))], ["TEXT"])
    assert [(r.outputs["TEXT"], r.final) for r in stream] == [([b"Hel"], False), ([b"lo"], True)]
    request = streams.requests[0]
    assert request.model_name == "m" and request.parameters["triton_enable_empty_final_response"].bool_param
    assert streams.sent() == {"BLOB": [b"q"]}
    assert streams.calls[0].cancelled  # finished streams are closed, the request side released


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (stream_message(error="Request for unknown model: 'm' is not found"), ModelNotFound),
        (stream_message(error="invalid input: image 1: not an image"), InvalidInput),
        (stream_message(error="busy: 4 requests already running"), Unavailable),
        (stream_message(error="model crashed"), ServerError),
    ],
)
def test_stream_error_messages_are_classified(failure, expected: type) -> None:
    streams = ScriptedStreams([stream_message({"TEXT": bytes_out(b"a")}), failure])
    stream = iter(fake_client(streams=streams).stream_infer("m", [], ["TEXT"]))
    assert next(stream).outputs == {"TEXT": [b"a"]}
    with pytest.raises(expected):
        next(stream)
    assert streams.calls[0].cancelled


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, ConnectionFailed),
        (grpc.StatusCode.DEADLINE_EXCEEDED, RequestTimeout),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthorized),
        (grpc.StatusCode.CANCELLED, Cancelled),
        (grpc.StatusCode.INTERNAL, ServerError),
    ],
)
def test_grpc_status_codes_become_our_error_class(code: grpc.StatusCode, expected: type) -> None:
    streams = ScriptedStreams([FakeRpcError(code, "broken")])
    with pytest.raises(expected, match="broken"):
        list(fake_client(streams=streams).stream_infer("m", [], ["TEXT"]))


def test_a_busy_model_is_unavailable_not_a_connection_failure() -> None:
    streams = ScriptedStreams([FakeRpcError(grpc.StatusCode.UNAVAILABLE, "busy: 4 requests already running")])
    with pytest.raises(Unavailable, match="model 'm' is busy: 4 requests"):  # not ConnectionFailed: UNAVAILABLE's class
        list(fake_client(streams=streams).stream_infer("m", [], ["TEXT"]))


def test_stream_open_failure_raises_at_open() -> None:
    streams = ScriptedStreams(open_error=FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    with pytest.raises(ConnectionFailed, match="connection refused"):
        fake_client(streams=streams).stream_infer("m", [], ["TEXT"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_grpc_channel_to_nothing_fails_with_connection_failed() -> None:
    target = f"127.0.0.1:{_free_port()}"
    settings = ServerSettings.from_credentials({"server_url": URL, "grpc_endpoint": target, "connect_timeout": "0.2"})
    with TritonClient(settings) as client:
        with pytest.raises(ConnectionFailed, match=f"cannot connect to Triton gRPC at {target} within 0.2 s"):
            client.stream_infer("m", [], ["TEXT"])


def test_close_releases_the_pool_and_the_streams_and_refuses_later_calls() -> None:
    transport = ClosingMockTransport(Router({("GET", "/v2/health/live"): httpx.Response(200)}))
    streams = ScriptedStreams()
    settings = ServerSettings.from_credentials({"server_url": URL})
    with TritonClient(settings, http_transport=transport, stream_opener=streams) as client:
        assert client.is_live()
        assert not client.closed
    assert client.closed and transport.closed and streams.closed
    with pytest.raises(ConnectionFailed, match="is closed"):
        client.is_live()
    with pytest.raises(ConnectionFailed, match="is closed"):
        client.stream_infer("m", [], ["TEXT"])
    client.close()  # twice is fine


def test_registry_shares_one_client_per_settings() -> None:
    try:
        first = client_for(ServerSettings.from_credentials({"server_url": "http://a.test:8000"}))
        again = client_for(ServerSettings.from_credentials({"server_url": "http://a.test:8000/"}))
        other = client_for(ServerSettings.from_credentials({"server_url": "http://b.test:8000"}))
        keyed = client_for(ServerSettings.from_credentials({"server_url": "http://a.test:8000", "api_key": "k"}))
        assert first is again
        assert len({id(first), id(other), id(keyed)}) == 3
        close_all()
        assert first.closed and other.closed and keyed.closed
        fresh = client_for(first.settings)
        assert fresh is not first and not fresh.closed
        fake = fake_client()
        register(fake)
        assert client_for(fake.settings) is fake
    finally:
        close_all()
