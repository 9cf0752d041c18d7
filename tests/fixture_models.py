"""Small numpy-only Triton models that fail on purpose, for failures that a
healthy bundled model cannot produce: a model that fails to load, one that
refuses every request, one that fails after two tokens, one that goes silent;
and a batched echo model for the unary transport.

Their configs are rendered from the contract, so they speak the chat contract
exactly as the bundled model does.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tritonmm import contract
from tritonmm.contract import TensorSpec


def _tensor(spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.dims)
    optional = " optional: true" if spec.optional else ""
    return f'  {{ name: "{spec.name}" data_type: {spec.triton_dtype} dims: [ {dims} ]{optional} }}'


def chat_config(name: str, features: str = "vision", asr_model: str = "", **extra: str) -> str:
    params = {contract.KEY_TASK: contract.Task.CHAT.value, contract.KEY_FEATURES: features, **extra}
    if asr_model:
        params[contract.KEY_ASR_MODEL] = asr_model
    return "\n".join(
        [
            f'name: "{name}"',
            'backend: "python"',
            "max_batch_size: 0",
            "model_transaction_policy { decoupled: true }",
            "input [\n" + ",\n".join(_tensor(s) for s in contract.CHAT_INPUTS) + "\n]",
            "output [\n" + ",\n".join(_tensor(s) for s in contract.CHAT_OUTPUTS) + "\n]",
            "instance_group [ { count: 1 kind: KIND_CPU } ]",
            *(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()),
            "",
        ]
    )


_SENDER = """
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from tritonmm.contract import CHAT_TEXT

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def text(value):
    return pb_utils.InferenceResponse([pb_utils.Tensor(CHAT_TEXT.name, np.array([value.encode()], dtype=np.object_))])


def error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for value in TOKENS:
                sender.send(text(value))
            time.sleep(PAUSE_S)
            sender.send(error(MESSAGE), flags=FINAL)
        return None
"""

# name: (tokens sent, pause before the final error, the error)
FIXTURES = {
    "refuses": ([], 0.0, "refuses: this test model rejects every request"),
    "midstream": (["a", "b"], 0.0, "midstream: this test model fails after two tokens"),
    "stalls": (["a"], 6.0, "stalls: this test model goes silent after one token"),
}
BROKEN_MESSAGE = "broken: this test model cannot load its weights"


ECHO_CONFIG = """
name: "echo_bytes"
backend: "python"
max_batch_size: 8
dynamic_batching { }
response_cache { enable: true }
input [ { name: "BLOB" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "SIZE" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "BLOB_OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

ECHO_CODE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "BLOB").as_numpy()
            sizes = np.array([[len(row[0])] for row in rows], dtype=np.int32)
            backwards = np.array([[row[0][::-1]] for row in rows], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SIZE", sizes), pb_utils.Tensor("BLOB_OUT", backwards)]))
        return responses
"""


# Answers with the MESSAGES_JSON it received, as one token: shows what the plugin
# made of a request (e.g. audio parts replaced by transcripts, the size images arrive at).
ECHO_CHAT_CODE = """
import io

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image
from tritonmm import contract

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def tensor(spec, value, dtype):
    return pb_utils.Tensor(spec.name, np.array([value], dtype=dtype))


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            messages = pb_utils.get_input_tensor_by_name(request, contract.CHAT_MESSAGES.name).as_numpy()[0]
            images = pb_utils.get_input_tensor_by_name(request, contract.CHAT_IMAGES.name)
            audios = pb_utils.get_input_tensor_by_name(request, contract.CHAT_AUDIOS.name)
            text = messages.decode()
            if images is not None:
                sizes = (Image.open(io.BytesIO(blob)).size for blob in images.as_numpy())
                text += " IMAGES=" + ",".join(f"{w}x{h}" for w, h in sizes)
            text += f" AUDIOS={audios.as_numpy().size}" if audios is not None else ""
            sender.send(
                pb_utils.InferenceResponse([
                    tensor(contract.CHAT_TEXT, text.encode(), np.object_),
                    tensor(contract.CHAT_FINISH_REASON, contract.FINISH_STOP.encode(), np.object_),
                    tensor(contract.CHAT_PROMPT_TOKENS, len(text), np.int32),
                    tensor(contract.CHAT_COMPLETION_TOKENS, 1, np.int32),
                ]),
                flags=FINAL,
            )
        return None
"""
# Answers with the PARAMS_JSON it received, as one token: shows the parameters the plugin sends.
# Its config declares a thinking switch, so the plugin offers enable_thinking for it.
ECHO_PARAMS_CODE = """
import numpy as np
import triton_python_backend_utils as pb_utils
from tritonmm import contract

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def tensor(spec, value, dtype):
    return pb_utils.Tensor(spec.name, np.array([value], dtype=dtype))


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            params = pb_utils.get_input_tensor_by_name(request, contract.CHAT_PARAMS.name)
            text = params.as_numpy()[0].decode() if params is not None else ""
            request.get_response_sender().send(
                pb_utils.InferenceResponse([
                    tensor(contract.CHAT_TEXT, text.encode(), np.object_),
                    tensor(contract.CHAT_FINISH_REASON, contract.FINISH_STOP.encode(), np.object_),
                    tensor(contract.CHAT_PROMPT_TOKENS, 1, np.int32),
                    tensor(contract.CHAT_COMPLETION_TOKENS, 1, np.int32),
                ]),
                flags=FINAL,
            )
        return None
"""
ECHO_PARAMS = "echo_params"

# name: (tmm.features, tmm.asr_model)
ECHO_CHATS = {
    "echo_chat": ("vision", "speech_to_text"),  # audio by cascade
    "echo_chat_native": ("vision,audio", "speech_to_text"),  # native audio wins over the cascade
    "echo_chat_no_asr": ("vision", "no_such_asr_model"),  # names a speech model that is not there
}


def write_fixture_models(dest: Path) -> list[str]:
    """Write the fixture models into a model repository directory; return their names."""
    for name, (tokens, pause, message) in FIXTURES.items():
        constants = f"TOKENS = {tokens!r}\nPAUSE_S = {pause!r}\nMESSAGE = {message!r}\n"
        _write(dest / name, chat_config(name), constants + _SENDER)
    broken = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise pb_utils.TritonModelException(MESSAGE)

    def execute(self, requests):
        return None
"""
    _write(dest / "broken", chat_config("broken"), f"MESSAGE = {BROKEN_MESSAGE!r}\n" + broken)
    _write(dest / "echo_bytes", ECHO_CONFIG.lstrip(), ECHO_CODE)
    for name, (features, asr_model) in ECHO_CHATS.items():
        _write(dest / name, chat_config(name, features, asr_model), ECHO_CHAT_CODE)
    thinker = chat_config(ECHO_PARAMS, **{contract.KEY_THINKING_SWITCH: "true"})
    _write(dest / ECHO_PARAMS, thinker, ECHO_PARAMS_CODE)
    return [*FIXTURES, "broken", "echo_bytes", *ECHO_CHATS, ECHO_PARAMS]


def _write(model_dir: Path, config: str, code: str) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(code).lstrip())
