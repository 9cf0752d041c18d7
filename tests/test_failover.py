"""Three real tritonservers behind one credential set, driven through the built plugin package.

Each server serves the tiny chat model and a tiny text-embedding model (a repository rendered
with only those two). The plugin gets the three URLs and gRPC endpoints as comma-separated lists.
Sixteen chat streams and a steady flow of embedding calls run while one server is killed
(SIGKILL to its process group): the streams that had begun on it end with a clear error, every
request that had not begun is served by the others, nothing hangs. The server is then started
again on the same ports and gets traffic again once its health probe passes.

The numbers (requests per server from Triton's statistics, errors, the time to recover) are
printed and written to ``<work>/failover_report.json``; the README quotes them.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests.conftest import ROOT, WORK
from tritonmm import contract
from tritonmm_server.ops.planning import LaunchOptions, plan_models
from tritonmm_server.ops.repository import render_repository
from tritonmm_server.ops.server import TritonServer

MODELS = ["chat", "text_embedding"]
STREAMS = 16
FIRST_WAVE = 6  # begun before the kill, about two on each server (fewest in flight)
LONG_TOKENS = 256  # the first wave is still answering when the kill comes
MAX_TOKENS = 32
HANG_GUARD_S = 240.0  # a stream or call still running after this has hung
RECOVERY_GUARD_S = 90.0


@pytest.fixture(scope="module")
def replica_repository(tiny_model: Callable[[str], Path]) -> Path:
    plans = plan_models(LaunchOptions(models=MODELS, work_dir=WORK), out=io.StringIO())  # chat: the tiny Idefics3
    overrides = {plan.name: plan.parameters for plan in plans if plan.parameters}
    overrides["text_embedding"] = {
        **overrides["text_embedding"],
        contract.KEY_MODEL_PATH: str(tiny_model("bert-embed")),
        contract.KEY_WEIGHTS: "tiny",
        contract.KEY_CONTEXT_SIZE: "128",
    }
    dest = WORK / "replicas" / "repository"
    render_repository(ROOT / "model_repository", dest, overrides=overrides, include=MODELS)
    return dest


def new_server(repository: Path, index: int, ports: tuple[int, int, int] | None = None) -> TritonServer:
    http, grpc, metrics = ports or (None, None, None)
    return TritonServer(
        repository,
        models=MODELS,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        log_path=WORK / "replicas" / f"server{index}.log",
        exit_timeout_s=2,
    )


@pytest.fixture(scope="module")
def replicas(replica_repository: Path) -> Iterator[list[TritonServer]]:
    servers = [new_server(replica_repository, i) for i in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda server: server.start(timeout=600), servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


def served(server: TritonServer) -> dict[str, int]:
    """Requests each model has taken on ``server`` (Triton's statistics, successes and failures; a
    streaming model's request counts when it is handed to its thread, not when its answer ends)."""
    with urllib.request.urlopen(f"{server.http_url}/v2/models/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"]
    return {
        f"{entry['name']} {kind}": int(entry["inference_stats"][kind]["count"])
        for entry in stats
        for kind in ("success", "fail")
    }


class Load:
    """Chat streams and embedding calls through the plugin, each outcome recorded."""

    def __init__(self, plugin: PluginProcess, credentials: dict) -> None:
        self.plugin = plugin
        self.credentials = credentials
        self.streams: dict[int, dict] = {}
        self.embeddings = {"ok": 0, "errors": []}
        self.stop_embedding = threading.Event()
        self.lock = threading.Lock()

    def chat(self, seed: int, max_tokens: int = MAX_TOKENS) -> dict:
        outcome = {"chunks": 0, "finish": None, "error": None}
        self.streams[seed] = outcome
        data = {
            "provider": "triton_multimodal", "model_type": "llm", "model": "chat", "credentials": self.credentials,
            "prompt_messages": [{"role": "user", "content": f"Tell me a long story, number {seed}."}],
            "model_parameters": {"max_tokens": max_tokens, "temperature": 0.8, "seed": seed},
            "tools": [], "stop": [], "stream": True,
        }  # fmt: skip
        try:
            for message in self.plugin.stream("model", "invoke_llm", data, timeout=HANG_GUARD_S):
                outcome["chunks"] += 1
                outcome["finish"] = message.data["delta"]["finish_reason"] or outcome["finish"]
        except PluginError as exc:
            outcome["error"] = exc
        return outcome

    def embed(self, text: str) -> None:
        data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": "text_embedding",
                "credentials": self.credentials, "texts": [text], "input_type": "document"}  # fmt: skip
        [answer] = self.plugin.call("model", "invoke_text_embedding", data, timeout=HANG_GUARD_S)
        assert len(answer["embeddings"]) == 1

    def embed_until_stopped(self, worker: int) -> None:
        count = 0
        while not self.stop_embedding.is_set():
            count += 1
            try:
                self.embed(f"worker {worker} sentence {count} {time.monotonic()}")  # unique: no cache hits
            except PluginError as exc:
                with self.lock:
                    self.embeddings["errors"].append(exc)
                continue
            with self.lock:
                self.embeddings["ok"] += 1


def started(threads: list[threading.Thread]) -> list[threading.Thread]:
    for thread in threads:
        thread.start()
    return threads


def joined(threads: list[threading.Thread]) -> list[str]:
    """The threads still running after the hang guard: none, when nothing hangs."""
    deadline = time.monotonic() + HANG_GUARD_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


def test_one_of_three_servers_killed_and_restarted(
    plugin: PluginProcess, replicas: list[TritonServer], replica_repository: Path, request: pytest.FixtureRequest
) -> None:
    credentials = {
        "server_url": ",".join(server.http_url for server in replicas),
        "grpc_endpoint": ",".join(server.grpc_url for server in replicas),
        "connect_timeout": "2",
    }
    load = Load(plugin, credentials)
    load.embed("warm up")
    assert load.chat(0)["finish"] == "length"
    chats = [served(server)["chat success"] for server in replicas]

    # Six long streams first, until each has its first token; the victim is a server where one began.
    first_wave = started(
        [threading.Thread(target=load.chat, args=(s, LONG_TOKENS), name=f"chat {s}") for s in range(1, 1 + FIRST_WAVE)]
    )
    embedders = started(
        [threading.Thread(target=load.embed_until_stopped, args=(w,), name=f"embed {w}", daemon=True) for w in (1, 2)]
    )
    request.addfinalizer(load.stop_embedding.set)  # also when an assertion fails before they are stopped
    deadline = time.monotonic() + HANG_GUARD_S
    while (
        sum(1 for s in range(1, 1 + FIRST_WAVE) if load.streams.get(s, {}).get("chunks")) < FIRST_WAVE
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    begun = [served(server)["chat success"] - before for server, before in zip(replicas, chats, strict=True)]
    victim_index = begun.index(max(begun))
    victim = replicas[victim_index]
    assert sum(begun) == FIRST_WAVE and min(begun) >= 1, begun  # spread over all three
    # Ten more, and the kill at once: those sent to the victim have not begun; they must go elsewhere.
    second_wave = started(
        [threading.Thread(target=load.chat, args=(s,), name=f"chat {s}") for s in range(1 + FIRST_WAVE, 1 + STREAMS)]
    )
    before_kill = served(victim)
    assert not any(load.streams[s]["finish"] for s in range(1, 1 + FIRST_WAVE))  # the victim's are mid-answer
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()

    assert joined(first_wave + second_wave) == []  # every stream ended
    streams_done_s = time.monotonic() - killed_at
    load.stop_embedding.set()
    assert joined(embedders) == []
    victim.stop()  # reaps the killed group and its shared memory

    streams = [load.streams[s] for s in range(1, 1 + STREAMS)]
    broken = [s for s in streams if s["error"] is not None]
    finished = [s for s in streams if s["error"] is None]
    assert all(s["finish"] == "length" and s["chunks"] > 1 for s in finished)
    assert len(broken) >= begun[victim_index]  # the first wave's streams on the victim, and any that began late
    for stream in broken:  # each had begun on the victim: an error that says so, no silent replay
        assert stream["chunks"] >= 1 and stream["error"].error_type == "InvokeConnectionError"
        assert "it is not retried, as a retry would repeat what was already sent" in stream["error"].message
    assert load.embeddings["errors"] == [] and load.embeddings["ok"] > 0

    survivors = [server for i, server in enumerate(replicas) if i != victim_index]
    after_kill = [served(server) for server in survivors]
    for i in range(4):  # with one server down, requests keep succeeding on the other two
        load.embed(f"after the kill {i}")
        assert load.chat(100 + i)["finish"] == "length"
    assert (
        sum(s["text_embedding success"] for s in map(served, survivors))
        >= sum(s["text_embedding success"] for s in after_kill) + 4
    )

    restarted = new_server(
        replica_repository, victim_index, (victim.ports.http, victim.ports.grpc, victim.ports.metrics)
    )
    replicas[victim_index] = restarted  # the fixture stops it
    restarted.start(timeout=600)
    ready_at = time.monotonic()
    calls = 0
    while served(restarted)["text_embedding success"] == 0 and time.monotonic() - ready_at < RECOVERY_GUARD_S:
        load.embed(f"after the restart {calls}")
        calls += 1
        time.sleep(0.2)
    recovered_s = time.monotonic() - ready_at
    assert served(restarted)["text_embedding success"] > 0, "the restarted server got no traffic"
    report = {
        "streams": STREAMS,
        "streams_finished": len(finished),
        "streams_broken_mid_answer": len(broken),
        "streams_that_had_not_begun_and_failed": sum(1 for s in broken if s["chunks"] == 0),
        "embedding_calls_during_the_kill": load.embeddings["ok"],
        "embedding_errors": len(load.embeddings["errors"]),
        "seconds_until_every_stream_ended_after_the_kill": round(streams_done_s, 1),
        "served_by_the_victim_before_the_kill": before_kill,
        "served_by_the_survivors": [served(server) for server in survivors],
        "retries_in_the_plugin_log": sum("trying elsewhere" in line for line in plugin.stderr_tail),
        "calls_until_the_restarted_server_got_traffic": calls,
        "seconds_from_restart_ready_to_traffic": round(recovered_s, 1),
    }
    (WORK / "failover_report.json").write_text(json.dumps(report, indent=2))
    print("\nfailover report:", json.dumps(report, indent=2))


def test_a_fallback_model_serves_a_model_that_no_server_has(
    plugin: PluginProcess, replicas: list[TritonServer]
) -> None:
    credentials = {
        "server_url": ",".join(server.http_url for server in replicas),
        "grpc_endpoint": ",".join(server.grpc_url for server in replicas),
        "fallback_model": "text_embedding",
    }
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": "text_embedding_next",
            "credentials": credentials, "texts": ["served by the fallback"], "input_type": "document"}  # fmt: skip
    before = sum(served(server)["text_embedding success"] for server in replicas)
    [answer] = plugin.call("model", "invoke_text_embedding", data)
    assert len(answer["embeddings"]) == 1
    assert sum(served(server)["text_embedding success"] for server in replicas) == before + 1
    del credentials["fallback_model"]
    with pytest.raises(PluginError) as raised:
        plugin.call("model", "invoke_text_embedding", data)
    assert "model 'text_embedding_next' is not READY on any server" in raised.value.message


@pytest.mark.parametrize(
    ("creds", "fragment"),
    [
        ({"server_url": "http://127.0.0.1:1,http://127.0.0.1:2\nhttp://127.0.0.1:3"},
         "'server_url' item 2 contains a space, line break or control character"),
        ({"server_url": "http://127.0.0.1:1,http://127.0.0.1:2", "grpc_endpoint": "127.0.0.1:3"},
         "'grpc_endpoint' lists 1 endpoint(s) and 'server_url' 2"),
        ({"server_url": "http://127.0.0.1:99999"}, "'server_url' has a bad port"),
    ],
)  # fmt: skip
def test_a_malformed_endpoint_list_is_a_credentials_error(plugin: PluginProcess, creds: dict, fragment: str) -> None:
    data = {"provider": "triton_multimodal", "credentials": creds}
    with pytest.raises(PluginError) as raised:
        plugin.call("model", "validate_provider_credentials", data)
    assert raised.value.error_type == "CredentialsValidateFailedError"
    assert fragment in raised.value.message
