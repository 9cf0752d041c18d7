"""Several servers behind one client, on fake wires: the choice of server, taking one out and
probing it back, retries before the first byte only, the failover time, the fallback model.

Three fake servers a.test, b.test and c.test, each its own ``Router`` (HTTP, told apart by the
request's host) and ``ScriptedStreams`` (gRPC, one per target); a fake clock that the recorded
backoff pauses advance; probes run at once.
"""

from __future__ import annotations

import json
import socket

import grpc
import httpx
import pytest

from tests.fake_triton import (
    FakeRpcError,
    Router,
    ScriptedStreams,
    bytes_out,
    config,
    error,
    infer_answer,
    no_dns,
    run_now,
    stream_message,
)
from tritonmm.contract import Task, TensorSpec
from tritonmm.errors import ConnectionFailed, InvalidInput, ModelBusy, ModelNotReady
from tritonmm.settings import ServerSettings
from tritonmm.transport import InputTensor, TritonClient
from tritonmm.transport.endpoints import EJECT_BASE, READY_TTL, RESOLVE_INTERVAL
from tritonmm.transport.failover import RETRY_BASE

HOSTS = ("a.test", "b.test", "c.test")
BLOB = TensorSpec("BLOB", "TYPE_STRING", (1,))
INFER = ("POST", "/v2/models/chat/infer")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """A client over fake servers; ``routers[host]`` and ``streams[host]`` script each one."""

    def __init__(self, hosts: tuple[str, ...] = HOSTS, resolve=no_dns, **credentials: str) -> None:
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


# --- the choice ------------------------------------------------------------------------------------


def test_the_server_with_fewest_requests_in_flight_gets_the_next_one() -> None:
    cluster = Cluster()
    for streams in cluster.streams.values():
        streams.scripts = [tokens(b"a", b"b")]
    on_a, on_b, on_c = (cluster.stream() for _ in HOSTS)  # first responses read, streams open: one in flight each
    assert [len(s.calls) for s in cluster.streams.values()] == [1, 1, 1]
    assert [r.outputs["TEXT"] for r in on_b] == [[b"a"], [b"b"]]  # finished: b has none in flight now
    for _ in range(3):
        cluster.infer()
    assert cluster.infers() == {"a.test": 0, "b.test": 3, "c.test": 0}


def test_idle_servers_take_requests_in_turn() -> None:
    cluster = Cluster()
    for _ in range(6):
        cluster.infer()
    assert cluster.infers() == {"a.test": 2, "b.test": 2, "c.test": 2}


def test_a_server_without_the_model_ready_is_skipped_and_asked_again_after_the_ttl() -> None:
    cluster = Cluster()
    cluster.routers["b.test"].model("chat", config("chat"), ready=False)
    for _ in range(6):
        cluster.infer()
    assert cluster.infers() == {"a.test": 3, "b.test": 0, "c.test": 3}
    ready_checks = cluster.infers(("GET", "/v2/models/chat/ready"))
    assert ready_checks["b.test"] == 1  # its answer is trusted for READY_TTL
    cluster.routers["b.test"].model("chat", config("chat"))
    cluster.clock.now += READY_TTL
    for _ in range(3):
        cluster.infer()
    assert cluster.infers()["b.test"] == 1


def test_a_model_ready_nowhere_is_not_ready() -> None:
    cluster = Cluster()
    for router in cluster.routers.values():
        router.model("chat", config("chat"), ready=False)
    assert not cluster.client.is_model_ready("chat")
    with pytest.raises(ModelNotReady, match="model 'chat' is not READY on any server"):
        cluster.infer()
    assert cluster.infers() == {"a.test": 0, "b.test": 0, "c.test": 0}


# --- taking a server out, probing it back ------------------------------------------------------------


def test_a_server_that_fails_to_connect_is_taken_out_and_probed_before_it_gets_traffic_again() -> None:
    cluster = Cluster()
    a = cluster.routers["a.test"]
    a.routes[INFER] = httpx.ConnectError("connection refused")
    for _ in range(4):
        assert cluster.infer() == {"OUT": [b"ok"]}  # the one on a is retried on another server
    assert cluster.infers() == {"a.test": 1, "b.test": 2, "c.test": 2}
    a.routes[INFER] = infer_answer({"OUT": bytes_out(b"ok")})
    a.routes[("GET", "/v2/health/ready")] = error(503, "Server not ready")
    cluster.clock.now += EJECT_BASE  # due: the next choice probes it, and the probe fails
    cluster.infer()
    assert a.count("GET", "/v2/health/ready") == 1 and cluster.infers()["a.test"] == 1
    cluster.clock.now += EJECT_BASE  # out for twice as long after a second failure
    cluster.infer()
    assert a.count("GET", "/v2/health/ready") == 1
    a.routes[("GET", "/v2/health/ready")] = httpx.Response(200)
    cluster.clock.now += EJECT_BASE
    cluster.infer()  # the probe passes: a is back
    assert a.count("GET", "/v2/health/ready") == 2
    for _ in range(3):
        cluster.infer()
    assert cluster.infers()["a.test"] >= 2


def test_a_lone_server_that_blinked_is_tried_again_at_once() -> None:
    cluster = Cluster(hosts=("a.test",))
    a = cluster.routers["a.test"]
    a.routes[INFER] = httpx.ConnectError("connection refused")
    with pytest.raises(ConnectionFailed, match="cannot reach Triton at http://a.test:8000"):
        cluster.infer()
    a.routes[INFER] = infer_answer({"OUT": bytes_out(b"ok")})
    assert cluster.infer() == {"OUT": [b"ok"]}  # taken out, but the only one: tried anyway
    assert cluster.sleeps == []


# --- retries before the first byte only ----------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        stream_message(error="busy: 16 requests already running"),
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed"),
    ],
)
def test_a_stream_that_fails_before_its_first_response_is_retried_on_another_server(first) -> None:
    cluster = Cluster(hosts=("a.test", "b.test"))
    cluster.streams["a.test"].scripts = [[first]]
    cluster.streams["b.test"].scripts = [tokens(b"Hel", b"lo")]
    stream = cluster.stream()  # on a first: all idle, a's turn
    assert [r.outputs["TEXT"] for r in stream] == [[b"Hel"], [b"lo"]]
    assert [len(s.calls) for s in cluster.streams.values()] == [1, 1]
    same_id = {s.requests[0].id for s in cluster.streams.values()}
    assert len(same_id) == 1  # one request id on every server it was tried on
    assert len(cluster.sleeps) == 1 and RETRY_BASE / 2 <= cluster.sleeps[0] <= RETRY_BASE


def test_a_stream_that_breaks_after_its_first_response_ends_with_an_error_and_is_not_replayed() -> None:
    cluster = Cluster(hosts=("a.test", "b.test"))
    broken = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    cluster.streams["a.test"].scripts = [[stream_message({"TEXT": bytes_out(b"Hel")}), broken]]
    stream = iter(cluster.stream())  # on a: all idle, a's turn
    assert next(stream).outputs["TEXT"] == [b"Hel"]
    with pytest.raises(ConnectionFailed, match="the answer had begun on a.test:8001; it is not retried"):
        next(stream)
    assert len(cluster.streams["b.test"].calls) == 0
    cluster.infer()  # a went away mid-answer: it is out
    cluster.infer()
    assert cluster.infers() == {"a.test": 0, "b.test": 2}


def test_the_requests_own_errors_are_never_retried() -> None:
    cluster = Cluster()
    for router in cluster.routers.values():
        router.routes[INFER] = error(400, "invalid input: image 1: not an image")
    with pytest.raises(InvalidInput, match="image 1: not an image"):
        cluster.infer()
    assert sum(cluster.infers().values()) == 1 and cluster.sleeps == []


@pytest.mark.parametrize("answer", [error(503, "busy: 4 requests already running"), error(429, "slow down")])
def test_busy_answers_are_retried_elsewhere_with_a_growing_pause(answer: httpx.Response) -> None:
    cluster = Cluster()
    for router in cluster.routers.values():
        router.routes[INFER] = answer
    with pytest.raises(ModelBusy) as raised:
        cluster.infer()
    assert cluster.infers() == {"a.test": 1, "b.test": 1, "c.test": 1}  # each server once
    assert "no server could serve 'chat' (tried 3 times" in str(raised.value)
    first, second = cluster.sleeps
    assert RETRY_BASE / 2 <= first <= RETRY_BASE and RETRY_BASE <= second <= 2 * RETRY_BASE
    for router in cluster.routers.values():
        router.routes[INFER] = infer_answer({"OUT": bytes_out(b"ok")})
    for _ in range(3):
        cluster.infer()
    assert cluster.infers() == {"a.test": 2, "b.test": 2, "c.test": 2}  # busy is no reason to take one out


def test_retries_stop_when_the_failover_time_is_spent() -> None:
    cluster = Cluster(failover_timeout="10")

    def slow_busy(request: httpx.Request) -> httpx.Response:
        cluster.clock.now += 8  # each attempt takes 8 s
        return error(503, "busy: full")

    for router in cluster.routers.values():
        router.routes[INFER] = slow_busy
    with pytest.raises(ModelBusy, match="tried 2 times in 16"):
        cluster.infer()
    assert sum(cluster.infers().values()) == 2  # the third would start after the 10 s


def test_no_retries_when_the_failover_time_is_zero() -> None:
    cluster = Cluster(failover_timeout="0")
    for router in cluster.routers.values():
        router.routes[INFER] = error(503, "busy: full")
    with pytest.raises(ModelBusy, match="^model 'chat' is busy: full$"):
        cluster.infer()
    assert sum(cluster.infers().values()) == 1


# --- the fallback model -------------------------------------------------------------------------------


def test_the_fallback_model_serves_when_the_model_is_unavailable_everywhere() -> None:
    cluster = Cluster(fallback_model="chat_small")
    for router in cluster.routers.values():
        router.model("chat", config("chat"), ready=False)
        router.model("chat_small", config("chat", **{"tmm.context_size": "2048"}))
        router.routes[("POST", "/v2/models/chat_small/infer")] = infer_answer({"OUT": bytes_out(b"small")})
    assert cluster.infer() == {"OUT": [b"small"]}
    assert cluster.client.capabilities("chat", Task.CHAT).context_size == 2048  # the fallback's
    for streams in cluster.streams.values():
        streams.scripts = [tokens(b"from small")]
    stream = cluster.stream()
    assert [r.outputs["TEXT"] for r in stream] == [[b"from small"]]
    [sent] = [s.requests[0] for s in cluster.streams.values() if s.requests]
    assert sent.model_name == "chat_small"


def test_the_fallback_model_takes_over_when_every_server_is_busy_with_the_model() -> None:
    cluster = Cluster(hosts=("a.test", "b.test"), fallback_model="chat_small")
    for host, streams in cluster.streams.items():
        cluster.routers[host].model("chat_small", config("chat"))
        streams.scripts = [[stream_message(error="busy: full")], tokens(b"small")]
    stream = cluster.stream()
    assert [r.outputs["TEXT"] for r in stream] == [[b"small"]]
    assert [r.model_name for s in cluster.streams.values() for r in s.requests].count("chat") == 2


def test_without_a_fallback_an_unavailable_model_stays_an_error() -> None:
    cluster = Cluster()
    for router in cluster.routers.values():
        router.model("chat", config("chat"), ready=False)
    with pytest.raises(ModelNotReady):
        cluster.client.capabilities("chat")


# --- names with several addresses -----------------------------------------------------------------------


class FakeDns:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked = 0

    def __call__(self, host: str, port: int, **kwargs) -> list:
        self.asked += 1
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in self.answers[host]]


def test_a_name_with_several_addresses_is_balanced_over_them_and_looked_up_again() -> None:
    dns = FakeDns({"triton-headless": ["10.0.0.1", "10.0.0.2"]})
    seen: list[httpx.Request] = []
    router = Router().model("chat", config("chat"))
    router.routes[INFER] = lambda request: seen.append(request) or infer_answer({"OUT": bytes_out(b"ok")})
    cluster = Cluster(hosts=("10.0.0.1", "10.0.0.2", "10.0.0.3"), resolve=dns)
    cluster.client = TritonClient(
        ServerSettings.from_credentials({"server_url": "http://triton-headless:8000"}),
        http_transport=httpx.MockTransport(router),
        stream_openers=cluster.opener,
        clock=cluster.clock,
        resolve=dns,
        spawn=run_now,
    )
    for _ in range(4):
        cluster.infer()
    assert sorted(r.url.host for r in seen) == ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"]
    assert {r.headers["host"] for r in seen} == {"triton-headless:8000"}  # the server sees the name
    cluster.streams["10.0.0.1"].scripts = [tokens(b"x")]
    cluster.streams["10.0.0.2"].scripts = [tokens(b"x")]
    list(cluster.stream())
    assert cluster.opened[0] in ("10.0.0.1:8001", "10.0.0.2:8001")
    dns.answers["triton-headless"] = ["10.0.0.2", "10.0.0.3"]  # a pod went, another came
    cluster.clock.now += RESOLVE_INTERVAL
    seen.clear()
    for _ in range(4):
        cluster.infer()
    assert sorted(r.url.host for r in seen) == ["10.0.0.2", "10.0.0.2", "10.0.0.3", "10.0.0.3"]
    assert dns.asked == 2


def test_https_to_an_address_keeps_the_tls_name() -> None:
    dns = FakeDns({"triton.example.com": ["192.0.2.7"]})
    seen: list[httpx.Request] = []
    client = TritonClient(
        ServerSettings.from_credentials({"server_url": "https://triton.example.com"}),
        http_transport=httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(200)),
        resolve=dns,
    )
    assert client.is_live()
    [request] = seen
    assert request.url.scheme == "https" and request.url.host == "192.0.2.7"
    assert request.headers["host"] == "triton.example.com"
    assert request.extensions["sni_hostname"] == "triton.example.com"


def test_one_request_id_in_the_infer_header_on_every_try() -> None:
    cluster = Cluster(hosts=("a.test", "b.test"))
    ids: list[str] = []

    def busy(request: httpx.Request) -> httpx.Response:
        head = request.read()[: int(request.headers["Inference-Header-Content-Length"])]
        ids.append(json.loads(head)["id"])
        return error(503, "busy: full")

    for router in cluster.routers.values():
        router.routes[INFER] = busy
    with pytest.raises(ModelBusy):
        cluster.infer()
    assert len(ids) == 2 and len(set(ids)) == 1 and len(ids[0]) == 32


def test_load_and_unload_reach_every_server() -> None:
    cluster = Cluster()
    for router in cluster.routers.values():
        router.routes[("POST", "/v2/repository/models/chat/load")] = httpx.Response(200)
    cluster.routers["c.test"].routes[("POST", "/v2/repository/models/chat/load")] = error(400, "load failed: no GPU")
    with pytest.raises(InvalidInput, match=r"failed on 1 of 3 servers: http://c.test:8000: .*no GPU"):
        cluster.client.load_model("chat")
    assert cluster.infers(("POST", "/v2/repository/models/chat/load")) == {"a.test": 1, "b.test": 1, "c.test": 1}
