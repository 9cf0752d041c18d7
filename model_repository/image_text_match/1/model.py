# SPDX-License-Identifier: Apache-2.0
"""Triton side of the image-text match model: one image and its labels in, scores and a heat map out.

All the work is in ``tritonmm_server.engines.match``; this file only adapts it to
the python-backend API. Not batched and not decoupled: each request gets one
response, and a bad request gets its own INVALID_ARG error without affecting the
others (``tritonmm_server.backend.unbatched.UnbatchedModel``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    MATCH_HEATMAP,
    MATCH_IMAGE,
    MATCH_INPUTS,
    MATCH_LABELS,
    MATCH_OUTPUTS,
    MATCH_SCORES,
    MATCH_SIMILARITIES,
    TensorSpec,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, start_engine, warn_context_size
from tritonmm_server.backend.responses import rows
from tritonmm_server.backend.unbatched import UnbatchedModel
from tritonmm_server.engines.match import MatchEngine, parse_labels


class TritonPythonModel(UnbatchedModel):
    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "image-text-match", MATCH_INPUTS, MATCH_OUTPUTS)
        self.name = setup.name
        self._engine = start_engine(setup, MatchEngine)  # refuses a dual encoder without patch outputs (SigLIP)
        clip = self._engine.clip
        warn_context_size(setup, clip.context_size)
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {setup.model_path} ({clip.architecture}, {clip.grid_side}x{clip.grid_side} "
            f"patch grid, logit scale {self._engine.logit_scale:.1f}, weights {setup.capabilities.weights})"
        )

    def answer(self, request: Any) -> dict[TensorSpec, np.ndarray]:
        image = rows(request, MATCH_IMAGE)
        labels = rows(request, MATCH_LABELS)
        if not image or not labels:
            raise InputError(f"{MATCH_IMAGE.name} (the image file's bytes) and {MATCH_LABELS.name} are required")
        if len(image) != 1:
            raise InputError(f"{MATCH_IMAGE.name} takes exactly one image per request, got {len(image)}")
        result = self._engine.match(image[0], parse_labels(labels[0]))
        return {
            MATCH_SCORES: result.scores,
            MATCH_SIMILARITIES: result.similarities,
            MATCH_HEATMAP: np.array([result.heatmap_png], dtype=np.object_),
        }
