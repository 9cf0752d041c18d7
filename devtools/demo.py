"""The main job, end to end: serve the bundled models on an embedded Triton, build
the plugin package(s), install the model provider the way the Dify daemon does,
and stream an answer about a picture *through the plugin*.

    python -m devtools.demo [--checkpoint chat=/path/to/SmolVLM-256M-Instruct] [--keep-serving]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from devtools import plugin_harness
from devtools.build_packages import build_plugin, discover_plugins
from tritonmm_server.launch import LaunchOptions, launch, serve_foreground
from tritonmm_server.runtime import PortInUse, check_port_free

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "demo"
QUESTION = "What shapes and colours are in this picture?"


def demo_picture() -> bytes:
    image = Image.new("RGB", (640, 480), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 80, 300, 320), fill=(220, 40, 40))
    draw.rectangle((360, 140, 580, 360), fill=(40, 70, 220))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _port(preferred: int) -> int | None:
    """The conventional port when free (what Dify users expect), else any free one."""
    try:
        check_port_free("127.0.0.1", preferred, "demo")
        return preferred
    except PortInUse:
        return None


def stream_answer(plugin: plugin_harness.PluginProcess, credentials: dict, image: bytes) -> dict:
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": "chat", "credentials": credentials,
        "prompt_messages": [{"role": "user", "content": [
            {"type": "text", "data": QUESTION},
            {"type": "image", "format": "png", "mime_type": "image/png", "base64_data": base64.b64encode(image).decode()},
        ]}],
        "model_parameters": {"max_tokens": 48, "temperature": 0.7, "seed": 42}, "tools": [], "stop": [], "stream": True,
    }  # fmt: skip
    print(f"\nuser: [640x480 PNG] {QUESTION}\nassistant (streamed through the plugin): ", end="", flush=True)
    started = time.perf_counter()
    first = None
    delta: dict = {}
    for message in plugin.stream("model", "invoke_llm", data):
        delta = message.data["delta"]
        first = first or message.at
        print(delta["message"]["content"], end="", flush=True)
    usage = delta.get("usage") or {}
    total = time.perf_counter() - started
    print(
        f"\n\nfinish_reason={delta.get('finish_reason')}  prompt_tokens={usage.get('prompt_tokens')} "
        f"(image tokens included)  completion_tokens={usage.get('completion_tokens')}  "
        f"time to first token {1000 * ((first or started) - started):.0f} ms, total {total:.2f} s"
    )
    return usage


SENTENCES = ["A man is eating a piece of bread.", "A man is riding a horse.", "A monkey is playing drums."]


def rank_sentences(plugin: plugin_harness.PluginProcess, credentials: dict) -> None:
    query = "A man is eating food."
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": "text_embedding",
            "credentials": credentials, "texts": [query, *SENTENCES], "input_type": "document"}  # fmt: skip
    [answer] = plugin.call("model", "invoke_text_embedding", data)
    first, *rest = answer["embeddings"]
    scores = [sum(a * b for a, b in zip(first, v, strict=True)) for v in rest]  # unit vectors: dot = cosine
    print(f"   query: {query}")
    for score, sentence in sorted(zip(scores, SENTENCES, strict=True), reverse=True):
        print(f"   {score:.3f}  {sentence}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=DIR")
    parser.add_argument("--keep-serving", action="store_true", help="leave Triton running for Dify after the demo")
    args = parser.parse_args(argv)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    options = LaunchOptions(
        work_dir=WORK,
        checkpoints={name: Path(path) for name, path in checkpoints.items()},
        http_port=_port(8000),
        grpc_port=_port(8001),
        metrics_port=_port(8002),
    )
    print("== 1/4 serving the bundled model repository on an embedded Triton", flush=True)
    server = launch(options)
    try:
        print("\n== 2/4 building the plugin packages", flush=True)
        packages = [build_plugin(p, ROOT / "dist") for p in discover_plugins(ROOT / "plugins")]
        for built in packages:
            print(f"   {built.path.relative_to(ROOT)}  {built.size} bytes  sha256={built.sha256[:16]}…")
        print("\n== 3/4 installing the model provider as the Dify daemon does (uv, Python 3.12)", flush=True)
        plugin_dir = plugin_harness.install(packages[0].path, WORK / "plugin", uv_cache=ROOT / ".cache" / "uv")
        credentials = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
        with plugin_harness.PluginProcess(plugin_dir) as plugin:
            plugin.call("model", "validate_provider_credentials", {"provider": "triton_multimodal", "credentials": credentials})
            print("   provider credentials valid (server reachable, ready, model present, loaded, probe answered)")
            print("\n== 4/4 asking about a picture", flush=True)
            stream_answer(plugin, credentials, demo_picture())
            print("\n== and ranking sentences with the text-embedding model (real all-MiniLM-L6-v2 weights)")
            rank_sentences(plugin, credentials)
        _point_dify_at()
        if args.keep_serving:
            return serve_foreground(server)
    finally:
        if not args.keep_serving:
            server.stop()
    return 0


def _point_dify_at() -> None:
    print(
        """
== Use it from Dify
 1. Serve for real:  .venv-server/bin/python -m tritonmm_server.launch --foreground \\
        --checkpoint chat=/models/SmolVLM-256M-Instruct     (omit --checkpoint: tiny test weights)
 2. Self-hosted Dify installs unsigned packages when the plugin_daemon has
    FORCE_VERIFYING_SIGNATURE=false (then recreate that container).
 3. Plugins -> Install from local package: dist/triton_multimodal-0.1.0.difypkg
 4. Settings -> Model Providers -> Triton Multimodal: server URL = Triton's HTTP endpoint as the
    plugin daemon reaches it (gRPC endpoint: same host, port 8001, unless you set it).""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
