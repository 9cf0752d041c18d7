# SPDX-License-Identifier: Apache-2.0
"""``execute`` for the models that answer each request on its own (speech_to_text, ocr, video_frames,
image_text_match): non-decoupled, not batched, one file per request.

A request that fails gets its own error response; the others in the same ``execute``
call are unaffected. Importable only inside the python-backend stub (it needs
``triton_python_backend_utils``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import TensorSpec
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.responses import cancelled_response, input_error_response, internal_error_response

__all__ = ["UnbatchedModel"]


class UnbatchedModel:
    """``execute`` for one-response-per-request models that answer each request on its own.

    Subclasses set :attr:`name` in ``initialize`` and implement :meth:`answer`.
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
