"""Iteration-level batching in the chat engine, on the tiny checkpoints.

The same requests run alone (``tmm.batching: off``: one ``generate`` each) and
together in one decoding batch; greedy and seeded requests must give the same
tokens both ways. Then the limits: busy past the waiting line, a cancelled
sequence frees its place, a broken request fails alone, the cache stays within
its budget.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from tritonmm.chat_wire import WireMessage, encode_messages, media_part, text_part
from tritonmm.contract import FINISH_CANCELLED, FINISH_LENGTH, KEY_BATCH_MAX_WAITING, KEY_BATCHING, KEY_KV_CACHE_MB
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.chat.batching import BatchLimits, Busy
from tritonmm_server.engines.chat.engine import ChatEngine
from tritonmm_server.engines.chat.kv_batch import KvBatch
from tritonmm_server.engines.chat.limits import batch_limits
from tritonmm_server.engines.chat.params import GenerationParams

ROOMY = BatchLimits(max_sequences=8, max_waiting=16, kv_cache_bytes=256 * 2**20)
BATCHED_ARCHS = ("idefics3", "llava")


def _engine(model_dir: Path, batching: BatchLimits | None) -> ChatEngine:
    return ChatEngine(
        model_dir, video_max_frames=2, video_fps=1.0, max_images=4, num_threads=2, batching=batching, device="cpu"
    )


@pytest.fixture(scope="module", params=BATCHED_ARCHS)
def engines(request: pytest.FixtureRequest, tiny_model: Callable[[str], Path]) -> tuple[ChatEngine, ChatEngine]:
    """(alone, batched) engines on the same checkpoint."""
    directory = tiny_model(request.param)
    alone, batched = _engine(directory, None), _engine(directory, ROOMY)
    assert alone.batching is None and batched.batching == ROOMY
    yield alone, batched
    batched.close()


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (90, 60), color).save(buf, "PNG")
    return buf.getvalue()


def request(i: int) -> tuple[bytes, list[bytes], GenerationParams]:
    """Eight different requests: lengths, prompts, images, greedy or seeded, filters and stops."""
    parts = [text_part("tell me " + "more " * i + "about it")]
    images = []
    if i % 3 == 0:
        parts.insert(0, media_part("image", 0))
        images = [png((40 * i % 255, 90, 200))]
    params = GenerationParams(
        max_tokens=6 + 5 * i,
        temperature=0.0 if i % 2 == 0 else 0.8,
        seed=100 + i,
        top_k=40 if i % 4 == 1 else 0,
        top_p=0.9 if i % 4 == 3 else 1.0,
    )
    return encode_messages([WireMessage("user", tuple(parts))]), images, params


def run(engine: ChatEngine, i: int, params: GenerationParams | None = None) -> tuple[list[str], str | None, int]:
    messages, images, default = request(i)
    generation = engine.generate(engine.prepare(messages, images, []), params or default)
    pieces = list(generation)
    return pieces, generation.finish_reason, generation.completion_tokens


def run_together(engine: ChatEngine, count: int) -> list[tuple[list[str], str | None, int]]:
    results: list = [None] * count
    start = threading.Barrier(count)

    def worker(i: int) -> None:
        start.wait()
        results[i] = run(engine, i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_same_tokens_alone_and_in_a_batch_of_8(engines: tuple[ChatEngine, ChatEngine]) -> None:
    alone, batched = engines
    expected = [run(alone, i) for i in range(8)]
    together = run_together(batched, 8)
    assert together == expected
    assert all(reason == FINISH_LENGTH for _, reason, _ in expected)  # every one ran its full length


def test_sequences_join_a_running_batch(engines: tuple[ChatEngine, ChatEngine]) -> None:
    """A request that arrives while others decode joins at the next step and still gets its own tokens."""
    alone, batched = engines
    long_params = replace(request(0)[2], max_tokens=60)
    expected_long = run(alone, 0, long_params)
    expected_short = [run(alone, i) for i in (1, 2, 3)]
    messages, images, _ = request(0)
    first = batched.generate(batched.prepare(messages, images, []), long_params)
    iterator = iter(first)
    head = [next(iterator) for _ in range(5)]  # the long one is decoding now
    joined = [run(batched, i) for i in (1, 2, 3)]
    assert joined == expected_short
    assert (head + list(iterator), first.finish_reason, first.completion_tokens) == expected_long


def test_busy_past_the_waiting_line(tiny_model: Callable[[str], Path]) -> None:
    engine = _engine(tiny_model("idefics3"), BatchLimits(max_sequences=1, max_waiting=1, kv_cache_bytes=2**26))
    entered, release = threading.Event(), threading.Event()
    messages, _, params = request(1)

    def blocks() -> bool:  # the scheduler polls this: while it waits, nothing else is admitted
        entered.set()
        release.wait(30)
        return False

    try:
        first = engine.generate(engine.prepare(messages, [], []), params, blocks)
        assert entered.wait(30)  # the scheduler took the first: the waiting line is empty
        second = engine.generate(engine.prepare(messages, [], []), params)
        with pytest.raises(Busy, match="waiting"):
            engine.generate(engine.prepare(messages, [], []), params)
        release.set()
        assert len(list(first)) == params.max_tokens
        assert len(list(second)) == params.max_tokens
        # The line is free again: a new request is served.
        assert len(list(engine.generate(engine.prepare(messages, [], []), params))) == params.max_tokens
    finally:
        release.set()
        engine.close()


def test_a_cancelled_sequence_frees_its_place(tiny_model: Callable[[str], Path]) -> None:
    engine = _engine(tiny_model("idefics3"), BatchLimits(max_sequences=1, max_waiting=4, kv_cache_bytes=2**26))
    messages, _, params = request(2)
    cancelled = threading.Event()
    try:
        endless = engine.generate(engine.prepare(messages, [], []), replace(params, max_tokens=1000), cancelled.is_set)
        iterator = iter(endless)
        next(iterator)
        waiting = engine.generate(engine.prepare(messages, [], []), params)  # no place until the first leaves
        cancelled.set()
        rest = list(iterator)
        assert endless.finish_reason == FINISH_CANCELLED and len(rest) < 999
        assert len(list(waiting)) == params.max_tokens and waiting.finish_reason == FINISH_LENGTH
    finally:
        engine.close()


def test_a_request_that_breaks_the_model_fails_alone(engines: tuple[ChatEngine, ChatEngine]) -> None:
    alone, batched = engines
    expected = [run(alone, i) for i in range(4)]
    messages, _, params = request(5)
    broken = batched.prepare(messages, [], [])
    broken.inputs["input_ids"][0, -1] = 10**6  # no such token: the embedding lookup fails in prefill
    results: list = [None] * 4
    failed: list[BaseException] = []

    def good(i: int) -> None:
        results[i] = run(batched, i)

    def bad() -> None:
        try:
            list(batched.generate(broken, params))
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=good, args=(i,)) for i in range(4)] + [threading.Thread(target=bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(failed) == 1 and isinstance(failed[0], IndexError)
    assert results == expected


def test_cache_stays_within_its_budget(tiny_model: Callable[[str], Path]) -> None:
    directory = tiny_model("idefics3")
    probe = _engine(directory, ROOMY)
    messages, _, params = request(4)
    per_token = probe._scheduler._bytes_per_token
    prompt = probe.prepare(messages, [], []).prompt_tokens
    probe.close()
    # Room for three such requests at a time, not eight.
    budget = 3 * (prompt + params.max_tokens) * per_token
    engine = _engine(directory, BatchLimits(max_sequences=8, max_waiting=16, kv_cache_bytes=budget))
    try:
        results = run_together(engine, 8)
        assert all(reason is not None for _, reason, _ in results)
        assert 0 < engine._scheduler.peak_kv_bytes <= budget
        with pytest.raises(InputError, match="key/value cache"):
            engine.generate(engine.prepare(messages, [], []), replace(params, max_tokens=1900))
    finally:
        engine.close()


def test_kv_batch_pads_joins_and_trims() -> None:
    from transformers import DynamicCache

    def cache(length: int, fill: float) -> DynamicCache:
        made = DynamicCache()
        made.update(torch.full((1, 2, length, 4), fill), torch.full((1, 2, length, 4), -fill), 0)
        return made

    batch = KvBatch()
    batch.add(cache(3, 1.0), 3)
    batch.add(cache(5, 2.0), 5)  # longer: the first row is padded on the left
    assert batch.mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert batch.positions.tolist() == [3, 5]
    assert batch.keys[0][0, 0, :2].abs().sum() == 0  # padding is zeros
    batch.keep([0])  # the long row leaves: the columns only it used go
    assert batch.mask.tolist() == [[1, 1, 1]] and batch.keys[0].shape == (1, 2, 3, 4)
    assert batch.keys[0][0, 0, :, 0].tolist() == [1.0, 1.0, 1.0]
    batch.keep([])
    assert batch.size == 0 and batch.length == 0


def test_batch_limits_from_config() -> None:
    cpu = torch.device("cpu")
    assert batch_limits({KEY_BATCHING: "off"}, cpu) is None
    assert batch_limits({}, cpu) == BatchLimits.defaults(cpu)
    limits = batch_limits({KEY_KV_CACHE_MB: "64", KEY_BATCH_MAX_WAITING: "0"}, cpu)
    assert limits.kv_cache_bytes == 64 * 2**20 and limits.max_waiting == 0
    for bad, key in (({KEY_BATCHING: "maybe"}, KEY_BATCHING), ({KEY_KV_CACHE_MB: "-1"}, KEY_KV_CACHE_MB)):
        with pytest.raises(ValueError, match=key):
            batch_limits(bad, cpu)
