"""Fixture models with the interfaces of LLM deployments operators already run, for conformance tests.

Written into the test repository next to ``tests/fixture_models.py``'s. Each has the
config its upstream model has (tensors from ``tests/backend_configs.py``, decoupled
policy, batching) and answers the way it does (``tests/backend_models/*.py`` say how);
all of them generate with the tiny chat checkpoint through one engine model, so the
text is real generation:

* ``tiny_llm_engine``: the engine (torch, the tiny Idefics3 build), called by BLS;
* ``vllm_llm`` / ``vllm_llm_old``: the vLLM backend, structured output under
  ``structured_outputs`` (vllm_backend 25.12 on) / ``guided_decoding`` (before);
* ``vllm_midstream``: the vLLM backend failing after two responses;
* ``trtllm_ensemble`` (+ ``trtllm_ensemble_step``): a TensorRT-LLM ensemble whose step is decoupled;
* ``trtllm_bls``: TensorRT-LLM's BLS model with ``accumulate_tokens`` and an image input;
* ``generate_llm`` / ``generate_midstream``: a decoupled model with its own tensor names
  (``prompt`` -> ``completion``), for the generate endpoint, the second failing after one response;
* ``nofit_llm``: a model that fits no chat interface (token ids in, logits out).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.backend_configs import (
    BLS_IMAGE_INPUTS,
    TRTLLM_INPUTS,
    TRTLLM_OUTPUTS,
    VLLM_INPUTS,
    VLLM_OUTPUTS,
    Tensor,
    pbtxt_tensors,
)

CODE = Path(__file__).parent / "backend_models"
ENGINE = "tiny_llm_engine"
GENERATE_INPUTS: list[Tensor] = [("prompt", "TYPE_STRING", (1,), False), ("max_new_tokens", "TYPE_INT32", (1,), True)]
GENERATE_OUTPUTS: list[Tensor] = [("completion", "TYPE_STRING", (1,), False)]
ENGINE_INPUTS: list[Tensor] = [
    ("PROMPT", "TYPE_STRING", (1,), False),
    ("IMAGES", "TYPE_STRING", (-1,), True),
    ("PARAMS_JSON", "TYPE_STRING", (1,), True),
]
ENGINE_OUTPUTS: list[Tensor] = [
    ("DELTA", "TYPE_STRING", (1,), False),
    ("PIECE", "TYPE_STRING", (1,), False),
    ("TOTAL", "TYPE_STRING", (1,), False),
    ("PROMPT_TOKENS", "TYPE_INT32", (1,), False),
    ("FINISH", "TYPE_STRING", (1,), False),
]
BATCH = 8  # TensorRT-LLM's models are batched (triton_max_batch_size)

# name: (code file, inputs, outputs, max_batch_size, decoupled, parameters)
MODELS: dict[str, tuple[str, list[Tensor], list[Tensor], int, bool, dict[str, str]]] = {
    "vllm_llm": ("vllm_model.py", VLLM_INPUTS, VLLM_OUTPUTS, 0, True, {"structured_key": "structured_outputs"}),
    "vllm_llm_old": ("vllm_model.py", VLLM_INPUTS, VLLM_OUTPUTS, 0, True, {"structured_key": "guided_decoding"}),
    "vllm_midstream": ("vllm_model.py", VLLM_INPUTS, VLLM_OUTPUTS, 0, True, {"fail_after": "2"}),
    "trtllm_ensemble_step": ("trtllm_model.py", TRTLLM_INPUTS, TRTLLM_OUTPUTS, BATCH, True, {"role": "ensemble_step"}),
    "trtllm_bls": (
        "trtllm_model.py",
        TRTLLM_INPUTS + BLS_IMAGE_INPUTS,
        TRTLLM_OUTPUTS,
        BATCH,
        True,
        {"role": "bls", "accumulate_tokens": "true", "tensorrt_llm_model_name": "tensorrt_llm"},
    ),  # fmt: skip
    "generate_llm": ("generate_model.py", GENERATE_INPUTS, GENERATE_OUTPUTS, 0, True, {}),
    "generate_midstream": ("generate_model.py", GENERATE_INPUTS, GENERATE_OUTPUTS, 0, True, {"fail_after": "1"}),
}
BACKEND_FIXTURES = [ENGINE, *MODELS, "trtllm_ensemble", "nofit_llm"]

NOFIT_CODE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("LOGITS", np.zeros(4, dtype=np.float32))]) for _ in requests]
"""


def write_backend_fixtures(dest: Path, checkpoint: Path) -> list[str]:
    """Write the fixture models into the model repository ``dest``; ``checkpoint`` is the tiny
    chat build the engine generates with. Returns their names."""
    engine = {"checkpoint": str(checkpoint)}
    _python_model(dest, ENGINE, "engine.py", ENGINE_INPUTS, ENGINE_OUTPUTS, 0, True, engine)
    for name, (code, inputs, outputs, batch, decoupled, parameters) in MODELS.items():
        _python_model(dest, name, code, inputs, outputs, batch, decoupled, parameters)
        shutil.copy(CODE / "engine_client.py", dest / name / "1" / "engine_client.py")
    _write(dest / "trtllm_ensemble", _ensemble("trtllm_ensemble", "trtllm_ensemble_step"), None)
    nofit = _config("nofit_llm", [("INPUT_IDS", "TYPE_INT32", (-1,), False)], [("LOGITS", "TYPE_FP32", (-1,), False)],
                    0, False, {})  # fmt: skip
    _write(dest / "nofit_llm", nofit, NOFIT_CODE.lstrip())
    return list(BACKEND_FIXTURES)


def _python_model(dest, name, code, inputs, outputs, batch, decoupled, parameters) -> None:
    _write(dest / name, _config(name, inputs, outputs, batch, decoupled, parameters), (CODE / code).read_text())


def _config(name, inputs, outputs, batch, decoupled, parameters) -> str:
    lines = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {batch}",
        f"model_transaction_policy {{ decoupled: {'true' if decoupled else 'false'} }}",
        pbtxt_tensors("input", inputs),
        pbtxt_tensors("output", outputs),
        "instance_group [ { count: 1 kind: KIND_CPU } ]",
        *(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in parameters.items()),
    ]
    return "\n".join(lines) + "\n"


def _ensemble(name: str, step: str) -> str:
    """TensorRT-LLM's ensemble tensors, mapped one to one onto a single decoupled step."""
    inputs = "\n".join(f'    input_map {{ key: "{t[0]}" value: "{t[0]}" }}' for t in TRTLLM_INPUTS)
    outputs = "\n".join(f'    output_map {{ key: "{t[0]}" value: "{t[0]}" }}' for t in TRTLLM_OUTPUTS)
    return "\n".join(
        [
            f'name: "{name}"',
            'platform: "ensemble"',
            f"max_batch_size: {BATCH}",
            pbtxt_tensors("input", TRTLLM_INPUTS),
            pbtxt_tensors("output", TRTLLM_OUTPUTS),
            "ensemble_scheduling {\n  step [ {",
            f'    model_name: "{step}"\n    model_version: -1',
            inputs,
            outputs,
            "  } ]\n}",
            "",
        ]
    )


def _write(model_dir: Path, config: str, code: str | None) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    if code is not None:
        (model_dir / "1" / "model.py").write_text(code)
