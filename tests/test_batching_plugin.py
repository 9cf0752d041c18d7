"""Many users at once: the chat model's decoding batch, through the built package and the real server.

``chat`` batches with its default limits; ``chat_batch1`` decodes one sequence at a
time with a waiting line of one, so that "busy" and a freed place are easy to cause.
Cancellation is driven through the core client (the daemon-role harness cannot
cancel a session): closing the stream cancels the Triton request.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests.test_llm_plugin import invoke, text_of, user
from tritonmm import chat
from tritonmm.chat import ChatParams
from tritonmm.contract import Task
from tritonmm.messages import Message, TextPart
from tritonmm.settings import ServerSettings
from tritonmm.transport.clients import client_for
from tritonmm_server.ops.server import TritonServer

ONE_AT_A_TIME = "chat_batch1"


def params_for(i: int) -> dict:
    """Sixteen different requests: lengths, greedy or seeded, filters, stop sequences."""
    params: dict = {"max_tokens": 4 + 3 * i, "temperature": 0.0 if i % 2 == 0 else 0.9, "seed": 7 * i + 1}
    if i % 4 == 1:
        params["top_k"] = 30
    if i % 4 == 3:
        params["top_p"] = 0.8
    if i % 5 == 4:
        params["stop"] = ["e"]
    return params


def ask(plugin: PluginProcess, credentials: dict, i: int, model: str = "chat") -> list[dict]:
    return invoke(plugin, credentials, user(text=f"question number {i}: " + "why " * i), model=model, **params_for(i))


def outcome(chunks: list[dict]) -> tuple[str, str, int]:
    last = chunks[-1]["delta"]
    return text_of(chunks), last["finish_reason"], last["usage"]["completion_tokens"]


def test_sixteen_concurrent_streams_match_their_answers_alone(plugin: PluginProcess, credentials: dict) -> None:
    alone = [outcome(ask(plugin, credentials, i)) for i in range(16)]
    together: list = [None] * 16
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        start.wait()
        try:
            together[i] = outcome(ask(plugin, credentials, i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    assert together == alone
    assert {reason for _, reason, _ in alone} >= {"length"}


def test_bad_requests_in_a_running_batch_fail_alone(plugin: PluginProcess, credentials: dict) -> None:
    good = {i: outcome(ask(plugin, credentials, i)) for i in (2, 5, 8)}
    results: dict = {}
    failures: dict = {}
    bad = {
        "stops": lambda: invoke(plugin, credentials, user(), stop=[f"s{n}" for n in range(20)]),
        "too long": lambda: invoke(plugin, credentials, user(text="word " * 5000)),
    }

    def run(key, call) -> None:
        try:
            results[key] = outcome(call())
        except PluginError as exc:
            failures[key] = exc

    threads = [threading.Thread(target=run, args=(i, lambda i=i: ask(plugin, credentials, i))) for i in good]
    threads += [threading.Thread(target=run, args=(key, call)) for key, call in bad.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert {key: results[key] for key in good} == good
    assert sorted(failures) == sorted(bad)
    assert all(exc.error_type == "InvokeBadRequestError" for exc in failures.values())


def _core_stream(credentials: dict, max_tokens: int, seed: int):
    client = client_for(ServerSettings.from_credentials(credentials))
    caps = client.capabilities(ONE_AT_A_TIME, Task.CHAT)
    messages = [Message("user", (TextPart("tell me a long story"),))]
    return chat.open_chat(client, ONE_AT_A_TIME, messages, ChatParams(max_tokens=max_tokens, seed=seed), caps)


def _long_seed(credentials: dict, max_tokens: int) -> int:
    """A seed whose answer runs to max_tokens on this checkpoint (a random model may stop early)."""
    for seed in range(40):
        chunks = list(_core_stream(credentials, max_tokens, seed))
        if chunks[-1].finish_reason == "length":
            return seed
    raise AssertionError(f"no seed in 0..39 gives {max_tokens} tokens without an end token")


def test_busy_past_the_waiting_line_and_the_plugin_keeps_serving(
    plugin: PluginProcess, credentials: dict, triton: TritonServer
) -> None:
    seed = _long_seed(credentials, 400)
    running = _core_stream(credentials, 400, seed)
    next(running)  # it holds the only place in the batch now
    outcomes: dict = {}

    def contender(name: str) -> None:
        try:
            outcomes[name] = outcome(invoke(plugin, credentials, user(), model=ONE_AT_A_TIME, max_tokens=3))
        except PluginError as exc:
            outcomes[name] = exc

    contenders = [threading.Thread(target=contender, args=(name,)) for name in ("b", "c")]
    for thread in contenders:
        thread.start()
    # One of the two waits for the place, the other finds the waiting line full.
    busy = _wait_for_error(outcomes)
    assert busy.error_type == "InvokeServerUnavailableError"
    assert "busy" in busy.message
    running.close()  # cancels the long one: the waiting one gets the place
    for thread in contenders:
        thread.join(120)
    served = [value for value in outcomes.values() if not isinstance(value, PluginError)]
    assert len(served) == 1 and served[0][1] == "length"
    assert text_of(invoke(plugin, credentials, user(), model=ONE_AT_A_TIME, max_tokens=2))  # still serving
    _assert_cancel_logged(triton.log_path, 400)


def _wait_for_error(outcomes: dict, timeout: float = 120.0) -> PluginError:
    done = threading.Event()

    def watch() -> None:
        while not any(isinstance(v, PluginError) for v in outcomes.values()):
            if done.wait(0.05):
                return
        done.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    done.wait(timeout)
    done.set()
    watcher.join()
    errors = [v for v in outcomes.values() if isinstance(v, PluginError)]
    assert errors, f"no request was refused within {timeout:g} s: {outcomes}"
    return errors[0]


def test_a_cancelled_stream_frees_its_place(credentials: dict, triton: TritonServer) -> None:
    seed = _long_seed(credentials, 400)
    first = _core_stream(credentials, 400, seed)
    next(first)
    second = _core_stream(credentials, 3, seed)  # waits: the batch has one place
    first.close()
    chunks = list(second)
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 3
    _assert_cancel_logged(triton.log_path, 400)


def _assert_cancel_logged(log_path: Path, max_tokens: int) -> None:
    text = log_path.read_text(errors="replace")
    counts = [int(n) for n in re.findall(rf"{ONE_AT_A_TIME}: request cancelled after (\d+) token", text)]
    assert counts, "the server never saw the cancellation"
    assert min(counts) < max_tokens


@pytest.fixture(autouse=True)
def _serves_the_one_place_model(triton: TritonServer) -> None:
    assert ONE_AT_A_TIME in triton.models
