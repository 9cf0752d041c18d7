"""The benchmark's model repository source: bundled models, copies with one switch turned, a sink.

The launcher plans and renders it like the bundled repository (``tritonmm_server.ops``):

* the bundled models the cases use, as they are;
* ``chat_off``: the bundled chat with iteration-level batching off (``tmm.batching: off``);
* ``chat_realsize`` and ``chat_realsize_off``: the bundled chat (batching on, off), to be given
  SmolVLM-256M's shape as their checkpoint;
* ``text_embedding_unbatched``: the bundled text embedding without dynamic batching;
* ``bench_sink``: a bench-only model that takes media in the three forms compared (raw bytes,
  a base64 string tensor as the vLLM backend takes images, base64 inside OpenAI-style JSON),
  decodes them as a model must, and answers with the byte count and which server answered.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

from tritonmm import contract
from tritonmm.contract import TensorSpec
from tritonmm_server.ops.paths import DEFAULT_REPOSITORY
from tritonmm_server.ops.repository import CONFIG_NAME, set_parameters

SINK = "bench_sink"
SINK_BLOB = TensorSpec("BLOB", "TYPE_STRING", (-1,), optional=True)  # raw bytes: our binary path
SINK_B64 = TensorSpec("B64", "TYPE_STRING", (-1,), optional=True)  # the vLLM backend's `image` input
SINK_JSON = TensorSpec("OPENAI_JSON", "TYPE_STRING", (1,), optional=True)  # OpenAI-style messages
SINK_OUTPUTS = ["SIZE", "SERVER"]
SERVER_ID_KEY = "bench.server_id"

# name of the copy: (bundled model, what changes in its config)
COPIES = {
    "chat_off": ("chat", {contract.KEY_BATCHING: "off"}),
    "chat_realsize": ("chat", {}),
    "chat_realsize_off": ("chat", {contract.KEY_BATCHING: "off"}),
    "text_embedding_unbatched": ("text_embedding", {}),
}
# dynamic batching removed: each request runs alone (the response cache stays as it was)
_DYNAMIC_BATCHING = re.compile(r"^dynamic_batching\s*\{[^}]*\}\s*$", re.M)

SINK_CONFIG = f"""
name: "{SINK}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "{SINK_BLOB.name}" data_type: TYPE_STRING dims: [ -1 ] optional: true }},
  {{ name: "{SINK_B64.name}" data_type: TYPE_STRING dims: [ -1 ] optional: true }},
  {{ name: "{SINK_JSON.name}" data_type: TYPE_STRING dims: [ 1 ] optional: true }}
]
output [
  {{ name: "SIZE" data_type: TYPE_INT64 dims: [ 1 ] }},
  {{ name: "SERVER" data_type: TYPE_STRING dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "{SERVER_ID_KEY}" value: {{ string_value: "" }} }}
"""

SINK_CODE = f"""
import base64
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def elements(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return [] if tensor is None else list(tensor.as_numpy().reshape(-1))


def openai_media(text):
    # what an OpenAI-compatible server does with a data URL: parse the JSON, cut the prefix, decode
    decoded = []
    for message in json.loads(text)["messages"]:
        for part in message["content"]:
            url = (part.get("image_url") or part.get("video_url") or {{}}).get("url", "")
            if url.startswith("data:"):
                decoded.append(base64.b64decode(url.split(",", 1)[1]))
    return decoded


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {{}})
        self.server_id = parameters.get("{SERVER_ID_KEY}", {{}}).get("string_value", "").encode()

    def execute(self, requests):
        responses = []
        for request in requests:
            blobs = elements(request, "{SINK_BLOB.name}")
            blobs += [base64.b64decode(item) for item in elements(request, "{SINK_B64.name}")]
            for text in elements(request, "{SINK_JSON.name}"):
                blobs += openai_media(text)
            size = np.array([sum(len(blob) for blob in blobs)], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("SIZE", size),
                pb_utils.Tensor("SERVER", np.array([self.server_id], dtype=np.object_)),
            ]))
        return responses
"""


def write_source(dest: Path, models: list[str]) -> None:
    """A clean repository source at ``dest`` with ``models`` (bundled names, copies, the sink)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in models:
        if name == SINK:
            write_sink(dest)
        elif name in COPIES:
            original, values = COPIES[name]
            _copy(DEFAULT_REPOSITORY / original, dest / name)
            config = dest / name / CONFIG_NAME
            text = config.read_text().replace(f'name: "{original}"', f'name: "{name}"', 1)
            if name == "text_embedding_unbatched":
                text, found = _DYNAMIC_BATCHING.subn("", text)
                if found != 1:
                    raise RuntimeError(f"{config}: no dynamic_batching block to remove")
            config.write_text(set_parameters(text, values) if values else text)
        elif (DEFAULT_REPOSITORY / name).is_dir():
            _copy(DEFAULT_REPOSITORY / name, dest / name)
        else:
            raise ValueError(f"no model '{name}' for the benchmark repository")


def write_sink(dest: Path) -> None:
    (dest / SINK / "1").mkdir(parents=True, exist_ok=True)
    (dest / SINK / CONFIG_NAME).write_text(SINK_CONFIG.lstrip())
    (dest / SINK / "1" / "model.py").write_text(textwrap.dedent(SINK_CODE).lstrip())


def _copy(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
