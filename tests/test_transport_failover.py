"""Retries on fake wires: another server before the first byte only, never a replay after it,
the failover time, the fallback model, one request id on every try.

The fake servers are ``tests.fake_triton.Cluster``: three hosts a.test, b.test and c.test, each
its own ``Router`` and ``ScriptedStreams``, a fake clock that the recorded backoff pauses advance.
"""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from tests.fake_triton import (
    INFER,
    Cluster,
    FakeRpcError,
    bytes_out,
    config,
    error,
    infer_answer,
    stream_message,
    tokens,
)
from tritonmm.contract import Task
from tritonmm.errors import ConnectionFailed, InvalidInput, ModelBusy, ModelNotReady
from tritonmm.transport.failover import RETRY_BASE

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
