"""Embeddings: requests/s with Triton's dynamic batching on vs off, a response-cache hit vs a
miss, and what the plugin adds over the core client.

* ``throughput``: 1, 4, 16 and 64 callers, each sending one text per request, to the bundled
  ``text_embedding`` (dynamic batching) and to ``text_embedding_unbatched`` (the same model
  with the ``dynamic_batching`` block removed), alternating. Every text is new, so the
  response cache never answers.
* ``cache``: one caller; the same text again (a hit: Triton answers from its response cache,
  confirmed by the model's cache statistics) vs a new text each time (a miss), alternating.
* ``plugin``: embedding 64 texts (and, in the full run, 1,000 texts, and 8 images + 8 texts on
  the multimodal model) through the core client vs through the plugin.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from typing import Any

from devtools.bench import stats
from devtools.bench.report_tools import Report
from devtools.bench.stack import Stack
from devtools.demo import demo_picture
from tritonmm import embedding

NAME = "embeddings"
ON, OFF = "text_embedding", "text_embedding_unbatched"
CALLERS = (1, 4, 16, 64)
CALLERS_PER_CLIENT = 16  # a client pools 32 connections: several clients for many callers
_fresh_ids = itertools.count()


def fresh(texts: list[str]) -> list[str]:
    """The texts made unique to this call, so Triton's response cache does not answer them."""
    run = next(_fresh_ids)
    return [f"{text} (run {run})" for text in texts]


def models(quick: bool) -> list[str]:
    return [ON, OFF] if quick else [ON, OFF, "multimodal_embedding"]


def checkpoints(quick: bool) -> dict:
    return {}


def _callers(stack: Stack, model: str, callers: int, per_caller: int):
    def once() -> float:
        clients = [stack.new_client() for _ in range(0, callers, CALLERS_PER_CLIENT)]
        caps = clients[0].capabilities(model)
        start = threading.Barrier(callers + 1)

        def caller(index: int) -> None:
            client = clients[index // CALLERS_PER_CLIENT]
            start.wait()
            for _ in range(per_caller):
                embedding.embed_texts(client, model, caps, fresh(["a sentence about the weather"]), "document")

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        rate = callers * per_caller / (time.perf_counter() - began)
        for client in clients:
            client.close()
        return rate

    return once


def _throughput(stack: Stack, quick: bool) -> dict:
    rounds = 3 if quick else 5
    table = {}
    for callers in CALLERS:
        per_caller = max(2, (32 if quick else 128) // callers)
        sides = {side: _callers(stack, model, callers, per_caller) for side, model in (("on", ON), ("off", OFF))}
        runs = stats.alternate(sides, rounds, on_round=stack.progress.rounds(f"{callers} callers", rounds))
        table[str(callers)] = {side: stats.summary(rates) for side, rates in runs.items()}
        table[str(callers)]["requests_per_caller"] = per_caller
    return table


def _cache_hits(stack: Stack) -> int:
    stats_ = stack.client.model_statistics(ON).get("model_stats", [{}])[0]
    return int(stats_.get("inference_stats", {}).get("cache_hit", {}).get("count", 0))


def _cache(stack: Stack, rounds: int) -> dict:
    client, caps = stack.client, stack.client.capabilities(ON)
    same = fresh(["the same sentence every time"])

    def timed(texts: list[str]) -> float:
        began = time.perf_counter()
        embedding.embed_texts(client, ON, caps, texts, "document")
        return 1000 * (time.perf_counter() - began)

    hits_before = _cache_hits(stack)
    sides = {"hit": lambda: timed(same), "miss": lambda: timed(fresh(["a new sentence"]))}
    runs = stats.alternate(sides, rounds, on_round=stack.progress.rounds("cache hit vs miss", rounds))
    result: dict[str, Any] = {side: stats.summary(ms) for side, ms in runs.items()}
    result["cache_hits_counted"] = _cache_hits(stack) - hits_before  # = rounds when every hit hit (the warm-up missed)
    result["rounds"] = rounds
    result["ratio"] = stats.ratio(result["miss"], result["hit"])
    return result


def _plugin_cases(stack: Stack, quick: bool) -> dict:
    client = stack.client
    texts64 = [f"sentence {i} about {['cats', 'rain', 'trains', 'soup'][i % 4]}" for i in range(64)]
    cases = {"embed 64 texts": (ON, texts64)}
    if not quick:
        cases["embed 1000 texts"] = (ON, [f"document {i} on topic {i % 37}" for i in range(1000)])
    result = {}
    for name, (model, texts) in cases.items():
        caps = client.capabilities(model)
        sides = {
            "core": lambda model=model, texts=texts, caps=caps: embedding.embed_texts(
                client, model, caps, fresh(texts), "document"),
            "plugin": lambda model=model, texts=texts: list(stack.invoke(
                "invoke_text_embedding", "text-embedding", model, texts=fresh(texts), input_type="document")),
        }  # fmt: skip
        result[name] = _timed_pair(stack, name, sides, 3 if quick else 5)
    if not quick:
        image = base64.b64encode(demo_picture()).decode()

        def mixed() -> list[dict]:  # 8 images and 8 fresh texts: the texts keep the cache out of it
            return [{"content": image, "content_type": "image"}] * 8 + [
                {"content": text, "content_type": "text"} for text in fresh(texts64[:8])
            ]

        caps = client.capabilities("multimodal_embedding")
        sides = {
            "core": lambda: embedding.embed_contents(client, "multimodal_embedding", caps, [
                embedding.content_item(d["content_type"], d["content"], "item", client) for d in mixed()]),
            "plugin": lambda: list(stack.invoke("invoke_multimodal_embedding", "text-embedding",
                                                "multimodal_embedding", documents=mixed(), input_type="document")),
        }  # fmt: skip
        result["embed 8 images + 8 texts"] = _timed_pair(stack, "8 images + 8 texts", sides, 5)
    return result


def _timed_pair(stack: Stack, name: str, sides: dict, rounds: int) -> dict:
    def timed(fn):
        def once() -> float:
            began = time.perf_counter()
            fn()
            return 1000 * (time.perf_counter() - began)

        return once

    runs = stats.alternate(
        {k: timed(v) for k, v in sides.items()}, rounds, on_round=stack.progress.rounds(name, rounds)
    )
    result: dict[str, Any] = {side: stats.summary(ms) for side, ms in runs.items()}
    result["ratio"] = stats.ratio(result["plugin"], result["core"])
    return result


def run(stack: Stack, quick: bool) -> dict:
    stack.progress.step("requests/s, dynamic batching on vs off")
    throughput = _throughput(stack, quick)
    stack.progress.step("response cache: a hit vs a miss")
    cache = _cache(stack, 10 if quick else 30)
    stack.progress.step("core client vs the plugin")
    return {"throughput": throughput, "cache": cache, "plugin": _plugin_cases(stack, quick)}


def render(result: dict, report: Report) -> None:
    table = result["throughput"]
    report.paragraph(
        "all-MiniLM-L6-v2 on the CPU, one text per request from each caller (new texts: no cache hits). "
        "Requests/s: median (min–max) of the rounds. `on`: the bundled model (dynamic batching, "
        "2 ms queue delay); `off`: a copy without the `dynamic_batching` block."
    )
    report.table(["callers", "on req/s", "off req/s", "on / off"], [
        [callers, stats.fmt(row["on"], 0), stats.fmt(row["off"], 0), f"{stats.ratio(row['on'], row['off']):.2f}"]
        for callers, row in table.items()
    ])  # fmt: skip
    counts = [int(c) for c in table]
    report.line_plot("embeddings-requests-per-s", "Embedding requests/s against concurrent callers", "callers",
                     "requests/s", {side: (counts, [table[str(c)][side]["median"] for c in counts])
                                    for side in ("on", "off")})  # fmt: skip
    cache = result["cache"]
    report.paragraph(
        f"**Response cache**, one caller, {cache['rounds']} rounds alternating: a hit "
        f"{stats.fmt(cache['hit'])} ms vs a miss {stats.fmt(cache['miss'])} ms (miss / hit "
        f"{cache['ratio']:.1f}); Triton counted {cache['cache_hits_counted']} cache hits "
        f"of {cache['rounds']} (the warm-up put the text in the cache)."
    )
    report.table(["request", "core client ms", "plugin ms", "plugin / core"], [
        [name, stats.fmt(r["core"]), stats.fmt(r["plugin"]), f"{r['ratio']:.2f}"] for name, r in result["plugin"].items()
    ])  # fmt: skip
