# SPDX-License-Identifier: Apache-2.0
"""Triton side of the chat model: tensors in, one response per generated token out.

All the work is in ``tritonmm_server.engines.chat.engine`` and the modules beside it;
this file only adapts it to the decoupled python-backend API. Each request runs
in its own thread, so one instance serves concurrent streams
(``tritonmm_server.backend.streaming.StreamingModel``).
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    CHAT_AUDIOS,
    CHAT_COMPLETION_TOKENS,
    CHAT_FINISH_REASON,
    CHAT_IMAGES,
    CHAT_INPUTS,
    CHAT_MESSAGES,
    CHAT_OUTPUTS,
    CHAT_PARAMS,
    CHAT_PROMPT_TOKENS,
    CHAT_TEXT,
    CHAT_VIDEOS,
    FINISH_CANCELLED,
    KEY_VIDEO_FPS,
    KEY_VIDEO_MAX_FRAMES,
    Feature,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, warn_context_size
from tritonmm_server.backend.responses import cancelled_response, rows, tensor, texts
from tritonmm_server.backend.streaming import StreamingModel
from tritonmm_server.engines.chat.engine import ChatEngine
from tritonmm_server.engines.chat.params import parse_params


class TritonPythonModel(StreamingModel):
    thread_name = "chat-request"

    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "chat", CHAT_INPUTS, CHAT_OUTPUTS, decoupled=True)
        self.configure(setup)
        capabilities = setup.capabilities
        self._engine = ChatEngine(
            setup.model_path,
            video_max_frames=setup.positive(KEY_VIDEO_MAX_FRAMES),
            video_fps=setup.positive(KEY_VIDEO_FPS, kind=float),
            max_images=capabilities.max_images,
            native_audio=Feature.AUDIO in capabilities.features,
        )
        self._engine.warm_up()
        warn_context_size(setup, self._engine.context_size)
        audio = (
            f"native audio up to {self._engine.max_audio_seconds:g} s"
            if self._engine.native_audio
            else "no native audio"
        )
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {self._engine.name} ({self._engine.architecture}, "
            f"context {self._engine.context_size}, {audio}, weights {capabilities.weights})"
        )

    def respond(self, request: Any, sender: Any) -> Any:
        messages = texts(request, CHAT_MESSAGES)
        if len(messages) != 1:
            raise InputError(f"{CHAT_MESSAGES.name} is required and must hold exactly one JSON document")
        raw_params = texts(request, CHAT_PARAMS)
        params = parse_params(raw_params[0] if raw_params else None)
        images, videos, audios = (rows(request, spec) or [] for spec in (CHAT_IMAGES, CHAT_VIDEOS, CHAT_AUDIOS))
        prepared = self._engine.prepare(messages[0], images, videos, audios)
        generation = self._engine.generate(prepared, params, request.is_cancelled)
        try:
            for piece in generation:
                sender.send(pb_utils.InferenceResponse(output_tensors=[tensor(CHAT_TEXT, piece)]))
        finally:
            generation.close()  # a failed send leaves the loop early: stop the worker too
        if generation.finish_reason == FINISH_CANCELLED:
            pb_utils.Logger.log_info(f"{self.name}: request cancelled after {generation.completion_tokens} token(s)")
            return cancelled_response()
        return pb_utils.InferenceResponse(
            output_tensors=[
                tensor(CHAT_TEXT, ""),
                tensor(CHAT_FINISH_REASON, generation.finish_reason),
                tensor(CHAT_PROMPT_TOKENS, generation.prompt_tokens),
                tensor(CHAT_COMPLETION_TOKENS, generation.completion_tokens),
            ]
        )
