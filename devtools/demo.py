"""The main job, end to end: serve the bundled models on an embedded Triton, build
both plugin packages, install them the way the Dify daemon does, and use them:
stream an answer about a picture, rank sentences, speak a sentence and transcribe
it back (model provider); read the text of a picture and check the server (tools).

    python -m devtools.demo [--checkpoint chat=/path/to/SmolVLM-256M-Instruct] [--keep-serving]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from devtools import plugin_harness
from devtools.build_packages import build_plugin, discover_plugins
from devtools.files_server import FilesServer
from tritonmm_server.ops.errors import PortInUse
from tritonmm_server.ops.network import check_port_free
from tritonmm_server.ops.planning import LaunchOptions
from tritonmm_server.ops.serve import launch, serve_foreground

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


SPOKEN = "Triton serves speech, images and video to Dify."
RECEIPT = ["TOTAL 42.50 EUR", "Thank you for shopping"]


def speech_round_trip(plugin: plugin_harness.PluginProcess, credentials: dict) -> None:
    base = {"provider": "triton_multimodal", "credentials": credentials}
    started = time.perf_counter()
    chunks = plugin.call("model", "invoke_tts", {**base, "model_type": "tts", "model": "text_to_speech",
                                                   "content_text": SPOKEN, "voice": "", "tenant_id": "demo"})  # fmt: skip
    audio = b"".join(bytes.fromhex(c["result"]) for c in chunks)
    spoken = time.perf_counter() - started
    [answer] = plugin.call("model", "invoke_speech2text", {**base, "model_type": "speech2text",
                                                            "model": "speech_to_text", "file": audio.hex()})  # fmt: skip
    print(f"   said:  {SPOKEN}\n   spoken as {len(chunks)} MP3 chunk(s), {len(audio)} bytes, in {spoken:.2f} s (Piper)")
    print(f"   heard: {answer['result']}   (Whisper tiny.en, {time.perf_counter() - started - spoken:.2f} s)")


def receipt_picture() -> bytes:
    image = Image.new("RGB", (720, 200), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(RECEIPT):
        draw.text((30, 30 + 80 * row), line, fill="black", font=ImageFont.load_default(size=44))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def use_tools(package: Path, credentials: dict) -> None:
    files = FilesServer()  # plays Dify's files endpoint, the only local URL the tools may fetch
    try:
        plugin_dir = plugin_harness.install(package, WORK / "tools", uv_cache=ROOT / ".cache" / "uv")
        with plugin_harness.PluginProcess(plugin_dir, env={"INTERNAL_FILES_URL": files.base_url}) as tools:
            tools.call(
                "tool", "validate_tool_credentials", {"provider": "triton_multimodal_tools", "credentials": credentials}
            )
            image = files.add("receipt.png", receipt_picture(), "image/png")
            run = tool_messages(tools, credentials, "ocr", {"images": [image]})
            text = "".join(m["message"]["text"] for m in run if m["type"] == "text")
            print(f"   ocr read: {text.replace(chr(10), ' | ')}")
            run = tool_messages(tools, credentials, "triton_admin", {"action": "health"})
            print(f"   triton_admin: {next(m['message']['text'] for m in run if m['type'] == 'text')}")
    finally:
        files.close()


def tool_messages(plugin: plugin_harness.PluginProcess, credentials: dict, tool: str, parameters: dict) -> list[dict]:
    data = {"provider": "triton_multimodal_tools", "tool": tool, "credentials": credentials,
            "credential_type": "api-key", "tool_parameters": parameters}  # fmt: skip
    return plugin.call("tool", "invoke_tool", data)


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
    print("== 1/5 serving the bundled model repository on an embedded Triton", flush=True)
    server = launch(options)
    try:
        print("\n== 2/5 building the plugin packages", flush=True)
        packages = [build_plugin(p, ROOT / "dist") for p in discover_plugins(ROOT / "plugins")]
        for built in packages:
            print(f"   {built.path.relative_to(ROOT)}  {built.size} bytes  sha256={built.sha256[:16]}…")
        print("\n== 3/5 installing the model provider as the Dify daemon does (uv, Python 3.12)", flush=True)
        by_name = {built.path.name.split("-")[0]: built.path for built in packages}
        plugin_dir = plugin_harness.install(
            by_name["triton_multimodal"], WORK / "plugin", uv_cache=ROOT / ".cache" / "uv"
        )
        credentials = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
        with plugin_harness.PluginProcess(plugin_dir) as plugin:
            plugin.call(
                "model", "validate_provider_credentials", {"provider": "triton_multimodal", "credentials": credentials}
            )
            print("   provider credentials valid (server reachable, ready, model present, loaded, probe answered)")
            print("\n== 4/5 asking about a picture", flush=True)
            stream_answer(plugin, credentials, demo_picture())
            print("\n== and ranking sentences with the text-embedding model (real all-MiniLM-L6-v2 weights)")
            rank_sentences(plugin, credentials)
            print("\n== and a round trip through speech: text to speech, then speech to text (real weights)")
            speech_round_trip(plugin, credentials)
        print("\n== 5/5 the workflow tools package: OCR of a picture, server health", flush=True)
        use_tools(by_name["triton_multimodal_tools"], credentials)
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
 3. Plugins -> Install from local package: dist/triton_multimodal-0.1.0.difypkg (models) and
    dist/triton_multimodal_tools-0.1.0.difypkg (workflow tools)
 4. Settings -> Model Providers -> Triton Multimodal, and Tools -> Triton Multimodal Tools:
    server URL = Triton's HTTP endpoint as the plugin daemon reaches it (gRPC endpoint: same
    host, port 8001, unless you set it).""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
