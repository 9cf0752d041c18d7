"""One chat request in each interface's own terms: gRPC tensors, or a generate-endpoint body.

Only inputs the model's config declares are sent (an optional input the config lacks
is left out, and a sampling value it cannot take is said in the log once), each with
the dtype the config gives it. Prompt echo is always switched off
(``exclude_input_in_output``) and token counts and finish reasons asked for where the
model has the switches.

Sampling, per interface:

* vLLM: ``sampling_parameters`` JSON (vLLM's SamplingParams names: ``max_tokens``,
  ``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``), structured output under
  ``structured_outputs`` (vllm_backend from 25.12) or ``guided_decoding`` (before): a
  JSON string of ``{"json": schema}`` or ``{"json_object": true}``.
* TensorRT-LLM: one tensor each (``max_tokens`` INT32, required; ``temperature``,
  ``top_p`` FP32; ``top_k`` INT32; ``seed`` UINT64; ``stop_words`` STRING list),
  structured output in ``guided_decoding_guide_type`` (``json_schema`` with the schema
  in ``guided_decoding_guide``, or ``json``).
* Generate endpoint: the same names as top-level JSON keys where the model has such
  inputs (``sampling_parameters`` for a vLLM model); other values as request parameters.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from tritonmm.chat import ChatParams
from tritonmm.contract import RESPONSE_JSON_SCHEMA
from tritonmm.errors import InvalidInput
from tritonmm.interfaces.recognise import Interface, ModelInterface
from tritonmm.transport.tensors import ShapedTensor

LOG = logging.getLogger(__name__)

VLLM_STRUCTURED_KEYS = ("structured_outputs", "guided_decoding")  # current vllm_backend first
TRTLLM_DEFAULT_MAX_TOKENS = 1024  # TensorRT-LLM requires max_tokens; Dify sends none unless the user sets it
RETURN_SWITCHES = {  # the switch input, and the output it turns on
    "return_finish_reason": "finish_reason",
    "return_num_input_tokens": "num_input_tokens",
    "return_num_output_tokens": "num_output_tokens",
}
_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed")
_warned: set[tuple[str, str]] = set()


def sampling_values(iface: ModelInterface, params: ChatParams) -> dict[str, Any]:
    """The sampling values the user set; TensorRT-LLM's required max_tokens filled in."""
    values = {name: getattr(params, name) for name in _SAMPLING if getattr(params, name) is not None}
    if iface.kind in (Interface.TRTLLM_ENSEMBLE, Interface.TRTLLM_BLS):
        values.setdefault("max_tokens", TRTLLM_DEFAULT_MAX_TOKENS)
    return values


def supports_structured_output(iface: ModelInterface) -> bool:
    return "sampling_parameters" in iface.inputs or "guided_decoding_guide_type" in iface.inputs


def tensor_request(
    iface: ModelInterface, prompt: str, images: list[bytes], params: ChatParams, structured_key: str
) -> tuple[list[ShapedTensor], list[str]]:
    """The gRPC inputs and the outputs to ask for."""
    inputs = [_tensor(iface, iface.text_input, [prompt.encode("utf-8")])]
    if images:
        inputs.append(_tensor(iface, iface.image_input, _image_values(iface, images)))
    values: dict[str, Any] = {"stream": iface.decoupled, "exclude_input_in_output": True}
    values.update(dict.fromkeys(RETURN_SWITCHES, True))
    if iface.kind is Interface.VLLM:
        values["sampling_parameters"] = json.dumps(_vllm_sampling(iface, params, structured_key))
    else:
        values.update(sampling_values(iface, params))
        if params.stop:
            values["stop_words"] = [s.encode("utf-8") for s in params.stop]
        values.update(_guided_tensors(params))
    if params.response_format is not None and not supports_structured_output(iface):
        raise InvalidInput(f"model '{iface.model}' has no guided decoding inputs: it cannot give structured output")
    for name, value in values.items():
        if name in iface.inputs:
            inputs.append(_tensor(iface, name, value if isinstance(value, list) else [value]))
        elif name in _SAMPLING:  # stop words are enforced here in any case (tritonmm.interfaces.answers)
            _unsupported(iface, name)
    return inputs, _outputs(iface, {t.spec.name for t in inputs})


def generate_body(iface: ModelInterface, prompt: str, params: ChatParams, structured_key: str) -> dict[str, Any]:
    """The JSON body of a ``generate_stream`` request."""
    body: dict[str, Any] = {iface.text_input: prompt}
    for name in ("stream", "exclude_input_in_output", *RETURN_SWITCHES):
        if name in iface.inputs:
            body[name] = True
    if "sampling_parameters" in iface.inputs:
        body["sampling_parameters"] = json.dumps(_vllm_sampling(iface, params, structured_key))
        return body
    parameters = {}
    for name, value in sampling_values(iface, params).items():
        if name in iface.inputs:
            body[name] = value
        else:
            parameters[name] = value
    if params.response_format is not None and not supports_structured_output(iface):
        raise InvalidInput(f"model '{iface.model}' has no guided decoding inputs: it cannot give structured output")
    body.update({name: value.decode() for name, value in _guided_tensors(params).items()})
    if parameters:
        body["parameters"] = parameters
    return body


def _vllm_sampling(iface: ModelInterface, params: ChatParams, structured_key: str) -> dict[str, Any]:
    sampling = sampling_values(iface, params)
    if params.stop:
        sampling["stop"] = list(params.stop)
    form = params.response_format
    if form is not None:
        guide = {"json": form.schema()} if form.kind == RESPONSE_JSON_SCHEMA else {"json_object": True}
        sampling[structured_key] = json.dumps(guide)
    return sampling


def _guided_tensors(params: ChatParams) -> dict[str, Any]:
    form = params.response_format
    if form is None:
        return {}
    if form.kind == RESPONSE_JSON_SCHEMA:
        return {"guided_decoding_guide_type": b"json_schema", "guided_decoding_guide": form.schema_json.encode()}
    return {"guided_decoding_guide_type": b"json"}


def _image_values(iface: ModelInterface, images: list[bytes]) -> list[bytes]:
    if iface.image_input == "image_url_input":  # TensorRT-LLM decodes this prefix inline, and fetches anything else
        return [b"data:image/jpeg;base64," + base64.b64encode(images[0])]
    return [base64.b64encode(image) for image in images]  # vLLM: each element a base64 string


def _tensor(iface: ModelInterface, name: str, values: list) -> ShapedTensor:
    spec = iface.inputs[name]
    dims = [len(values) if d == -1 else d for d in spec.dims] or [1]
    shape = ([1] if iface.batched else []) + dims
    return ShapedTensor(spec, tuple(_typed(spec.triton_dtype, v) for v in values), tuple(shape))


def _typed(dtype: str, value: Any) -> Any:
    if dtype == "TYPE_STRING":
        return value if isinstance(value, bytes) else str(value).encode("utf-8")
    if dtype == "TYPE_BOOL":
        return bool(value)
    if dtype.startswith(("TYPE_FP", "TYPE_BF")):
        return float(value)
    return int(value)


def _outputs(iface: ModelInterface, sent: set[str]) -> list[str]:
    """text_output, and each extra output whose switch was sent (an ensemble fails on an
    output asked for and never produced)."""
    extra = [out for switch, out in RETURN_SWITCHES.items() if switch in sent and out in iface.outputs]
    return [iface.text_output, *extra]


def _unsupported(iface: ModelInterface, name: str) -> None:
    if (iface.model, name) not in _warned:
        _warned.add((iface.model, name))
        LOG.warning("model '%s' (%s) has no '%s' input: that setting is not applied", iface.model, iface.label, name)
