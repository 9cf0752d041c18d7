# SPDX-License-Identifier: Apache-2.0
"""Triton side of the text-embedding model: one text per batch row in, one vector out.

All the work is in ``tritonmm_server.engines.embedding``; this file only adapts it
to the python-backend API. Dynamic batching hands ``execute`` several requests at
once: each is validated on its own (a bad one gets its own INVALID_ARG response),
then the rows of the good ones share one forward pass and are split back in order
(``tritonmm_server.backend.batched``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    EMBED_INPUT_TYPE,
    EMBED_INPUTS,
    EMBED_OUTPUTS,
    EMBED_TEXT,
    EMBED_TOKENS,
    EMBED_VECTOR,
    KEY_DOCUMENT_PREFIX,
    KEY_LONG_INPUT,
    KEY_QUERY_PREFIX,
    LONG_INPUT_MEAN,
    LONG_INPUT_TRUNCATE,
    TensorSpec,
)
from tritonmm_server.backend.batched import BatchedModel
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, start_engine, warn_context_size
from tritonmm_server.backend.responses import rows
from tritonmm_server.engines.embedding import EmbeddingEngine, TokenizedText


class TritonPythonModel(BatchedModel[TokenizedText]):
    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "text-embedding", EMBED_INPUTS, EMBED_OUTPUTS, row="one text")
        self.name = setup.name
        params = setup.parameters
        long_input = params.get(KEY_LONG_INPUT) or LONG_INPUT_MEAN
        if long_input not in (LONG_INPUT_MEAN, LONG_INPUT_TRUNCATE):
            raise pb_utils.TritonModelException(
                f"{KEY_LONG_INPUT} must be {LONG_INPUT_MEAN!r} or {LONG_INPUT_TRUNCATE!r}, got {long_input!r}"
            )
        self._engine = start_engine(
            setup,
            lambda path: EmbeddingEngine(
                path,
                query_prefix=params.get(KEY_QUERY_PREFIX, ""),
                document_prefix=params.get(KEY_DOCUMENT_PREFIX, ""),
                long_input=long_input,
            ),
        )
        warn_context_size(setup, self._engine.context_size)
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {setup.model_path} ({self._engine.architecture}, "
            f"{self._engine.dimensions} dimensions, window {self._engine.context_size}, "
            f"long input {self._engine.long_input}, weights {setup.capabilities.weights})"
        )

    def prepare(self, request: Any) -> list[TokenizedText]:
        texts = rows(request, EMBED_TEXT)
        if texts is None:
            raise InputError(f"{EMBED_TEXT.name} is required")
        return self._engine.tokenize(texts, rows(request, EMBED_INPUT_TYPE))  # None: all "document"

    def compute(self, items: list[TokenizedText]) -> dict[TensorSpec, np.ndarray]:
        return {
            EMBED_VECTOR: self._engine.embed_tokenized(items),
            EMBED_TOKENS: np.array([[item.tokens] for item in items], dtype=np.int32).reshape(-1, 1),
        }
