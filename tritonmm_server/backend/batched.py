# SPDX-License-Identifier: Apache-2.0
"""Python-backend plumbing shared by the bundled models that answer each request once.

text_embedding and rerank are non-decoupled models with dynamic batching: a
request carries n rows (one text, one (query, document) pair), Triton hands
``execute`` several requests at once, and each gets exactly one response.
speech_to_text is non-decoupled and not batched (one audio file per request).
This module holds what their ``model.py`` files would otherwise all spell out:

* :func:`load_setup`: the config checked against the contract, its ``tmm.*``
  parameters, the checkpoint directory and the capabilities;
* :func:`rows`: one bytes object per batch row of an input tensor;
* :class:`BatchedModel`: ``execute`` itself. A subclass validates one request in
  :meth:`~BatchedModel.prepare` (an :class:`InputError` gives that request alone an
  INVALID_ARG response with the contract's prefix) and computes the rows of all
  the good requests at once in :meth:`~BatchedModel.compute`; the outputs are split
  back per request in order. Nothing is ever raised out of ``execute``;
* :class:`UnbatchedModel`: the same ``execute`` contract for models that answer
  each request on its own (:meth:`~UnbatchedModel.answer`);
* the error responses every bundled model answers with (also used by the
  decoupled models of :mod:`tritonmm_server.backend.streaming`): :func:`error_response`,
  :func:`input_error_response` (INVALID_ARG with the contract's prefix),
  :func:`internal_error_response` (INTERNAL, logged) and :func:`cancelled_response`.

Importable only inside the python-backend stub (it needs ``triton_python_backend_utils``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import INVALID_INPUT_PREFIX, TensorSpec
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import ModelSetup, check_contract, read_setup

__all__ = [
    "BatchedModel",
    "UnbatchedModel",
    "cancelled_response",
    "check_config",
    "error_response",
    "input_error_response",
    "internal_error_response",
    "load_setup",
    "rows",
]

ItemT = TypeVar("ItemT")


def load_setup(
    args: dict[str, str],
    kind: str,
    row: str | None,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    needs_model_path: bool = True,
) -> ModelSetup:
    """Check the config against the contract and read its parameters.

    ``kind`` names the model in messages ("text-embedding"), ``row`` what one batch
    row holds ("one text"), or None for a model that is not batched;
    ``needs_model_path`` as for :func:`~tritonmm_server.backend.model_setup.read_setup`.
    Raises ``TritonModelException``: the model does not load.
    """
    config = json.loads(args["model_config"])
    check_config(config, kind, row, inputs, outputs)
    return read_setup(args["model_name"], config, needs_model_path=needs_model_path)


def check_config(
    config: dict[str, Any], kind: str, row: str | None, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> None:
    """Refuse to load with a config that does not match the contract the plugin relies on.

    ``row`` None: the model must not be batched, because the contract's dims are
    then the whole request's shape (no batch dimension in front).
    """
    if pb_utils.using_decoupled_model_transaction_policy(config):
        raise pb_utils.TritonModelException(f"the {kind} model must not be decoupled: one response per request")
    max_batch_size = int(config.get("max_batch_size", 0))
    if row is None and max_batch_size != 0:
        raise pb_utils.TritonModelException(f"the {kind} model must have max_batch_size 0: it is not batched")
    if row is not None and max_batch_size < 1:
        raise pb_utils.TritonModelException(f"the {kind} model needs max_batch_size >= 1: {row} per row")
    check_contract(config, inputs, outputs)


def rows(request: Any, spec: TensorSpec) -> list[bytes] | None:
    """One bytes object per batch row, or None when the (optional) tensor is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
    return None if tensor is None else [bytes(item) for item in tensor.as_numpy().reshape(-1)]


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


class BatchedModel(Generic[ItemT]):
    """``execute`` for one-response-per-request models whose requests share one computation.

    Subclasses set :attr:`name` in ``initialize`` and implement :meth:`prepare` and
    :meth:`compute`.
    """

    name: str = "model"  # set per instance by initialize: the Triton model name, for the log

    def prepare(self, request: Any) -> list[ItemT]:
        """Validate one request and turn its rows into items; InputError names what is wrong."""
        raise NotImplementedError

    def compute(self, items: list[ItemT]) -> dict[TensorSpec, np.ndarray]:
        """Each output tensor for all items at once: arrays of ``len(items)`` rows, in item order."""
        raise NotImplementedError

    def execute(self, requests: list) -> list:
        responses: list[Any] = [None] * len(requests)
        accepted: list[tuple[int, list[ItemT]]] = []
        for index, request in enumerate(requests):
            try:
                accepted.append((index, self.prepare(request)))
            except InputError as exc:
                responses[index] = input_error_response(exc)
            except Exception as exc:
                responses[index] = internal_error_response(self.name, exc)
        if not accepted:
            return responses
        try:
            outputs = self.compute([item for _, items in accepted for item in items])
            start = 0
            for index, items in accepted:
                stop = start + len(items)
                tensors = [pb_utils.Tensor(spec.name, array[start:stop]) for spec, array in outputs.items()]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        except Exception as exc:
            failure = internal_error_response(self.name, exc)
            for index, _ in accepted:
                responses[index] = failure
        return responses


class UnbatchedModel:
    """``execute`` for one-response-per-request models that answer each request on its own.

    Subclasses set :attr:`name` in ``initialize`` and implement :meth:`answer`. A
    request that fails gets its own error response; the others are unaffected.
    """

    name: str = "model"  # set per instance by initialize: the Triton model name, for the log
    # What answer() raises when it stopped because the client cancelled (request.is_cancelled()).
    cancelled_errors: tuple[type[Exception], ...] = ()

    def answer(self, request: Any) -> dict[TensorSpec, np.ndarray]:
        """The output tensors of one request; InputError names what is wrong with it."""
        raise NotImplementedError

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                tensors = [pb_utils.Tensor(spec.name, array) for spec, array in self.answer(request).items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except InputError as exc:
                responses.append(input_error_response(exc))
            except self.cancelled_errors:
                responses.append(cancelled_response())
            except Exception as exc:
                responses.append(internal_error_response(self.name, exc))
        return responses
