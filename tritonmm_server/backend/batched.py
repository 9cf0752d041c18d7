# SPDX-License-Identifier: Apache-2.0
"""``execute`` for the dynamically batched models (text_embedding, rerank, multimodal_embedding).

Each is non-decoupled with dynamic batching: a request carries n rows (one text, one
(query, document) pair, one text or image), Triton hands ``execute`` several requests
at once, and each gets exactly one response. A subclass validates one request in
:meth:`~BatchedModel.prepare` (an :class:`InputError` gives that request alone an
INVALID_ARG response with the contract's prefix) and computes the rows of all the good
requests at once in :meth:`~BatchedModel.compute`; the outputs are split back per
request in order. Nothing is ever raised out of ``execute``.

Importable only inside the python-backend stub (it needs ``triton_python_backend_utils``).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import TensorSpec
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.responses import input_error_response, internal_error_response

__all__ = ["BatchedModel"]

ItemT = TypeVar("ItemT")


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
