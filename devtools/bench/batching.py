"""Chat throughput with iteration-level batching on vs off, side by side in one run.

For each number of concurrent streams (1, 4, 8, 16 by default), each round runs the same
requests twice, batching on then off (alternating which goes first), and records the
aggregate tokens per second and each stream's time to first token. Both sides get the same
prompts, seeds and lengths, so they generate the same tokens: only the scheduling differs.

Two ways to run it:

* through Triton (the benchmark's ``batching`` group, and this command by default): the
  bundled ``chat`` (``tmm.batching: on``) and its copy ``chat_off`` on one tritonserver,
  raw gRPC streams of the core client;
* ``--engine``: in this process, the engine's scheduler against one ``generate`` per
  request in its own thread (no Triton needed: for a GPU machine without it).

    .venv-server/bin/python -m devtools.bench_batching                       # tiny model
    .venv-server/bin/python -m devtools.bench_batching --model realsize --dtype bfloat16
    python -m devtools.bench_batching --engine --model realsize --device cuda --streams 1,8,32,64

Prints a table and writes ``bench/results/batching-<model>-<dtype>-<how>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from devtools.bench import stats
from devtools.bench.progress import Progress
from devtools.bench.report_tools import RESULTS, Report

NAME = "batching"
PROMPT = "Describe, in detail, what a careful assistant would say about the weather today and tomorrow."
STREAMS = (1, 4, 8, 16)

StreamFn = Callable[[int], tuple[float, int]]  # request i -> (seconds to first token, tokens)


def models(quick: bool) -> list[str]:
    return [model for on, off, _ in _pairs(quick).values() for model in (on, off)]


def checkpoints(quick: bool) -> dict:
    if quick:
        return {}
    from devtools.bench.stack import realsize_checkpoint

    return dict.fromkeys(PAIRS["realsize"][:2], realsize_checkpoint("float32"))


def measure(stream: StreamFn, streams: int) -> dict:
    """Run ``streams`` requests at once; aggregate tokens/s and each one's time to first token."""
    results: list = [None] * streams
    start = threading.Barrier(streams + 1)

    def worker(i: int) -> None:
        start.wait()
        results[i] = stream(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    tokens = sum(n for _, n in results)
    return {"tokens": tokens, "seconds": elapsed, "ttft": [t for t, _ in results]}


def summarise(runs: list[dict]) -> dict:
    rates = [r["tokens"] / r["seconds"] for r in runs]
    ttfts = [1000 * t for r in runs for t in r["ttft"]]
    return {
        "tokens_per_s": stats.summary(rates),
        "ttft_p50_ms": stats.percentile(ttfts, 50),
        "ttft_p95_ms": stats.percentile(ttfts, 95),
    }


def compare(on: StreamFn, off: StreamFn, counts: list[int], rounds: int, progress: Progress) -> dict[str, dict]:
    """Batching on vs off at each stream count, alternating; each row reported as soon as it is known."""
    measure(on, 2), measure(off, 2)  # warm-up
    table: dict[str, dict] = {}
    for count in counts:
        sides = {"on": lambda count=count: measure(on, count), "off": lambda count=count: measure(off, count)}
        runs = stats.alternate(sides, rounds, warmup=0, on_round=progress.rounds(f"{count} streams", rounds))
        row = table[str(count)] = {side: summarise(r) for side, r in runs.items()}
        progress.step(  # a run cut short still says what it measured
            f"{count} streams: on {row['on']['tokens_per_s']['median']:.0f} tok/s "
            f"(TTFT p50 {row['on']['ttft_p50_ms']:.0f} ms, p95 {row['on']['ttft_p95_ms']:.0f} ms), "
            f"off {row['off']['tokens_per_s']['median']:.0f} tok/s "
            f"(TTFT p50 {row['off']['ttft_p50_ms']:.0f} ms, p95 {row['off']['ttft_p95_ms']:.0f} ms)"
        )
    return table


# --- the two ways to send requests ------------------------------------------------------


def engine_streams(model_dir: Path, device: str, tokens: int) -> tuple[StreamFn, StreamFn, Callable[[], None]]:
    """(batched, alone) request functions on one loaded model, in this process."""
    import torch
    from transformers import AutoProcessor

    try:
        from transformers import AutoModelForMultimodalLM as AutoModel
    except ImportError:  # transformers before 5.20
        from transformers import AutoModelForImageTextToText as AutoModel

    from tritonmm_server.engines.chat.batching import BatchLimits, BatchScheduler
    from tritonmm_server.engines.chat.generator import Generator
    from tritonmm_server.engines.chat.params import GenerationParams
    from tritonmm_server.engines.chat.token_stream import Generation

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype="auto").to(device).eval()
    generator = Generator.for_checkpoint(model, processor.tokenizer, 2048)
    limits = BatchLimits.defaults(torch.device(device))
    scheduler = BatchScheduler(model, processor.tokenizer, generator.eos_token_ids, 2048, limits, name="bench")

    class Prepared:  # what engine.prepare gives: the processor's inputs and their length
        hidden_ids = None  # no tools offered: the tokenizer's own special tokens stay hidden

        def __init__(self, i: int) -> None:
            conversation = [{"role": "user", "content": [{"type": "text", "text": f"{PROMPT} ({i})"}]}]
            self.inputs = processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            ).to(device)
            self.prompt_tokens = int(self.inputs["input_ids"].shape[-1])

    def params(i: int) -> GenerationParams:
        return GenerationParams(max_tokens=tokens, temperature=0.7, seed=i)

    def timed(make: Callable[[int], object]) -> StreamFn:
        def run(i: int) -> tuple[float, int]:
            began = time.perf_counter()
            first, count = 0.0, 0
            for _ in make(i):
                if count == 0:
                    first = time.perf_counter() - began
                count += 1
            return first, count

        return run

    def alone_generation(i: int) -> Generation:
        prepared = Prepared(i)
        return Generation(generator, prepared.inputs, prepared.prompt_tokens, params(i), lambda: False)

    batched = timed(lambda i: scheduler.submit(Prepared(i), params(i), lambda: False))
    return batched, timed(alone_generation), scheduler.stop


def triton_stream(client, model: str, tokens: int) -> StreamFn:
    """Request ``i``: one raw gRPC chat stream to ``model``, a text prompt, seed ``i``."""
    from tritonmm import chat, contract
    from tritonmm.messages import Message, TextPart

    caps = client.capabilities(model, contract.Task.CHAT)

    def run(i: int) -> tuple[float, int]:
        messages = [Message("user", (TextPart(f"{PROMPT} ({i})"),))]
        began = time.perf_counter()
        first, count = 0.0, 0
        for chunk in chat.open_chat(client, model, messages, chat.ChatParams(max_tokens=tokens, seed=i), caps):
            if chunk.finish_reason is None:
                if count == 0:
                    first = time.perf_counter() - began
                count += 1
        return first, count

    return run


# --- as a group of the benchmark ------------------------------------------------------------


# label: (batching on, batching off, what it is); the real-size pair only in the full run
PAIRS = {
    "tiny": ("chat", "chat_off", "tiny Idefics3"),
    "realsize": ("chat_realsize", "chat_realsize_off", "SmolVLM-256M shape, fp32"),
}


def _pairs(quick: bool) -> dict[str, tuple[str, str, str]]:
    return {label: pair for label, pair in PAIRS.items() if label == "tiny" or not quick}


def run(stack, quick: bool) -> dict:
    result: dict = {"models": {}}
    for label, (on_model, off_model, _) in _pairs(quick).items():
        tokens, rounds = (32, 3) if quick else (64, 5 if label == "tiny" else 2)
        stack.progress.step(f"batching on ({on_model}) vs off ({off_model}), {tokens} tokens per stream")
        on, off = triton_stream(stack.client, on_model, tokens), triton_stream(stack.client, off_model, tokens)
        table = compare(on, off, list(STREAMS), rounds, stack.progress)
        result["models"][label] = {"on": on_model, "off": off_model, "tokens": tokens, "rounds": rounds, "table": table}
    return result


def render(result: dict, report: Report) -> None:
    report.paragraph(
        "The bundled chat with iteration-level batching on vs its copy with it off (`tmm.batching: off`), "
        "through Triton (raw gRPC streams, a text prompt, one seed per stream), the two sides alternating. "
        "Tokens/s: median (min–max) of the rounds' aggregate rates; time to first token over every stream of "
        "the rounds."
    )
    series = {}
    for label, measured in result["models"].items():
        table, name = measured["table"], PAIRS[label][2]
        report.paragraph(f"**{name}**, {measured['tokens']} tokens per stream, {measured['rounds']} round(s):")
        rows = [
            [count, stats.fmt(row["on"]["tokens_per_s"], 0), stats.fmt(row["off"]["tokens_per_s"], 0),
             f"{row['on']['tokens_per_s']['median'] / row['off']['tokens_per_s']['median']:.2f}",
             f"{row['on']['ttft_p50_ms']:.0f} / {row['on']['ttft_p95_ms']:.0f}",
             f"{row['off']['ttft_p50_ms']:.0f} / {row['off']['ttft_p95_ms']:.0f}"]
            for count, row in table.items()
        ]  # fmt: skip
        report.table(["streams", "on tok/s", "off tok/s", "on / off", "on TTFT p50 / p95 ms",
                      "off TTFT p50 / p95 ms"], rows)  # fmt: skip
        counts = [int(c) for c in table]
        for side in ("on", "off"):
            series[f"{name}, batching {side}"] = (
                counts,
                [table[str(c)][side]["tokens_per_s"]["median"] for c in counts],
            )
    report.line_plot("batching-tokens-per-s", "Chat tokens/s against concurrent streams (CPU)", "streams",
                     "tokens/s", series, log=True)  # fmt: skip


# --- the standalone command (the GPU machine's way) -------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from devtools.bench.stack import Stack, realsize_checkpoint, tiny_checkpoint

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "realsize"), default="tiny")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--engine", action="store_true", help="in this process, without Triton")
    parser.add_argument("--device", default="cpu", help="with --engine: cpu or cuda")
    parser.add_argument("--streams", default=",".join(map(str, STREAMS)))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.streams.split(",")]
    realsize = args.model == "realsize"
    model_dir = realsize_checkpoint(args.dtype) if realsize else tiny_checkpoint()
    how = f"engine-{args.device}" if args.engine else "triton"
    progress = Progress()
    stack = None
    if args.engine:
        on, off, stop = engine_streams(model_dir, args.device, args.tokens)
    else:
        chosen = {"chat": model_dir, "chat_off": model_dir} if realsize else {}
        stack = Stack(progress, ["chat", "chat_off"], chosen)
        on, off = triton_stream(stack.client, "chat", args.tokens), triton_stream(stack.client, "chat_off", args.tokens)
        stop = stack.close
    began = time.perf_counter()
    try:
        table = compare(on, off, counts, args.rounds, progress)
    finally:
        stop()
    print(f"\nchat, {args.model} {args.dtype}, {how}, {args.tokens} tokens per request "
          f"({time.perf_counter() - began:.0f} s)")  # fmt: skip
    for count, row in table.items():
        a, b = row["on"], row["off"]
        print(f"{count:>4} streams: on {a['tokens_per_s']['median']:.0f} tok/s (TTFT p50/p95 {a['ttft_p50_ms']:.0f}/"
              f"{a['ttft_p95_ms']:.0f} ms), off {b['tokens_per_s']['median']:.0f} tok/s ({b['ttft_p50_ms']:.0f}/"
              f"{b['ttft_p95_ms']:.0f} ms)")  # fmt: skip
    out = args.out or RESULTS / f"batching-{args.model}-{args.dtype}-{how}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "dtype": args.dtype, "how": how, "tokens": args.tokens, "rounds": args.rounds}
    out.write_text(json.dumps({**meta, "table": table}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
