"""Shared by the interface fixture models (copied next to each model.py): the engine, called by BLS.

``generate`` yields one dict per generated token (``delta``, ``piece``, ``total``,
``prompt_tokens``, ``finish`` on the last) from the ``tiny_llm_engine`` fixture model;
an engine error raises ``RuntimeError`` with its message. Also the small helpers every
fixture needs to read inputs and write outputs the way its upstream model does.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

ENGINE = "tiny_llm_engine"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_OUTPUTS = ["DELTA", "PIECE", "TOTAL", "PROMPT_TOKENS", "FINISH"]


def generate(prompt, images, params):
    inputs = [
        pb_utils.Tensor("PROMPT", np.array([prompt.encode("utf-8")], dtype=np.object_)),
        pb_utils.Tensor("PARAMS_JSON", np.array([json.dumps(params).encode()], dtype=np.object_)),
    ]
    if images:
        inputs.append(pb_utils.Tensor("IMAGES", np.array(images, dtype=np.object_)))
    request = pb_utils.InferenceRequest(model_name=ENGINE, inputs=inputs, requested_output_names=_OUTPUTS)
    for response in request.exec(decoupled=True):
        if response.has_error():
            raise RuntimeError(response.error().message())
        if not response.output_tensors():
            continue
        out = {t.name(): t.as_numpy().reshape(-1)[0] for t in response.output_tensors()}
        yield {
            "delta": out["DELTA"].decode("utf-8"),
            "piece": out["PIECE"].decode("utf-8"),
            "total": out["TOTAL"].decode("utf-8"),
            "prompt_tokens": int(out["PROMPT_TOKENS"]),
            "finish": out["FINISH"].decode(),
        }


def value(request, name, default=None):
    """The first element of an input (batch dimension or not), or ``default`` when it is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    first = tensor.as_numpy().reshape(-1)[0]
    return first.decode("utf-8") if isinstance(first, bytes) else first.item()


def values(request, name):
    """Every element of an input, in order ([] when absent)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return [] if tensor is None else list(tensor.as_numpy().reshape(-1))


def tensor(name, items, dtype, batched=False):
    array = np.array(items, dtype=dtype)
    return pb_utils.Tensor(name, array.reshape(1, -1) if batched else array)


def error(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def config_parameter(args, key, default=""):
    parameters = json.loads(args["model_config"]).get("parameters", {})
    return parameters.get(key, {}).get("string_value", default)
