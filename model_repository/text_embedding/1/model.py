# SPDX-License-Identifier: Apache-2.0
"""Triton side of the text-embedding model: one text per batch row in, one vector out.

All the work is in ``tritonmm_server.embedding_engine``; this file only adapts it
to the python-backend API. Dynamic batching hands ``execute`` several requests at
once: each is validated on its own (a bad one gets its own INVALID_ARG response),
then the rows of the good ones share one forward pass and are split back in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers.utils import logging as transformers_logging

from tritonmm.contract import (
    EMBED_INPUT_TYPE,
    EMBED_INPUTS,
    EMBED_OUTPUTS,
    EMBED_TEXT,
    EMBED_TOKENS,
    EMBED_VECTOR,
    INVALID_INPUT_PREFIX,
    KEY_CONTEXT_SIZE,
    KEY_DOCUMENT_PREFIX,
    KEY_LONG_INPUT,
    KEY_MODEL_PATH,
    KEY_QUERY_PREFIX,
    LONG_INPUT_MEAN,
    LONG_INPUT_TRUNCATE,
    Capabilities,
    TensorSpec,
)
from tritonmm_server.embedding_engine import EmbeddingEngine, TokenizedText
from tritonmm_server.errors import InputError


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self._name = args["model_name"]
        config = json.loads(args["model_config"])
        _check_config(config)
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        model_path = params.get(KEY_MODEL_PATH, "")
        if not model_path:
            raise pb_utils.TritonModelException(
                f"{KEY_MODEL_PATH} is empty: start the server with the launcher or set it to a checkpoint directory"
            )
        if not Path(model_path).is_dir():
            raise pb_utils.TritonModelException(f"{KEY_MODEL_PATH} {model_path!r} is not a directory")
        try:
            capabilities = Capabilities.from_parameters(params)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None
        long_input = params.get(KEY_LONG_INPUT) or LONG_INPUT_MEAN
        if long_input not in (LONG_INPUT_MEAN, LONG_INPUT_TRUNCATE):
            raise pb_utils.TritonModelException(
                f"{KEY_LONG_INPUT} must be {LONG_INPUT_MEAN!r} or {LONG_INPUT_TRUNCATE!r}, got {long_input!r}"
            )
        transformers_logging.disable_progress_bar()  # tqdm bars would garble the server log
        try:
            self._engine = EmbeddingEngine(
                model_path,
                query_prefix=params.get(KEY_QUERY_PREFIX, ""),
                document_prefix=params.get(KEY_DOCUMENT_PREFIX, ""),
                long_input=long_input,
            )
        except ValueError as exc:  # e.g. a window too small for the special tokens
            raise pb_utils.TritonModelException(f"{model_path}: {exc}") from None
        self._engine.warm_up()
        if capabilities.context_size != self._engine.context_size:
            pb_utils.Logger.log_warn(
                f"{KEY_CONTEXT_SIZE} says {capabilities.context_size} but the checkpoint's window is "
                f"{self._engine.context_size}; clients will budget with the former"
            )
        pb_utils.Logger.log_info(
            f"{self._name}: loaded {model_path} ({self._engine.architecture}, "
            f"{self._engine.dimensions} dimensions, window {self._engine.context_size}, "
            f"long input {self._engine.long_input}, weights {capabilities.weights})"
        )

    def execute(self, requests: list) -> list:
        responses: list[Any] = [None] * len(requests)
        accepted: list[tuple[int, list[TokenizedText]]] = []
        for index, request in enumerate(requests):
            try:
                accepted.append((index, self._tokenize(request)))
            except InputError as exc:
                responses[index] = _error(INVALID_INPUT_PREFIX + str(exc), pb_utils.TritonError.INVALID_ARG)
            except Exception as exc:
                responses[index] = self._internal(exc)
        try:
            vectors = self._engine.embed_tokenized([item for _, items in accepted for item in items])
            start = 0
            for index, items in accepted:
                rows = vectors[start : start + len(items)]
                tokens = np.array([[item.tokens] for item in items], dtype=np.int32)
                start += len(items)
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(EMBED_VECTOR.name, rows),
                        pb_utils.Tensor(EMBED_TOKENS.name, tokens),
                    ]
                )
        except Exception as exc:
            failure = self._internal(exc)
            for index, _ in accepted:
                responses[index] = failure
        return responses

    def _tokenize(self, request: Any) -> list[TokenizedText]:
        texts = _rows(request, EMBED_TEXT)
        if texts is None:
            raise InputError(f"{EMBED_TEXT.name} is required")
        return self._engine.tokenize(texts, _rows(request, EMBED_INPUT_TYPE))  # None: all "document"

    def _internal(self, exc: Exception) -> Any:
        pb_utils.Logger.log_error(f"{self._name}: request failed: {type(exc).__name__}: {exc}")
        return _error(str(exc) or type(exc).__name__, pb_utils.TritonError.INTERNAL)


def _check_config(config: dict[str, Any]) -> None:
    """Refuse to load with a config that does not match the contract the plugin relies on."""
    if pb_utils.using_decoupled_model_transaction_policy(config):
        raise pb_utils.TritonModelException("the text-embedding model must not be decoupled: one response per request")
    if int(config.get("max_batch_size", 0)) < 1:
        raise pb_utils.TritonModelException("the text-embedding model needs max_batch_size >= 1: one text per row")
    for section, specs in (("input", EMBED_INPUTS), ("output", EMBED_OUTPUTS)):
        declared = {t["name"]: t for t in config.get(section, [])}
        expected = {s.name: s for s in specs}
        if declared.keys() != expected.keys():
            raise pb_utils.TritonModelException(
                f"config {section}s are {sorted(declared)}, the contract says {sorted(expected)}"
            )
        for name, spec in expected.items():
            tensor = declared[name]
            found = (tensor["data_type"], tuple(int(d) for d in tensor["dims"]), bool(tensor.get("optional", False)))
            if found != (spec.triton_dtype, spec.dims, spec.optional):
                raise pb_utils.TritonModelException(
                    f"config {section} {name} is (dtype, dims, optional) {found}, the contract says "
                    f"{(spec.triton_dtype, spec.dims, spec.optional)}"
                )


def _rows(request: Any, spec: TensorSpec) -> list[bytes] | None:
    """One bytes object per batch row, or None when the (optional) tensor is absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
    return None if tensor is None else [bytes(item) for item in tensor.as_numpy().reshape(-1)]


def _error(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
