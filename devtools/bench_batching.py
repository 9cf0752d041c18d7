"""Chat throughput with iteration-level batching on vs off, side by side in one run.

For each number of concurrent streams (1, 4, 8, 16 by default), each round runs the
same requests twice, batching on then off (alternating which goes first), and
records the aggregate tokens per second and each stream's time to first token.
Both sides get the same prompts, seeds and lengths, so they generate the same
tokens: only the scheduling differs.

Two ways to run it:

* through Triton (default): tritonserver on 127.0.0.1 serves the checkpoint twice,
  ``chat_on`` (``tmm.batching: on``) and ``chat_off`` (``off``), and the streams are
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
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "bench"
RESULTS = ROOT / "bench" / "results"
PROMPT = "Describe, in detail, what a careful assistant would say about the weather today and tomorrow."

StreamFn = Callable[[int], tuple[float, int]]  # request i -> (seconds to first token, tokens)


def checkpoint(model: str, dtype: str) -> Path:
    if model == "realsize":
        from devtools.realsize_chat import build_smolvlm_256m_shape

        return build_smolvlm_256m_shape(WORK / f"realsize-{dtype}", getattr(torch, dtype))
    from tritonmm_server.tiny.cache import ensure_tiny_model

    return ensure_tiny_model(WORK, "idefics3")


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
    ttfts = sorted(t for r in runs for t in r["ttft"])
    return {
        "tokens_per_s": statistics.median(rates),
        "tokens_per_s_spread": [min(rates), max(rates)],
        "ttft_p50_ms": 1000 * ttfts[len(ttfts) // 2],
        "ttft_p95_ms": 1000 * ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
    }


# --- the two ways to send requests ------------------------------------------------------


def engine_streams(model_dir: Path, device: str, tokens: int) -> tuple[StreamFn, StreamFn, Callable[[], None]]:
    """(batched, alone) request functions on one loaded model, in this process."""
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

    batched = timed(lambda i: scheduler.submit(Prepared(i), params(i), lambda: False))
    def alone_generation(i: int) -> Generation:
        prepared = Prepared(i)
        return Generation(generator, prepared.inputs, prepared.prompt_tokens, params(i), lambda: False)

    alone = timed(alone_generation)
    return batched, alone, scheduler.stop


def triton_streams(model_dir: Path, tokens: int) -> tuple[StreamFn, StreamFn, Callable[[], None]]:
    """(batched, alone) request functions: raw gRPC streams to chat_on / chat_off on a local tritonserver."""
    import shutil

    from tritonmm import chat, contract
    from tritonmm.chat import ChatParams
    from tritonmm.messages import Message, TextPart
    from tritonmm.settings import ServerSettings
    from tritonmm.transport.client import TritonClient
    from tritonmm_server.ops.repository import render_repository, set_parameters
    from tritonmm_server.ops.server import TritonServer

    repo = WORK / "batching-repository"
    shutil.rmtree(repo, ignore_errors=True)
    base = {contract.KEY_MODEL_PATH: str(model_dir), contract.KEY_ASR_MODEL: ""}
    render_repository(ROOT / "model_repository", repo, overrides={"chat": base}, include=["chat"])
    for name, switch in (("chat_on", "on"), ("chat_off", "off")):
        shutil.copytree(repo / "chat", repo / name)
        config = repo / name / "config.pbtxt"
        text = config.read_text().replace('name: "chat"', f'name: "{name}"', 1)
        config.write_text(set_parameters(text, {contract.KEY_BATCHING: switch}))
    shutil.rmtree(repo / "chat")
    server = TritonServer(repo, models=["chat_on", "chat_off"], log_path=WORK / "batching-triton.log")
    server.start(timeout=900)
    client = TritonClient(ServerSettings.from_credentials({"server_url": server.http_url}))

    def stream(model: str) -> StreamFn:
        caps = client.capabilities(model, contract.Task.CHAT)

        def run(i: int) -> tuple[float, int]:
            messages = [Message("user", (TextPart(f"{PROMPT} ({i})"),))]
            began = time.perf_counter()
            first, count = 0.0, 0
            for chunk in chat.open_chat(client, model, messages, ChatParams(max_tokens=tokens, seed=i), caps):
                if chunk.finish_reason is None:
                    if count == 0:
                        first = time.perf_counter() - began
                    count += 1
            return first, count

        return run

    def stop() -> None:
        client.close()
        server.stop()

    return stream("chat_on"), stream("chat_off"), stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "realsize"), default="tiny")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--engine", action="store_true", help="in this process, without Triton")
    parser.add_argument("--device", default="cpu", help="with --engine: cpu or cuda")
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",")]
    model_dir = checkpoint(args.model, args.dtype)
    how = f"engine-{args.device}" if args.engine else "triton"
    if args.engine:
        on, off, stop = engine_streams(model_dir, args.device, args.tokens)
    else:
        on, off, stop = triton_streams(model_dir, args.tokens)
    began = time.perf_counter()
    table: dict[str, dict] = {}
    try:
        measure(on, 2), measure(off, 2)  # warm-up
        for count in counts:
            runs: dict[str, list] = {"on": [], "off": []}
            for round_ in range(args.rounds):
                order = (("on", on), ("off", off)) if round_ % 2 == 0 else (("off", off), ("on", on))
                for side, fn in order:
                    runs[side].append(measure(fn, count))
                print(f"  {count:>3} streams, round {round_ + 1}/{args.rounds} done", flush=True)
            table[str(count)] = {side: summarise(r) for side, r in runs.items()}
            row = table[str(count)]
            print(  # as soon as it is known: a run cut short still says what it measured
                f"  {count} streams: on {row['on']['tokens_per_s']:.0f} tok/s "
                f"(TTFT p50 {row['on']['ttft_p50_ms']:.0f} ms, p95 {row['on']['ttft_p95_ms']:.0f} ms), "
                f"off {row['off']['tokens_per_s']:.0f} tok/s "
                f"(TTFT p50 {row['off']['ttft_p50_ms']:.0f} ms, p95 {row['off']['ttft_p95_ms']:.0f} ms)",
                flush=True,
            )
    finally:
        stop()
    single = table[str(counts[0])]["on"]["tokens_per_s"]
    print(
        f"\nchat, {args.model} {args.dtype}, {how}, {args.tokens} tokens per request ({time.perf_counter() - began:.0f} s)"
    )
    print(f"{'streams':>7} | {'on tok/s':>9} | {'off tok/s':>9} | {'on/off':>6} | {'on ×1':>6} | "
          f"{'on TTFT p50/p95 ms':>19} | {'off TTFT p50/p95 ms':>20}")  # fmt: skip
    for count, row in table.items():
        a, b = row["on"], row["off"]
        print(
            f"{count:>7} | {a['tokens_per_s']:>9.0f} | {b['tokens_per_s']:>9.0f} | "
            f"{a['tokens_per_s'] / b['tokens_per_s']:>6.2f} | {a['tokens_per_s'] / single:>6.2f} | "
            f"{a['ttft_p50_ms']:>8.0f} / {a['ttft_p95_ms']:<8.0f} | {b['ttft_p50_ms']:>8.0f} / {b['ttft_p95_ms']:<9.0f}"
        )
    out = args.out or RESULTS / f"batching-{args.model}-{args.dtype}-{how}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "dtype": args.dtype, "how": how, "tokens": args.tokens, "rounds": args.rounds}
    out.write_text(json.dumps({**meta, "table": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
