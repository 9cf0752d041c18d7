"""The interfaces of LLM deployments operators already run, as their configs declare them.

Tensor names, dtypes, dims and optional flags as upstream declares them (the vLLM
backend's auto-completed config in ``src/model.py``; TensorRT-LLM's
``triton_backend/all_models/inflight_batcher_llm/{ensemble,tensorrt_llm_bls}/config.pbtxt``),
for the inputs and outputs a chat client meets; LoRA, logits, draft-model and
prompt-table tensors are left out. One source for the unit tests (``as_json``: what
``/v2/models/<m>/config`` returns) and the conformance fixture models (``as_pbtxt``).
"""

from __future__ import annotations

from typing import Any

Tensor = tuple[str, str, tuple[int, ...], bool]  # name, data type, dims, optional

VLLM_INPUTS: list[Tensor] = [
    ("text_input", "TYPE_STRING", (1,), False),
    ("image", "TYPE_STRING", (-1,), True),
    ("stream", "TYPE_BOOL", (1,), True),
    ("sampling_parameters", "TYPE_STRING", (1,), True),
    ("exclude_input_in_output", "TYPE_BOOL", (1,), True),
    ("return_finish_reason", "TYPE_BOOL", (1,), True),
    ("return_cumulative_logprob", "TYPE_BOOL", (1,), True),
    ("return_logprobs", "TYPE_BOOL", (1,), True),
    ("return_num_input_tokens", "TYPE_BOOL", (1,), True),
    ("return_num_output_tokens", "TYPE_BOOL", (1,), True),
]
VLLM_OUTPUTS: list[Tensor] = [
    ("text_output", "TYPE_STRING", (-1,), False),
    ("finish_reason", "TYPE_STRING", (-1,), False),
    ("cumulative_logprob", "TYPE_FP32", (-1,), False),
    ("logprobs", "TYPE_STRING", (-1,), False),
    ("num_input_tokens", "TYPE_UINT32", (1,), False),
    ("num_output_tokens", "TYPE_UINT32", (-1,), False),
]

# The ensemble's and the BLS model's shared request tensors.
TRTLLM_INPUTS: list[Tensor] = [
    ("text_input", "TYPE_STRING", (1,), False),
    ("max_tokens", "TYPE_INT32", (1,), False),
    ("bad_words", "TYPE_STRING", (-1,), True),
    ("stop_words", "TYPE_STRING", (-1,), True),
    ("exclude_input_in_output", "TYPE_BOOL", (1,), True),
    ("end_id", "TYPE_INT32", (1,), True),
    ("pad_id", "TYPE_INT32", (1,), True),
    ("top_k", "TYPE_INT32", (1,), True),
    ("top_p", "TYPE_FP32", (1,), True),
    ("temperature", "TYPE_FP32", (1,), True),
    ("length_penalty", "TYPE_FP32", (1,), True),
    ("repetition_penalty", "TYPE_FP32", (1,), True),
    ("min_tokens", "TYPE_INT32", (1,), True),
    ("presence_penalty", "TYPE_FP32", (1,), True),
    ("frequency_penalty", "TYPE_FP32", (1,), True),
    ("seed", "TYPE_UINT64", (1,), True),
    ("return_num_input_tokens", "TYPE_BOOL", (1,), True),
    ("return_num_output_tokens", "TYPE_BOOL", (1,), True),
    ("beam_width", "TYPE_INT32", (1,), True),
    ("stream", "TYPE_BOOL", (1,), True),
    ("guided_decoding_guide_type", "TYPE_STRING", (1,), True),
    ("guided_decoding_guide", "TYPE_STRING", (1,), True),
]
BLS_IMAGE_INPUTS: list[Tensor] = [
    ("image_input", "TYPE_FP16", (-1, 3, -1, -1), True),
    ("image_bytes_input", "TYPE_UINT8", (-1, -1, -1, -1), True),
    ("image_url_input", "TYPE_STRING", (1,), True),
    ("video_bytes_input", "TYPE_UINT8", (-1, -1, -1, -1), True),
]
TRTLLM_OUTPUTS: list[Tensor] = [
    ("text_output", "TYPE_STRING", (-1,), False),
    ("cum_log_probs", "TYPE_FP32", (-1,), False),
    ("batch_index", "TYPE_INT32", (1,), False),
    ("sequence_index", "TYPE_INT32", (1,), False),
    ("num_input_tokens", "TYPE_INT32", (1,), False),
    ("num_output_tokens", "TYPE_INT32", (1,), False),
]


def as_json(
    inputs: list[Tensor],
    outputs: list[Tensor],
    *,
    name: str = "llm",
    backend: str = "python",
    platform: str = "",
    max_batch_size: int = 0,
    decoupled: bool = True,
    parameters: dict[str, str] | None = None,
    steps: list[str] | None = None,
) -> dict[str, Any]:
    """The config as Triton's HTTP API returns it (dims as strings, as protobuf's JSON writes int64)."""
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "backend": backend,
        "max_batch_size": max_batch_size,
        "input": [_tensor_json(t) for t in inputs],
        "output": [_tensor_json(t) for t in outputs],
        "model_transaction_policy": {"decoupled": decoupled},
        "parameters": {k: {"string_value": v} for k, v in (parameters or {}).items()},
    }
    if steps:
        config["ensemble_scheduling"] = {"step": [{"model_name": s, "model_version": "-1"} for s in steps]}
    return config


def _tensor_json(tensor: Tensor) -> dict[str, Any]:
    name, dtype, dims, optional = tensor
    return {"name": name, "data_type": dtype, "dims": [str(d) for d in dims], "optional": optional}


def pbtxt_tensors(section: str, tensors: list[Tensor]) -> str:
    """An ``input [...]`` or ``output [...]`` block of a config.pbtxt."""
    rows = []
    for name, dtype, dims, optional in tensors:
        flag = " optional: true" if optional else ""
        rows.append(f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]{flag} }}')
    return f"{section} [\n" + ",\n".join(rows) + "\n]"
