# SPDX-License-Identifier: Apache-2.0
"""Triton side of the chat model: tensors in, one response per generated token out.

All the work is in ``tritonmm_server.chat_engine`` and the modules beside it;
this file only adapts it to the decoupled python-backend API. Each request runs
in its own thread, so one instance serves concurrent streams (a blocking
``execute`` would serialise them).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
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
    INVALID_INPUT_PREFIX,
    KEY_VIDEO_FPS,
    KEY_VIDEO_MAX_FRAMES,
    Feature,
    TensorSpec,
    config_mismatch,
)
from tritonmm_server.chat_engine import ChatEngine
from tritonmm_server.chat_params import parse_params
from tritonmm_server.errors import InputError
from tritonmm_server.model_setup import read_setup, warn_context_size

FINALIZE_WAIT_S = 30.0
_NUMPY_DTYPES = {"TYPE_STRING": np.object_, "TYPE_INT32": np.int32}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self._name = args["model_name"]
        self._in_flight = 0
        self._idle = threading.Condition()
        config = json.loads(args["model_config"])
        _check_config(config)
        setup = read_setup(self._name, config)
        params, capabilities = setup.parameters, setup.capabilities
        self._engine = ChatEngine(
            setup.model_path,
            video_max_frames=_positive(params, KEY_VIDEO_MAX_FRAMES, int),
            video_fps=_positive(params, KEY_VIDEO_FPS, float),
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
            f"{self._name}: loaded {self._engine.name} ({self._engine.architecture}, "
            f"context {self._engine.context_size}, {audio}, weights {capabilities.weights})"
        )

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            with self._idle:
                self._in_flight += 1
            try:
                threading.Thread(target=self._serve, args=(request, sender), name="chat-request", daemon=True).start()
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
            final = self._generate(request, sender)
        except InputError as exc:
            final = _error(INVALID_INPUT_PREFIX + str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:
            pb_utils.Logger.log_error(f"{self._name}: request failed: {type(exc).__name__}: {exc}")
            final = _error(str(exc) or type(exc).__name__, pb_utils.TritonError.INTERNAL)
        finally:
            _send_final(sender, final)
            self._finished()

    def _generate(self, request: Any, sender: Any) -> Any:
        if request.is_cancelled():
            return _cancelled()
        messages = _texts(request, CHAT_MESSAGES)
        if len(messages) != 1:
            raise InputError(f"{CHAT_MESSAGES.name} is required and must hold exactly one JSON document")
        raw_params = _texts(request, CHAT_PARAMS)
        params = parse_params(raw_params[0] if raw_params else None)
        prepared = self._engine.prepare(
            messages[0], _blobs(request, CHAT_IMAGES), _blobs(request, CHAT_VIDEOS), _blobs(request, CHAT_AUDIOS)
        )
        generation = self._engine.generate(prepared, params, request.is_cancelled)
        try:
            for piece in generation:
                sender.send(pb_utils.InferenceResponse(output_tensors=[_tensor(CHAT_TEXT, piece)]))
        finally:
            generation.close()  # a failed send leaves the loop early: stop the worker too
        if generation.finish_reason == FINISH_CANCELLED:
            pb_utils.Logger.log_info(f"{self._name}: request cancelled after {generation.completion_tokens} token(s)")
            return _cancelled()
        return pb_utils.InferenceResponse(
            output_tensors=[
                _tensor(CHAT_TEXT, ""),
                _tensor(CHAT_FINISH_REASON, generation.finish_reason),
                _tensor(CHAT_PROMPT_TOKENS, generation.prompt_tokens),
                _tensor(CHAT_COMPLETION_TOKENS, generation.completion_tokens),
            ]
        )

    def _finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


def _check_config(config: dict[str, Any]) -> None:
    """Refuse to load with a config that does not match the contract the plugin relies on."""
    if not pb_utils.using_decoupled_model_transaction_policy(config):
        raise pb_utils.TritonModelException(
            "the chat model must be decoupled: model_transaction_policy { decoupled: true }"
        )
    problem = config_mismatch(config, CHAT_INPUTS, CHAT_OUTPUTS)
    if problem:
        raise pb_utils.TritonModelException(problem)


def _positive(params: dict[str, str], key: str, kind: Callable[[str], Any]) -> Any:
    try:
        value = kind(params[key])
    except (KeyError, ValueError):
        raise pb_utils.TritonModelException(f"{key} must be a {kind.__name__}, got {params.get(key)!r}") from None
    if value <= 0:
        raise pb_utils.TritonModelException(f"{key} must be positive, got {value}")
    return value


def _blobs(request: Any, spec: TensorSpec) -> list[bytes]:
    tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
    return [] if tensor is None else [bytes(item) for item in tensor.as_numpy().reshape(-1)]


def _texts(request: Any, spec: TensorSpec) -> list[str]:
    try:
        return [blob.decode("utf-8") for blob in _blobs(request, spec)]
    except UnicodeDecodeError as exc:
        raise InputError(f"{spec.name} is not valid UTF-8: {exc}") from None


def _tensor(spec: TensorSpec, value: str | int) -> Any:
    return pb_utils.Tensor(spec.name, np.array([value], dtype=_NUMPY_DTYPES[spec.triton_dtype]))


def _error(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def _cancelled() -> Any:
    return _error("the request was cancelled", pb_utils.TritonError.CANCELLED)


def _send_final(sender: Any, response: Any) -> None:
    try:
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception as exc:  # the sender is closed or the client is gone: nobody left to tell
        pb_utils.Logger.log_warn(f"could not send a final response: {exc}")
