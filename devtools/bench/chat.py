"""Chat latency for an image and a question: through the plugin vs the raw gRPC stream, and
the official Dify Triton plugin's blocking way vs ours.

* ``latency``: time to first token and inter-token latency, the built plugin (daemon-role
  harness, Dify's base64 image in, chunks out) against one raw ``ModelStreamInfer`` call with
  the same tensors prepared once (no plugin, no media loading). Same model, prompt, seed and
  length on both sides. Target: plugin ≤ 1.05 × raw + 5 ms.
* ``blocking``: the official plugin POSTs ``/v2/models/<m>/generate`` once and shows the whole
  answer as one chunk. Our decoupled chat model answers that endpoint with an error (one
  request, many responses; the probe records what Triton says), so its way is emulated: the
  time until the whole answer has arrived, collecting the raw gRPC stream (no plugin overhead
  on that side). Ours: the time until the plugin's first chunk.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx

from devtools.bench import stats
from devtools.bench.report_tools import Report
from devtools.bench.stack import Stack, realsize_checkpoint
from devtools.demo import demo_picture
from tritonmm import chat, contract
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart

NAME = "chat"
QUESTION = "Describe this picture."
OVERHEAD_FACTOR, OVERHEAD_SLACK_MS = 1.05, 5.0
TEMPERATURE, SEED = 0.8, 1
MODELS = {"chat": "tiny Idefics3 (random weights)", "chat_realsize": "SmolVLM-256M shape (random weights, fp32)"}


def models(quick: bool) -> list[str]:
    return ["chat"] if quick else list(MODELS)


def checkpoints(quick: bool) -> dict:
    return {} if quick else {"chat_realsize": realsize_checkpoint("float32")}


def _raw(stack: Stack, model: str, max_tokens: int):
    """One raw gRPC stream per call, the request's tensors built once beforehand."""
    client = stack.client
    caps = client.capabilities(model, contract.Task.CHAT)
    message = Message("user", (TextPart(QUESTION), MediaPart(Modality.IMAGE, data=demo_picture())))
    params = chat.ChatParams(max_tokens=max_tokens, temperature=TEMPERATURE, seed=SEED)
    inputs = chat.build_inputs([message], params, caps, client, model)
    outputs = [spec.name for spec in contract.CHAT_OUTPUTS]

    def once() -> dict:
        started = time.perf_counter()
        arrivals = []
        for response in client.stream_infer(model, inputs, outputs):
            if response.outputs.get(contract.CHAT_FINISH_REASON.name, [b""])[0]:
                break
            if response.outputs.get(contract.CHAT_TEXT.name, [b""])[0]:  # as the plugin: chunks with text
                arrivals.append(time.perf_counter())
        return _sample(started, arrivals, time.perf_counter())

    return once


def _core(stack: Stack, model: str, max_tokens: int):
    """The core library from Dify's base64 image: media loading and the request built on each call."""
    client = stack.client
    caps = client.capabilities(model, contract.Task.CHAT)
    image = base64.b64encode(demo_picture()).decode()
    message = Message("user", (TextPart(QUESTION), MediaPart(Modality.IMAGE, base64_data=image, mime_type="image/png")))
    params = chat.ChatParams(max_tokens=max_tokens, temperature=TEMPERATURE, seed=SEED)

    def once() -> dict:
        started = time.perf_counter()
        arrivals = []
        for chunk in chat.open_chat(client, model, [message], params, caps):
            if chunk.text:
                arrivals.append(time.perf_counter())
        return _sample(started, arrivals, time.perf_counter())

    return once


def _plugin(stack: Stack, model: str, max_tokens: int):
    image = base64.b64encode(demo_picture()).decode()
    prompt = [{"role": "user", "content": [
        {"type": "text", "data": QUESTION},
        {"type": "image", "format": "png", "mime_type": "image/png", "base64_data": image},
    ]}]  # fmt: skip
    parameters = {"max_tokens": max_tokens, "temperature": TEMPERATURE, "seed": SEED}

    def once() -> dict:
        started = time.perf_counter()
        arrivals = []
        for message in stack.invoke(
            "invoke_llm",
            "llm",
            model,
            prompt_messages=prompt,
            model_parameters=parameters,
            tools=[],
            stop=[],
            stream=True,
        ):
            if message.data["delta"]["message"]["content"]:
                arrivals.append(message.at)
        return _sample(started, arrivals, time.perf_counter())

    return once


def _sample(started: float, arrivals: list[float], ended: float) -> dict:
    if not arrivals:
        raise RuntimeError("the answer had no tokens")
    # Between tokens: the answer's mean gap. Single gaps mean little: a stream's responses are
    # often read several at once, which makes most gaps zero and a few long.
    gap = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else 0.0
    return {
        "ttft_ms": 1000 * (arrivals[0] - started),
        "total_ms": 1000 * (ended - started),
        "tokens": len(arrivals),
        "itl_ms": 1000 * gap,
    }


def _latency(stack: Stack, model: str, rounds: int, max_tokens: int) -> dict:
    sides = {side: make(stack, model, max_tokens) for side, make in (("raw_grpc", _raw), ("core", _core),
                                                                       ("plugin", _plugin))}  # fmt: skip
    runs = stats.alternate(sides, rounds, on_round=stack.progress.rounds(f"{model} raw, core, plugin", rounds))
    result: dict[str, Any] = {"max_tokens": max_tokens, "rounds": rounds}
    for side, samples in runs.items():
        result[side] = {
            "ttft_ms": stats.summary([s["ttft_ms"] for s in samples]),
            "itl_ms": stats.summary([s["itl_ms"] for s in samples]),
            "tokens": stats.summary([s["tokens"] for s in samples]),
        }
    for metric in ("ttft_ms", "itl_ms"):
        ours, raw = result["plugin"][metric], result["raw_grpc"][metric]
        result[f"{metric}_ratio"] = stats.ratio(ours, raw)
        result[f"{metric}_meets_target"] = stats.meets_overhead_target(ours, raw, OVERHEAD_FACTOR, OVERHEAD_SLACK_MS)
    return result


def probe_generate(stack: Stack, model: str) -> dict:
    """What Triton answers when the chat model is called the official plugin's way (text only)."""
    wire = json.dumps([{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    body = {"MESSAGES_JSON": wire, "PARAMS_JSON": json.dumps({"max_tokens": 8}), "parameters": {"stream": False}}
    response = httpx.post(f"{stack.server.http_url}/v2/models/{model}/generate", json=body, timeout=60)
    return {"status": response.status_code, "body": response.text[:400]}


def _blocking(stack: Stack, model: str, rounds: int, max_tokens: int) -> dict:
    raw, plugin = _raw(stack, model, max_tokens), _plugin(stack, model, max_tokens)
    sides = {"official_way": raw, "ours": plugin}
    runs = stats.alternate(sides, rounds, on_round=stack.progress.rounds(f"{model} {max_tokens} tokens", rounds))
    theirs = stats.summary([s["total_ms"] for s in runs["official_way"]])  # the one chunk arrives at the end
    ours = stats.summary([s["ttft_ms"] for s in runs["ours"]])
    return {
        "max_tokens": max_tokens,
        "rounds": rounds,
        "official_first_chunk_ms": theirs,
        "ours_first_chunk_ms": ours,
        "ours_total_ms": stats.summary([s["total_ms"] for s in runs["ours"]]),
        "tokens": stats.summary([s["tokens"] for s in runs["ours"]]),
        "ratio": stats.ratio(theirs, ours),
    }


# rounds per model: (latency, blocking at 64 tokens, blocking at 256 tokens), quick and full
ROUNDS = {
    ("chat", True): (15, 5, 3),
    ("chat", False): (40, 10, 5),
    ("chat_realsize", False): (8, 3, 2),
}


def run(stack: Stack, quick: bool) -> dict:
    tokens = 32 if quick else 64
    result: dict[str, Any] = {"latency": {}, "blocking": {}, "models": {m: MODELS[m] for m in models(quick)}}
    for model in models(quick):
        stack.progress.step(f"{model}: time to first token and between tokens, plugin vs raw gRPC")
        result["latency"][model] = _latency(stack, model, ROUNDS[model, quick][0], tokens)
    result["generate_probe"] = probe_generate(stack, "chat")
    for model in models(quick):
        for length, rounds in zip((64, 256), ROUNDS[model, quick][1:], strict=True):
            stack.progress.step(f"{model}: the official plugin's blocking way vs ours, {length} tokens")
            result["blocking"][f"{model}/{length}"] = _blocking(stack, model, rounds, length)
    return result


def render(result: dict, report: Report) -> None:
    rows = []
    for model, r in result["latency"].items():
        for metric, label in (("ttft_ms", "time to first token"), ("itl_ms", "between tokens (mean per answer)")):
            verdict = "yes" if r[f"{metric}_meets_target"] else "**no**"
            rows.append([
                MODELS.get(model, model), label, stats.fmt(r["raw_grpc"][metric]), stats.fmt(r["core"][metric]),
                stats.fmt(r["plugin"][metric]), f"{r[f'{metric}_ratio']:.2f}", verdict,
            ])  # fmt: skip
    if rows:
        first = next(iter(result["latency"].values()))
        report.paragraph(
            f"An image (640×480 PNG) and a question, up to {first['max_tokens']} tokens, {first['rounds']} rounds, "
            "the sides taking turns. Milliseconds, median (min–max). **Raw**: one gRPC ModelStreamInfer call with "
            "the tensors built once. **Core**: the core library from Dify's base64 image (decode, check, encode the "
            "request) on each call, no plugin. **Plugin**: the built package run by the daemon-role harness "
            "(Dify's request over stdio, one chunk per token out). Target: plugin ≤ "
            f"{OVERHEAD_FACTOR} × raw + {OVERHEAD_SLACK_MS:g} ms."
        )
        report.table(["model", "what", "raw gRPC", "core", "plugin", "plugin / raw", "target met"], rows)
        tokens = ", ".join(
            f"{MODELS.get(m, m)} {stats.fmt(r['plugin']['tokens'], 0)}" for m, r in result["latency"].items()
        )
        report.paragraph(f"Tokens per answer (the random weights may end early): {tokens}.")
    probe = result.get("generate_probe")
    if probe:
        report.paragraph(
            f"**The official Dify Triton plugin's way.** It POSTs `/v2/models/<m>/generate` once and yields the "
            f"whole answer as one chunk. Our decoupled chat model, called that way, answers HTTP {probe['status']}: "
            f"`{probe['body'].strip()}`. So its way is emulated: *its first chunk* is the time until the whole "
            "answer has arrived over the raw gRPC stream (no plugin on that side); *ours* is the time until the "
            "plugin's first chunk."
        )
    rows = [
        [MODELS.get(key.split("/")[0], key), key.split("/")[1], stats.fmt(r["tokens"], 0),
         stats.fmt(r["official_first_chunk_ms"]), stats.fmt(r["ours_first_chunk_ms"]), f"{r['ratio']:.1f}×"]
        for key, r in result["blocking"].items()
    ]  # fmt: skip
    if rows:
        report.table(["model", "max tokens", "tokens", "official way: first chunk ms", "ours: first chunk ms",
                      "ours sooner by"], rows)  # fmt: skip
