"""Media transport: bytes on the wire and time to hand a 1, 5 and 20 MB image or video to a model.

Three forms, each into the bench-only ``bench_sink`` model, which decodes what it gets the way
a model must and answers with the byte count (checked against the payload):

* ``binary`` (ours): the bytes as a BYTES tensor in one gRPC ``ModelStreamInfer`` call, as the
  plugin sends chat media;
* ``vllm_base64``: base64 text in a BYTES tensor over the same gRPC call, as the vLLM backend's
  ``image`` input takes it;
* ``json_base64``: OpenAI-style messages with a ``data:`` URL, as JSON text inside Triton's JSON
  ``/infer`` body over HTTP (the OpenAI-compatible plugins' way of carrying media).

Bytes on the wire: the request message as sent (the serialized protobuf, or the HTTP body),
without TCP, HTTP/2 or header framing. Time: from encoding on the client to the model's answer.
The payload is random bytes behind a PNG or MP4 signature: transport cost depends on the size
only, which is why image and video come out alike.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import httpx

from devtools.bench import stats
from devtools.bench.models import SINK, SINK_B64, SINK_BLOB, SINK_JSON, SINK_OUTPUTS
from devtools.bench.report_tools import Report
from devtools.bench.stack import Stack
from tritonmm.transport.grpc_stream import build_request
from tritonmm.transport.tensors import InputTensor

NAME = "media"
SIZES_MB = (1, 5, 20)
SIGNATURES = {"image": b"\x89PNG\r\n\x1a\n", "video": b"\x00\x00\x00\x18ftypmp42"}
MIME = {"image": "image/png", "video": "video/mp4"}
FORMS = ("binary", "vllm_base64", "json_base64")


def models(quick: bool) -> list[str]:
    return [SINK]


def checkpoints(quick: bool) -> dict:
    return {}


def payload(kind: str, megabytes: int) -> bytes:
    signature = SIGNATURES[kind]
    return signature + os.urandom(megabytes * 1024 * 1024 - len(signature))


def openai_json(kind: str, data: bytes) -> str:
    part_type = "image_url" if kind == "image" else "video_url"
    url = f"data:{MIME[kind]};base64,{base64.b64encode(data).decode()}"
    return json.dumps({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in it?"}, {"type": part_type, part_type: {"url": url}}]}]})  # fmt: skip


def _grpc_form(stack: Stack, tensor_of) -> tuple[Any, int]:
    """(a call, its wire size): one gRPC stream with the tensor ``tensor_of()`` builds."""
    wire = build_request(SINK, [tensor_of()], SINK_OUTPUTS).ByteSize()

    def once() -> dict:
        began = time.perf_counter()
        answers = [r.outputs["SIZE"][0] for r in stack.client.stream_infer(SINK, [tensor_of()], SINK_OUTPUTS)]
        return {"ms": 1000 * (time.perf_counter() - began), "size": answers[0]}

    return once, wire


def _sides(stack: Stack, http: httpx.Client, kind: str, data: bytes) -> tuple[dict, dict[str, int]]:
    binary, binary_wire = _grpc_form(stack, lambda: InputTensor(SINK_BLOB, (data,)))
    vllm, vllm_wire = _grpc_form(stack, lambda: InputTensor(SINK_B64, (base64.b64encode(data),)))
    url = f"{stack.server.http_url}/v2/models/{SINK}/infer"

    def body() -> bytes:
        request = {"inputs": [{"name": SINK_JSON.name, "shape": [1], "datatype": "BYTES",
                               "data": [openai_json(kind, data)]}]}  # fmt: skip
        return json.dumps(request).encode()

    def json_form() -> dict:
        began = time.perf_counter()
        response = http.post(url, content=body(), headers={"Content-Type": "application/json"})
        response.raise_for_status()
        size = response.json()["outputs"][0]["data"][0]
        return {"ms": 1000 * (time.perf_counter() - began), "size": size}

    sides = {"binary": binary, "vllm_base64": vllm, "json_base64": json_form}
    return sides, {"binary": binary_wire, "vllm_base64": vllm_wire, "json_base64": len(body())}


def run(stack: Stack, quick: bool) -> dict:
    rounds = 3 if quick else 7
    table: dict[str, Any] = {}
    with httpx.Client(timeout=120) as http:
        for kind in SIGNATURES:
            for megabytes in SIZES_MB:
                stack.progress.step(f"{kind}, {megabytes} MB: binary vs vLLM base64 vs JSON base64")
                data = payload(kind, megabytes)
                sides, wire = _sides(stack, http, kind, data)
                runs = stats.alternate(sides, rounds, on_round=stack.progress.rounds(f"{kind} {megabytes} MB", rounds))
                row: dict[str, Any] = {}
                for form, samples in runs.items():
                    wrong = [s["size"] for s in samples if s["size"] != len(data)]
                    if wrong:
                        raise RuntimeError(f"{form}: the model received {wrong[0]} bytes, not {len(data)}")
                    row[form] = {"ms": stats.summary([s["ms"] for s in samples]), "wire_bytes": wire[form]}
                row["payload_bytes"] = len(data)
                table[f"{kind}/{megabytes}"] = row
    return {"rounds": rounds, "table": table}


def render(result: dict, report: Report) -> None:
    table = result["table"]
    report.paragraph(
        f"Into a sink model that decodes what it gets; {result['rounds']} rounds, the three forms alternating. "
        "Wire: the request message as sent (serialized protobuf or HTTP body) relative to the payload. "
        "Time: milliseconds from encoding on the client to the model's answer, median (min–max). "
        "**binary** (ours): raw bytes in a BYTES tensor over gRPC; **vLLM base64**: base64 text in a BYTES "
        "tensor over gRPC, the vLLM backend's image input; **JSON base64**: an OpenAI-style `data:` URL "
        "inside Triton's JSON `/infer` body."
    )
    rows = []
    for key, row in table.items():
        kind, megabytes = key.split("/")
        cells = [kind, f"{megabytes} MB"]
        for form in FORMS:
            cells.append(f"{row[form]['wire_bytes'] / row['payload_bytes']:.3f}× · {stats.fmt(row[form]['ms'], 0)}")
        cells.append(f"{row['json_base64']['ms']['median'] / row['binary']['ms']['median']:.1f}×")
        rows.append(cells)
    report.table(["media", "size", "binary: wire · ms", "vLLM base64: wire · ms", "JSON base64: wire · ms",
                  "JSON / binary time"], rows)  # fmt: skip
    images = [key for key in table if key.startswith("image/")]
    report.bar_plot(
        "media-transport-ms", "Time to hand an image to the model", "ms (log scale)",
        [f"{key.split('/')[1]} MB" for key in images],
        {form: [table[key][form]["ms"]["median"] for key in images] for form in FORMS}, log=True,
    )  # fmt: skip
