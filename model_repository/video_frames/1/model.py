# SPDX-License-Identifier: Apache-2.0
"""Triton side of the video-frames model: one video file in, JPEG frames and their times out.

All the work is in ``tritonmm_server.engines.frames``; this file only adapts it to
the python-backend API. Not batched and not decoupled: each request gets one
response, and a bad request gets its own INVALID_ARG error without affecting the
others (``tritonmm_server.backend.unbatched.UnbatchedModel``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    KEY_VIDEO_MAX_FRAMES,
    VIDEO_DURATION,
    VIDEO_FILE,
    VIDEO_FRAMES_OUT,
    VIDEO_INPUTS,
    VIDEO_OUTPUTS,
    VIDEO_PARAMS,
    VIDEO_TIMESTAMPS,
    TensorSpec,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup
from tritonmm_server.backend.responses import rows
from tritonmm_server.backend.unbatched import UnbatchedModel
from tritonmm_server.engines.frames import extract_frames, max_count, parse_frame_options


class TritonPythonModel(UnbatchedModel):
    def initialize(self, args: dict[str, str]) -> None:
        # No weights: PyAV only.
        setup = load_setup(args, "video-frames", VIDEO_INPUTS, VIDEO_OUTPUTS, needs_model_path=False)
        self.name = setup.name
        try:
            self._max_count = max_count(setup.parameters)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        pb_utils.Logger.log_info(f"{self.name}: ready (PyAV, {KEY_VIDEO_MAX_FRAMES} {self._max_count})")

    def answer(self, request: Any) -> dict[TensorSpec, np.ndarray]:
        video = rows(request, VIDEO_FILE)
        if not video:
            raise InputError(f"{VIDEO_FILE.name} is required: the video file's bytes")
        if len(video) != 1:
            raise InputError(f"{VIDEO_FILE.name} takes exactly one video per request, got {len(video)}")
        params = rows(request, VIDEO_PARAMS)
        options = parse_frame_options(params[0] if params else None, most=self._max_count)
        frames = extract_frames(video[0], options)
        return {
            VIDEO_FRAMES_OUT: np.array(frames.jpegs, dtype=np.object_),
            VIDEO_TIMESTAMPS: np.array(frames.timestamps, dtype=np.float32),
            VIDEO_DURATION: np.array([frames.duration], dtype=np.float32),
        }
