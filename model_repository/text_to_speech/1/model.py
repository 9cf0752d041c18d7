# SPDX-License-Identifier: Apache-2.0
"""Triton side of the text-to-speech model: text in, one response per sentence of audio out.

All the work is in ``tritonmm_server.engines.tts``; this file only adapts it to the
decoupled python-backend API. Each request runs in its own thread, so one
instance serves concurrent requests (``tritonmm_server.backend.streaming.StreamingModel``).
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    KEY_VOICES,
    TTS_AUDIO,
    TTS_FORMAT,
    TTS_INPUTS,
    TTS_OUTPUTS,
    TTS_TEXT,
    TTS_VOICE,
    TensorSpec,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup
from tritonmm_server.backend.responses import cancelled_response, tensor, texts
from tritonmm_server.backend.streaming import StreamingModel
from tritonmm_server.checkpoints.piper import VoiceDirError
from tritonmm_server.engines.tts import KEY_MAX_TEXT_CHARS, KEY_MP3_KBPS, MAX_TEXT_CHARS, MP3_KBPS, TtsEngine


class TritonPythonModel(StreamingModel):
    thread_name = "tts-request"

    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "text_to_speech", TTS_INPUTS, TTS_OUTPUTS, decoupled=True)
        self.configure(setup)
        try:
            self._engine = TtsEngine(
                setup.model_path,
                max_text_chars=setup.positive(KEY_MAX_TEXT_CHARS, MAX_TEXT_CHARS),
                mp3_kbps=setup.positive(KEY_MP3_KBPS, MP3_KBPS),
            )
        except VoiceDirError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        self._engine.warm_up()
        names = [choice.name for choice in self._engine.choices]
        declared = [voice.name for voice in setup.capabilities.voices]
        if declared != names:
            # The plugin offers the declared list; a name missing here fails each request that picks it.
            pb_utils.Logger.log_warn(f"{KEY_VOICES} lists {declared} but {setup.model_path} has the voices {names}")
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {len(names)} Piper voice(s) from {setup.model_path} "
            f"(default {self._engine.default_voice.name}, {self._engine.device})"
        )

    def respond(self, request: Any, sender: Any) -> Any:
        text = texts(request, TTS_TEXT)
        if len(text) != 1:
            raise InputError(f"{TTS_TEXT.name} is required and must hold exactly one text")
        voice = _optional_text(request, TTS_VOICE)
        audio_format = _optional_text(request, TTS_FORMAT)
        synthesis = self._engine.synthesize(text[0], voice, audio_format, request.is_cancelled)
        for audio in synthesis:
            sender.send(pb_utils.InferenceResponse(output_tensors=[tensor(TTS_AUDIO, audio)]))
        if synthesis.cancelled:
            pb_utils.Logger.log_info(f"{self.name}: request cancelled after {synthesis.sentences} sentence(s)")
            return cancelled_response()
        # Every byte of audio went out above; the FINAL response only closes the stream.
        return pb_utils.InferenceResponse(output_tensors=[tensor(TTS_AUDIO, b"")])


def _optional_text(request: Any, spec: TensorSpec) -> str | None:
    values = texts(request, spec)
    if len(values) > 1:
        raise InputError(f"{spec.name} must hold one value, got {len(values)}")
    return values[0] if values else None
