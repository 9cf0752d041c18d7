# SPDX-License-Identifier: Apache-2.0
"""What every adapter reads from a request and answers with: the one module they share.

* :func:`rows` and :func:`texts`: an input tensor as bytes per row, or as strings;
* :func:`tensor`: an output tensor holding one value;
* the error responses every bundled model answers with: :func:`error_response`,
  :func:`input_error_response` (INVALID_ARG with the contract's ``invalid input: ``
  prefix: the user's input is wrong), :func:`internal_error_response` (INTERNAL,
  logged under the model's name), :func:`cancelled_response` (CANCELLED) and
  :func:`busy_response` (UNAVAILABLE with the contract's ``busy: `` prefix);
* :func:`send_final`: the last response of a decoupled request, with the FINAL flag.

Importable only inside the python-backend stub (it needs ``triton_python_backend_utils``),
or under a stand-in of it in the unit tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import BUSY_PREFIX, INVALID_INPUT_PREFIX, KEY_MAX_CONCURRENT_REQUESTS, TensorSpec
from tritonmm_server.backend.errors import InputError

__all__ = [
    "busy_response",
    "cancelled_response",
    "error_response",
    "input_error_response",
    "internal_error_response",
    "rows",
    "send_final",
    "tensor",
    "texts",
]

_NUMPY_DTYPES = {"TYPE_STRING": np.object_, "TYPE_INT32": np.int32}


def rows(request: Any, spec: TensorSpec) -> list[bytes] | None:
    """One bytes object per batch row, or None when the (optional) tensor is absent."""
    found = pb_utils.get_input_tensor_by_name(request, spec.name)
    return None if found is None else [bytes(item) for item in found.as_numpy().reshape(-1)]


def texts(request: Any, spec: TensorSpec) -> list[str]:
    """The strings of an input tensor, [] when it is absent; InputError when one is not UTF-8."""
    try:
        return [blob.decode("utf-8") for blob in rows(request, spec) or []]
    except UnicodeDecodeError as exc:
        raise InputError(f"{spec.name} is not valid UTF-8: {exc}") from None


def tensor(spec: TensorSpec, value: str | bytes | int) -> Any:
    """An output tensor holding one value."""
    return pb_utils.Tensor(spec.name, np.array([value], dtype=_NUMPY_DTYPES[spec.triton_dtype]))


def error_response(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def input_error_response(exc: InputError) -> Any:
    """INVALID_ARG for a bad request, with the prefix that tells the plugin it is the user's input."""
    return error_response(INVALID_INPUT_PREFIX + str(exc), pb_utils.TritonError.INVALID_ARG)


def internal_error_response(name: str, exc: Exception) -> Any:
    """INTERNAL for anything else that went wrong, logged under the model's name."""
    pb_utils.Logger.log_error(f"{name}: request failed: {type(exc).__name__}: {exc}")
    return error_response(str(exc) or type(exc).__name__, pb_utils.TritonError.INTERNAL)


def cancelled_response() -> Any:
    return error_response("the request was cancelled", pb_utils.TritonError.CANCELLED)


def busy_response(name: str, limit: int) -> Any:
    """UNAVAILABLE for a request refused at once because ``limit`` requests are running: retry later."""
    return error_response(
        f"{BUSY_PREFIX}model {name} is serving its limit of {limit} concurrent requests "
        f"({KEY_MAX_CONCURRENT_REQUESTS}); retry later",
        pb_utils.TritonError.UNAVAILABLE,
    )


def send_final(sender: Any, response: Any) -> None:
    """Send the last response of a decoupled request; a closed sender is only logged."""
    try:
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception as exc:  # the sender is closed or the client is gone: nobody left to tell
        pb_utils.Logger.log_warn(f"could not send a final response: {exc}")
