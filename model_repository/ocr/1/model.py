# SPDX-License-Identifier: Apache-2.0
"""Triton side of the OCR model: one image file in, its text and text lines out.

All the work is in ``tritonmm_server.engines.ocr``; this file only adapts it to the
python-backend API. The model is not batched: each request carries one image and
gets one response. Each request is answered on its own, so one bad image gets its
own INVALID_ARG response and the others in the same ``execute`` call are unaffected
(``tritonmm_server.backend.unbatched.UnbatchedModel``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import OCR_IMAGE, OCR_INPUTS, OCR_LINES, OCR_OUTPUTS, OCR_TEXT, TensorSpec
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup
from tritonmm_server.backend.responses import rows
from tritonmm_server.backend.unbatched import UnbatchedModel
from tritonmm_server.engines.ocr import OcrEngine


class TritonPythonModel(UnbatchedModel):
    def initialize(self, args: dict[str, str]) -> None:
        # The weights are inside the rapidocr wheel: no checkpoint directory to read.
        setup = load_setup(args, "OCR", OCR_INPUTS, OCR_OUTPUTS, needs_model_path=False)
        self.name = setup.name
        try:
            self._engine = OcrEngine()
        except RuntimeError as exc:  # rapidocr missing, or its wheel without the model files
            raise pb_utils.TritonModelException(str(exc)) from None
        self._engine.warm_up()
        files = ", ".join(path.name for path in self._engine.model_files.values())
        pb_utils.Logger.log_info(f"{self.name}: loaded RapidOCR ({files})")

    def answer(self, request: Any) -> dict[TensorSpec, np.ndarray]:
        images = rows(request, OCR_IMAGE)
        if images is None:
            raise InputError(f"{OCR_IMAGE.name} is required: the image file bytes")
        if len(images) != 1:
            raise InputError(f"{OCR_IMAGE.name} takes exactly one image per request, got {len(images)}")
        result = self._engine.read(images[0], OCR_IMAGE.name)
        return {
            OCR_TEXT: np.array([result.text.encode()], dtype=np.object_),
            OCR_LINES: np.array([result.lines_json().encode()], dtype=np.object_),
        }
