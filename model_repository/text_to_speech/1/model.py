# SPDX-License-Identifier: Apache-2.0
"""Triton side of the text-to-speech model: text in, one response per sentence of audio out.

All the work is in ``tritonmm_server.tts_engine``; this file only adapts it to the
decoupled python-backend API. Each request runs in its own thread, so one
instance serves concurrent requests (a blocking ``execute`` would serialise them).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    INVALID_INPUT_PREFIX,
    KEY_VOICES,
    TTS_AUDIO,
    TTS_FORMAT,
    TTS_INPUTS,
    TTS_OUTPUTS,
    TTS_TEXT,
    TTS_VOICE,
    TensorSpec,
    config_mismatch,
)
from tritonmm_server.errors import InputError
from tritonmm_server.model_setup import read_setup
from tritonmm_server.piper_voices import VoiceDirError
from tritonmm_server.tts_engine import KEY_MAX_TEXT_CHARS, KEY_MP3_KBPS, MAX_TEXT_CHARS, MP3_KBPS, TtsEngine

FINALIZE_WAIT_S = 30.0


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self._name = args["model_name"]
        self._in_flight = 0
        self._idle = threading.Condition()
        config = json.loads(args["model_config"])
        _check_config(config)
        setup = read_setup(self._name, config)
        params = setup.parameters
        try:
            self._engine = TtsEngine(
                setup.model_path,
                max_text_chars=_positive_int(params, KEY_MAX_TEXT_CHARS, MAX_TEXT_CHARS),
                mp3_kbps=_positive_int(params, KEY_MP3_KBPS, MP3_KBPS),
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
            f"{self._name}: loaded {len(names)} Piper voice(s) from {setup.model_path} "
            f"(default {self._engine.default_voice.name}, {self._engine.device})"
        )

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            with self._idle:
                self._in_flight += 1
            try:
                threading.Thread(target=self._serve, args=(request, sender), name="tts-request", daemon=True).start()
            except Exception as exc:  # e.g. no thread can be started: the client must still get FINAL
                _send_final(sender, _error(f"cannot start the request: {exc}", pb_utils.TritonError.INTERNAL))
                self._finished()
        return None

    def finalize(self) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout=FINALIZE_WAIT_S):
                pb_utils.Logger.log_warn(f"{self._name}: unloading with {self._in_flight} request(s) still running")

    def _serve(self, request: Any, sender: Any) -> None:
        final = _error("the request ended without a result", pb_utils.TritonError.INTERNAL)
        try:
            final = self._synthesize(request, sender)
        except InputError as exc:
            final = _error(INVALID_INPUT_PREFIX + str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:
            pb_utils.Logger.log_error(f"{self._name}: request failed: {type(exc).__name__}: {exc}")
            final = _error(str(exc) or type(exc).__name__, pb_utils.TritonError.INTERNAL)
        finally:
            _send_final(sender, final)
            self._finished()

    def _synthesize(self, request: Any, sender: Any) -> Any:
        if request.is_cancelled():
            return _cancelled()
        texts = _texts(request, TTS_TEXT)
        if len(texts) != 1:
            raise InputError(f"{TTS_TEXT.name} is required and must hold exactly one text")
        voice = _optional_text(request, TTS_VOICE)
        audio_format = _optional_text(request, TTS_FORMAT)
        synthesis = self._engine.synthesize(texts[0], voice, audio_format, request.is_cancelled)
        for audio in synthesis:
            sender.send(pb_utils.InferenceResponse(output_tensors=[_audio(audio)]))
        if synthesis.cancelled:
            pb_utils.Logger.log_info(f"{self._name}: request cancelled after {synthesis.sentences} sentence(s)")
            return _cancelled()
        # Every byte of audio went out above; the FINAL response only closes the stream.
        return pb_utils.InferenceResponse(output_tensors=[_audio(b"")])

    def _finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


def _check_config(config: dict[str, Any]) -> None:
    """Refuse to load with a config that does not match the contract the plugin relies on."""
    if not pb_utils.using_decoupled_model_transaction_policy(config):
        raise pb_utils.TritonModelException(
            "the text_to_speech model must be decoupled: model_transaction_policy { decoupled: true }"
        )
    problem = config_mismatch(config, TTS_INPUTS, TTS_OUTPUTS)
    if problem:
        raise pb_utils.TritonModelException(problem)


def _positive_int(params: dict[str, str], key: str, default: int) -> int:
    raw = params.get(key, "")
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise pb_utils.TritonModelException(f"{key} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise pb_utils.TritonModelException(f"{key} must be positive, got {value}")
    return value


def _texts(request: Any, spec: TensorSpec) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
    if tensor is None:
        return []
    try:
        return [bytes(item).decode("utf-8") for item in tensor.as_numpy().reshape(-1)]
    except UnicodeDecodeError as exc:
        raise InputError(f"{spec.name} is not valid UTF-8: {exc}") from None


def _optional_text(request: Any, spec: TensorSpec) -> str | None:
    values = _texts(request, spec)
    if len(values) > 1:
        raise InputError(f"{spec.name} must hold one value, got {len(values)}")
    return values[0] if values else None


def _audio(data: bytes) -> Any:
    return pb_utils.Tensor(TTS_AUDIO.name, np.array([data], dtype=np.object_))


def _error(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def _cancelled() -> Any:
    return _error("the request was cancelled", pb_utils.TritonError.CANCELLED)


def _send_final(sender: Any, response: Any) -> None:
    try:
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception as exc:  # the sender is closed or the client is gone: nobody left to tell
        pb_utils.Logger.log_warn(f"could not send a final response: {exc}")
