"""Speech, embedding and image latency, side by side: the core client straight to
Triton vs the same request through the Dify plugin (built package, daemon-role
harness), on one server with the offline default models.

    python -m devtools.bench_media [--runs 5] [--out FILE]

Cases: transcribe a 5 s and a ~50 s clip (real Whisper tiny.en), speak three
sentences (real Piper voice: first chunk and total), embed 64 and 1,000 texts
(real MiniLM), embed 8 images + 8 texts (tiny CLIP). The speech clips are made
by the text-to-speech model itself (WAV). Prints a table and writes JSON.
Numbers, not assertions: tests never time things.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devtools import plugin_harness
from devtools.build_packages import build_plugin
from devtools.demo import demo_picture
from tritonmm import contract, embedding, speech, speech_synthesis
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient
from tritonmm_server.ops.planning import LaunchOptions
from tritonmm_server.ops.serve import launch

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "bench"
MODELS = ["speech_to_text", "text_to_speech", "text_embedding", "multimodal_embedding"]
THREE = "The quick brown fox jumps over the lazy dog. Offline speech works on this machine. Goodbye for now."
# Different sentences: repeated ones make Whisper fall back to sampling (compression-ratio check).
LONG_SENTENCES = [
    "Welcome to the weekly planning meeting.", "First we review the numbers from last month.",
    "Sales grew in every region except the north.", "The new warehouse opens in the spring.",
    "Please send your travel plans before Friday.", "The design team will present three options.",
    "We still need a volunteer for the booth at the fair.", "Lunch will be served in the small kitchen.",
    "The printer on the second floor is broken again.", "Our customers asked for a darker colour.",
    "Marketing wants the video finished by the end of the month.", "The budget for training doubled this year.",
    "Two new engineers join the team on Monday.", "Remember to lock the door when you leave.",
    "Thank you all and see you next week.",
]  # fmt: skip


def _wav(client: TritonClient, text: str) -> bytes:
    caps = client.capabilities("text_to_speech")
    return b"".join(speech_synthesis.synthesize(client, "text_to_speech", caps, text, audio_format=contract.AUDIO_WAV))


def _timed(fn: Callable[[], float | None]) -> dict:
    """``fn`` returns the time of its first result (or None); we add the total."""
    started = time.perf_counter()
    first = fn()
    total = time.perf_counter() - started
    return {"first_ms": 1000 * ((first or started + total) - started), "total_ms": 1000 * total}


_RUN = itertools.count()


def _fresh(texts: list[str]) -> list[str]:
    """The texts made unique to this call, so Triton's response cache does not answer them."""
    run = next(_RUN)
    return [f"{text} (run {run})" for text in texts]


def _median(samples: list[dict]) -> dict:
    return {key: round(statistics.median(s[key] for s in samples), 1) for key in samples[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=WORK / "media.json")
    args = parser.parse_args(argv)
    server = launch(LaunchOptions(work_dir=WORK, models=MODELS), out=sys.stderr)
    credentials = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
    client = TritonClient(ServerSettings.from_credentials(credentials))
    try:
        caps = {name: client.capabilities(name) for name in MODELS}
        short = _wav(client, "The quick brown fox jumps over the lazy dog. Offline speech synthesis works.")
        long = _wav(client, " ".join(LONG_SENTENCES))
        texts64 = [f"sentence {i} about {['cats', 'rain', 'trains', 'soup'][i % 4]}" for i in range(64)]
        texts1000 = [f"document {i} on topic {i % 37}" for i in range(1000)]
        image = base64.b64encode(demo_picture()).decode()

        def mixed() -> list[dict]:  # 8 images and 8 fresh texts: the texts keep the cache out of it
            return [{"content": image, "content_type": "image"}] * 8 + [
                {"content": text, "content_type": "text"} for text in _fresh(texts64[:8])
            ]

        package = build_plugin(ROOT / "plugins" / "model_provider", WORK / "dist").path
        plugin_dir = plugin_harness.install(package, WORK / "plugin", uv_cache=ROOT / ".cache" / "uv")
        with plugin_harness.PluginProcess(plugin_dir) as plugin:
            base = {"provider": "triton_multimodal", "credentials": credentials}

            def plugin_call(action: str, data: dict) -> Callable[[], float | None]:
                def run() -> float | None:
                    first = None
                    values = {key: value() if callable(value) else value for key, value in data.items()}
                    for message in plugin.stream("model", action, {**base, **values}):
                        first = first or message.at
                    return first

                return run

            def core(fn: Callable[[], object]) -> Callable[[], float | None]:
                def run() -> float | None:
                    result = fn()
                    if hasattr(result, "__next__"):  # a stream: note the first piece
                        first = None
                        for _ in result:
                            first = first or time.perf_counter()
                        return first
                    return None

                return run

            def items() -> list[embedding.Content]:
                return [embedding.content_item(d["content_type"], d["content"], "item", client) for d in mixed()]

            cases = {
                "transcribe short clip": (
                    core(lambda: speech.transcribe(client, "speech_to_text", caps["speech_to_text"], short)),
                    plugin_call("invoke_speech2text", {"model_type": "speech2text", "model": "speech_to_text", "file": short.hex()}),
                ),
                "transcribe long clip": (
                    core(lambda: speech.transcribe(client, "speech_to_text", caps["speech_to_text"], long)),
                    plugin_call("invoke_speech2text", {"model_type": "speech2text", "model": "speech_to_text", "file": long.hex()}),
                ),
                "speak 3 sentences": (
                    core(lambda: speech_synthesis.synthesize(client, "text_to_speech", caps["text_to_speech"], THREE)),
                    plugin_call("invoke_tts", {"model_type": "tts", "model": "text_to_speech", "content_text": THREE,
                                               "voice": "", "tenant_id": "bench"}),
                ),
                "embed 64 texts": (
                    core(lambda: embedding.embed_texts(client, "text_embedding", caps["text_embedding"], _fresh(texts64), "document")),
                    plugin_call("invoke_text_embedding", {"model_type": "text-embedding", "model": "text_embedding",
                                                          "texts": lambda: _fresh(texts64), "input_type": "document"}),
                ),
                "embed 1000 texts": (
                    core(lambda: embedding.embed_texts(client, "text_embedding", caps["text_embedding"], _fresh(texts1000), "document")),
                    plugin_call("invoke_text_embedding", {"model_type": "text-embedding", "model": "text_embedding",
                                                          "texts": lambda: _fresh(texts1000), "input_type": "document"}),
                ),
                "embed 8 images + 8 texts": (
                    core(lambda: embedding.embed_contents(client, "multimodal_embedding", caps["multimodal_embedding"], items())),
                    plugin_call("invoke_multimodal_embedding", {"model_type": "text-embedding", "model": "multimodal_embedding",
                                                                "documents": mixed, "input_type": "document"}),
                ),
            }  # fmt: skip
            results: dict = {
                "runs": args.runs,
                "audio_seconds": {"short": len(short) / 44100, "long": len(long) / 44100},
            }
            for name, (raw, through_plugin) in cases.items():
                results[name] = {}
                for path, fn in (("core", raw), ("plugin", through_plugin)):
                    fn()  # warm-up
                    results[name][path] = _median([_timed(fn) for _ in range(args.runs)])
    finally:
        client.close()  # before the server stops: Triton waits for open connections
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(
        f"{'case':26} {'core first':>11} {'core total':>11} {'plugin first':>13} {'plugin total':>13}  (ms, median of {args.runs})"
    )
    for name in cases:
        core_r, plugin_r = results[name]["core"], results[name]["plugin"]
        print(
            f"{name:26} {core_r['first_ms']:11.1f} {core_r['total_ms']:11.1f} {plugin_r['first_ms']:13.1f} {plugin_r['total_ms']:13.1f}"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
