"""Chat latency, side by side: the raw Triton gRPC stream vs the same request
through the Dify plugin (built package, daemon-role harness), on one server.

    python -m devtools.bench_chat [--runs 5] [--max-tokens 64] [--checkpoint chat=DIR] [--out FILE]

Prints a table and writes JSON. Numbers, not assertions: tests never time things.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from devtools import plugin_harness
from devtools.build_packages import build_plugin
from devtools.demo import demo_picture
from tritonmm import chat
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient
from tritonmm_server.ops.planning import LaunchOptions
from tritonmm_server.ops.serve import launch

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "bench"
QUESTION = "Describe this picture."


def _raw_once(client: TritonClient, image_b64: str, max_tokens: int) -> dict:
    caps = client.capabilities("chat")
    message = Message("user", (TextPart(QUESTION), MediaPart(Modality.IMAGE, base64_data=image_b64)))
    params = chat.ChatParams(max_tokens=max_tokens, temperature=0.8, seed=1)
    started = time.perf_counter()
    first, last = None, None
    for chunk in chat.open_chat(client, "chat", [message], params, caps):
        first = first or time.perf_counter()
        last = chunk
    return _sample(started, first, last.completion_tokens if last else 0)


def _plugin_once(plugin: plugin_harness.PluginProcess, credentials: dict, image_b64: str, max_tokens: int) -> dict:
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": "chat", "credentials": credentials,
        "prompt_messages": [{"role": "user", "content": [
            {"type": "text", "data": QUESTION},
            {"type": "image", "format": "png", "mime_type": "image/png", "base64_data": image_b64},
        ]}],
        "model_parameters": {"max_tokens": max_tokens, "temperature": 0.8, "seed": 1},
        "tools": [], "stop": [], "stream": True,
    }  # fmt: skip
    started = time.perf_counter()
    first, tokens = None, 0
    for message in plugin.stream("model", "invoke_llm", data):
        first = first or message.at
        tokens = (message.data["delta"].get("usage") or {}).get("completion_tokens", tokens)
    return _sample(started, first, tokens)


def _sample(started: float, first: float | None, tokens: int) -> dict:
    total = time.perf_counter() - started
    ttft = (first or started) - started
    decode = max(total - ttft, 1e-9)
    return {
        "ttft_ms": 1000 * ttft,
        "total_ms": 1000 * total,
        "tokens": tokens,
        "tokens_per_s": max(tokens - 1, 0) / decode,
    }


def _concurrent(fn, n: int) -> float:
    threads = [threading.Thread(target=fn) for _ in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 1000 * (time.perf_counter() - started)


def _summary(samples: list[dict]) -> dict:
    keys = ("ttft_ms", "total_ms", "tokens_per_s")
    return {k: round(statistics.median(s[k] for s in samples), 2) for k in keys} | {"tokens": samples[-1]["tokens"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=DIR")
    parser.add_argument("--out", type=Path, default=WORK / "chat.json")
    args = parser.parse_args(argv)
    checkpoints = {k: Path(v) for k, v in (item.split("=", 1) for item in args.checkpoint)}
    server = launch(LaunchOptions(work_dir=WORK, checkpoints=checkpoints), out=sys.stderr)
    credentials = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
    client = TritonClient(ServerSettings.from_credentials(credentials))
    try:
        image_b64 = base64.b64encode(demo_picture()).decode()
        package = build_plugin(ROOT / "plugins" / "model_provider", WORK / "dist").path
        plugin_dir = plugin_harness.install(package, WORK / "plugin", uv_cache=ROOT / ".cache" / "uv")
        with plugin_harness.PluginProcess(plugin_dir) as plugin:
            paths = {
                "raw_grpc": lambda: _raw_once(client, image_b64, args.max_tokens),
                "plugin": lambda: _plugin_once(plugin, credentials, image_b64, args.max_tokens),
            }
            results: dict = {"max_tokens": args.max_tokens, "runs": args.runs, "weights": checkpoints or "tiny"}
            for name, once in paths.items():
                once()  # warm-up
                results[name] = _summary([once() for _ in range(args.runs)])
                results[name]["concurrent_wall_ms"] = round(_concurrent(once, args.concurrency), 1)
                results[name]["concurrency"] = args.concurrency
    finally:
        client.close()  # before the server stops: Triton waits for open connections
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(
        f"{'path':10} {'TTFT ms':>8} {'total ms':>9} {'tok/s':>7} {'tokens':>6} {f'{args.concurrency} streams wall ms':>20}"
    )
    for name in ("raw_grpc", "plugin"):
        r = results[name]
        print(
            f"{name:10} {r['ttft_ms']:8.1f} {r['total_ms']:9.1f} {r['tokens_per_s']:7.0f} {r['tokens']:6d} {r['concurrent_wall_ms']:20.1f}"
        )
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
