# SPDX-License-Identifier: Apache-2.0
"""Triton side of the speech-to-text model: one audio file in, its transcript out.

All the work is in ``tritonmm_server.engines.asr``; this file only adapts it to the
python-backend API. Not batched and not decoupled: each request gets one response,
and a bad request gets its own INVALID_ARG error without affecting the others
(``tritonmm_server.backend.unbatched.UnbatchedModel``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    ASR_AUDIO,
    ASR_DURATION,
    ASR_INPUTS,
    ASR_LANGUAGE,
    ASR_OUTPUTS,
    ASR_PARAMS,
    ASR_SEGMENTS,
    ASR_TEXT,
    KEY_LANGUAGES,
    TensorSpec,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, start_engine
from tritonmm_server.backend.responses import rows
from tritonmm_server.backend.unbatched import UnbatchedModel
from tritonmm_server.engines.asr import Cancelled, load_engine, parse_options


class TritonPythonModel(UnbatchedModel):
    cancelled_errors = (Cancelled,)

    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "speech-to-text", ASR_INPUTS, ASR_OUTPUTS)
        self.name = setup.name
        self._engine = start_engine(setup, load_engine)
        declared = setup.capabilities.languages
        if declared and set(declared) != set(self._engine.languages):
            # The plugin offers the declared list; a language missing here fails each request that picks it.
            pb_utils.Logger.log_warn(
                f"{KEY_LANGUAGES} lists {','.join(declared)} but {setup.model_path} transcribes "
                f"{','.join(self._engine.languages)}"
            )
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {setup.model_path} (Whisper on {self._engine.runtime}, {self._engine.device}, "
            f"languages {','.join(self._engine.languages)}, weights {setup.capabilities.weights})"
        )

    def answer(self, request: Any) -> dict[TensorSpec, np.ndarray]:
        audio = rows(request, ASR_AUDIO)
        if not audio:
            raise InputError(f"{ASR_AUDIO.name} is required")
        params = rows(request, ASR_PARAMS)
        options = parse_options(params[0] if params else None)
        transcript = self._engine.transcribe(audio[0], options, request.is_cancelled)
        return {
            ASR_TEXT: _text(transcript.text),
            ASR_SEGMENTS: _text(transcript.segments_json()),
            ASR_LANGUAGE: _text(transcript.language),
            ASR_DURATION: np.array([transcript.duration], dtype=np.float32),
        }


def _text(value: str) -> np.ndarray:
    return np.array([value.encode("utf-8")], dtype=np.object_)
