"""Several servers behind one client, on fake wires: the choice of server (fewest in flight,
model READY, in turn), taking a failing one out and probing it back, DNS names with several
addresses looked up again, the read timeout of a silent stream.

The fake servers are ``tests.fake_triton.Cluster`` (three hosts, a fake clock, probes run at once).
"""

from __future__ import annotations

import socket
import threading
import time

import grpc
import httpx
import pytest

from tests.fake_triton import (
    CLUSTER_HOSTS,
    INFER,
    Cluster,
    FakeRpcError,
    Router,
    ScriptedStreams,
    bytes_out,
    config,
    error,
    infer_answer,
    run_now,
    stream_message,
    tokens,
)
from tritonmm.errors import ConnectionFailed, InvalidInput, ModelNotReady, RequestTimeout
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient
from tritonmm.transport.endpoints import EJECT_BASE, READY_TTL, RESOLVE_INTERVAL

# --- the choice ------------------------------------------------------------------------------------


def test_the_server_with_fewest_requests_in_flight_gets_the_next_one() -> None:
    cluster = Cluster()
    for streams in cluster.streams.values():
        streams.scripts = [tokens(b"a", b"b")]
    on_a, on_b, on_c = (
        cluster.stream() for _ in CLUSTER_HOSTS
    )  # first responses read, streams open: one in flight each
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


def test_load_and_unload_reach_every_server() -> None:
    cluster = Cluster()
    for router in cluster.routers.values():
        router.routes[("POST", "/v2/repository/models/chat/load")] = httpx.Response(200)
    cluster.routers["c.test"].routes[("POST", "/v2/repository/models/chat/load")] = error(400, "load failed: no GPU")
    with pytest.raises(InvalidInput, match=r"failed on 1 of 3 servers: http://c.test:8000: .*no GPU"):
        cluster.client.load_model("chat")
    assert cluster.infers(("POST", "/v2/repository/models/chat/load")) == {"a.test": 1, "b.test": 1, "c.test": 1}


class SilentCall:
    """A call that sends ``first`` (if any), then nothing until it is cancelled."""

    def __init__(self, first: list) -> None:
        self.first = first
        self.cancelled = threading.Event()

    def __iter__(self):
        yield from self.first
        self.cancelled.wait(30)
        raise FakeRpcError(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class SilentServer(ScriptedStreams):
    def __init__(self, first: list) -> None:
        super().__init__()
        self.first = first

    def open(self, requests):
        self.requests.append(next(requests))
        call = SilentCall(self.first)
        self.calls.append(call)
        return call


def in_flight(cluster: Cluster) -> list[int]:
    return [address.in_flight for address in cluster.client._pool.addresses()]


def test_a_silent_server_times_out_without_a_retry_and_is_not_counted_busy_after() -> None:
    cluster = Cluster(hosts=("a.test", "b.test"), read_timeout="0.05")
    cluster.streams["a.test"] = SilentServer([])
    with pytest.raises(RequestTimeout, match="sent nothing for 0.05 s"):
        cluster.stream()  # slow is not down: b is not asked
    assert len(cluster.streams["b.test"].calls) == 0
    assert in_flight(cluster) == [0, 0]


def test_a_stream_nobody_reads_is_ended_by_the_read_timeout() -> None:
    cluster = Cluster(hosts=("a.test",), read_timeout="0.05")
    cluster.streams["a.test"] = SilentServer([stream_message({"TEXT": bytes_out(b"Hel")})])
    cluster.stream()  # its first response arrived; then nobody iterates it
    deadline = time.monotonic() + 30
    while in_flight(cluster) != [0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert in_flight(cluster) == [0]
    assert cluster.streams["a.test"].calls[0].cancelled.is_set()
