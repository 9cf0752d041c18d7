# SPDX-License-Identifier: Apache-2.0
"""Triton side of the chat model: tensors in, one response per generated token out.

All the work is in ``tritonmm_server.engines.chat.engine`` and the modules beside it;
this file only adapts it to the decoupled python-backend API. Each request has a
thread of its own (``tritonmm_server.backend.streaming.StreamingModel``), which
streams the tokens the engine's shared decoding batch gives it
(``tritonmm_server.engines.chat.batching``; ``tmm.batching``). The thread limit is
the batch's places plus its waiting line, so that "busy" comes from the batch.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    BUSY_PREFIX,
    CHAT_AUDIOS,
    CHAT_COMPLETION_TOKENS,
    CHAT_DOCUMENTS,
    CHAT_FINISH_REASON,
    CHAT_IMAGES,
    CHAT_INPUTS,
    CHAT_MESSAGES,
    CHAT_OUTPUTS,
    CHAT_PARAMS,
    CHAT_PROMPT_TOKENS,
    CHAT_TEXT,
    CHAT_TOOL_CALLS,
    CHAT_TOOLS,
    CHAT_VIDEOS,
    FINISH_CANCELLED,
    KEY_DOCUMENT_DPI,
    KEY_DOCUMENT_MAX_PAGES,
    KEY_DOCUMENT_MAX_SIDE,
    KEY_MAX_CONCURRENT_REQUESTS,
    KEY_VIDEO_FPS,
    KEY_VIDEO_MAX_FRAMES,
    Feature,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, warn_context_size
from tritonmm_server.backend.responses import cancelled_response, error_response, rows, tensor, texts
from tritonmm_server.backend.streaming import StreamingModel
from tritonmm_server.engines.chat.batching import Busy
from tritonmm_server.engines.chat.engine import ChatEngine
from tritonmm_server.engines.chat.limits import batch_limits
from tritonmm_server.engines.chat.media import DEFAULT_DOCUMENT_LIMITS, DocumentLimits
from tritonmm_server.engines.chat.params import parse_params


class TritonPythonModel(StreamingModel):
    thread_name = "chat-request"

    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "chat", CHAT_INPUTS, CHAT_OUTPUTS, decoupled=True)
        self.configure(setup)
        capabilities = setup.capabilities
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            limits = batch_limits(setup.parameters, device)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        self._engine = ChatEngine(
            setup.model_path,
            video_max_frames=setup.positive(KEY_VIDEO_MAX_FRAMES),
            video_fps=setup.positive(KEY_VIDEO_FPS, kind=float),
            max_images=capabilities.max_images,
            native_audio=Feature.AUDIO in capabilities.features,
            batching=limits,
            device=device.type,
            tool_call_family=capabilities.tool_call_family,
            thinking_switch=capabilities.thinking_switch,
            documents=DocumentLimits(
                max_pages=setup.positive(KEY_DOCUMENT_MAX_PAGES, DEFAULT_DOCUMENT_LIMITS.max_pages),
                dpi=setup.positive(KEY_DOCUMENT_DPI, DEFAULT_DOCUMENT_LIMITS.dpi, kind=float),
                max_side=setup.positive(KEY_DOCUMENT_MAX_SIDE, DEFAULT_DOCUMENT_LIMITS.max_side),
            ),
        )
        batching = self._engine.batching
        if batching is not None and KEY_MAX_CONCURRENT_REQUESTS not in setup.parameters:
            # Every running or waiting request has its thread: the batch's own waiting limit decides "busy".
            self.max_concurrent_requests = batching.max_sequences + batching.max_waiting
        self._engine.warm_up()
        warn_context_size(setup, self._engine.context_size)
        audio = (
            f"native audio up to {self._engine.max_audio_seconds:g} s"
            if self._engine.native_audio
            else "no native audio"
        )
        tools = f"{self._engine.tool_call_family} tool calls" if self._engine.tool_call_family else "no tool calls"
        if batching is None:
            how = "each request decodes alone"
        else:
            how = (
                f"batching up to {batching.max_sequences} sequences, {batching.max_waiting} waiting, "
                f"{batching.kv_cache_bytes / 2**20:.0f} MiB key/value cache"
            )
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {self._engine.name} ({self._engine.architecture} on {device}, "
            f"context {self._engine.context_size}, {audio}, {tools}, weights {capabilities.weights}; {how})"
        )

    def finalize(self) -> None:
        super().finalize()
        self._engine.close()

    def respond(self, request: Any, sender: Any) -> Any:
        messages = texts(request, CHAT_MESSAGES)
        if len(messages) != 1:
            raise InputError(f"{CHAT_MESSAGES.name} is required and must hold exactly one JSON document")
        raw_params = texts(request, CHAT_PARAMS)
        params = parse_params(raw_params[0] if raw_params else None)
        media = (rows(request, spec) or [] for spec in (CHAT_IMAGES, CHAT_VIDEOS, CHAT_AUDIOS, CHAT_DOCUMENTS))
        tools = texts(request, CHAT_TOOLS)
        prepared = self._engine.prepare(
            messages[0], *media, tools_json=tools[0] if tools else None, enable_thinking=params.enable_thinking
        )
        # A schema that cannot be enforced is refused here, before anything is generated.
        constraint = self._engine.constraint(params.response_format) if params.response_format else None
        try:
            generation = self._engine.generate(prepared, params, request.is_cancelled, constraint)
        except Busy as exc:
            return error_response(f"{BUSY_PREFIX}{exc}", pb_utils.TritonError.UNAVAILABLE)
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
                tensor(CHAT_TOOL_CALLS, _calls_json(generation.tool_calls)),
            ]
        )


def _calls_json(calls: Any) -> str:
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments_json} for c in calls], ensure_ascii=False)
