# SPDX-License-Identifier: Apache-2.0
"""Triton side of the multimodal-embedding model: one text or image per batch row in, one vector out.

All the work is in ``tritonmm_server.engines.multimodal``; this file only adapts it
to the python-backend API. Dynamic batching hands ``execute`` several requests at
once: each is validated on its own (a bad one gets its own INVALID_ARG response),
then the rows of the good ones are embedded together and split back in order
(``tritonmm_server.backend.batched``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    EMBED_TOKENS,
    EMBED_VECTOR,
    MM_CONTENT,
    MM_CONTENT_TYPE,
    MM_INPUTS,
    MM_OUTPUTS,
    TensorSpec,
)
from tritonmm_server.backend.batched import BatchedModel
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, start_engine, warn_context_size
from tritonmm_server.backend.responses import rows
from tritonmm_server.engines.multimodal import MultimodalEngine, PreparedRow


class TritonPythonModel(BatchedModel[PreparedRow]):
    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "multimodal-embedding", MM_INPUTS, MM_OUTPUTS, row="one text or image")
        self.name = setup.name
        self._engine = start_engine(setup, MultimodalEngine)
        warn_context_size(setup, self._engine.context_size)
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {setup.model_path} ({self._engine.architecture}, "
            f"{self._engine.dimensions} dimensions, text window {self._engine.context_size}, "
            f"{self._engine.image_tokens} image patches, weights {setup.capabilities.weights})"
        )

    def prepare(self, request: Any) -> list[PreparedRow]:
        contents = rows(request, MM_CONTENT)
        content_types = rows(request, MM_CONTENT_TYPE)
        if contents is None or content_types is None:
            raise InputError(f"{MM_CONTENT.name} and {MM_CONTENT_TYPE.name} are required, one row each per item")
        return self._engine.prepare(contents, content_types)

    def compute(self, items: list[PreparedRow]) -> dict[TensorSpec, np.ndarray]:
        vectors, tokens = self._engine.embed_prepared(items)
        return {EMBED_VECTOR: vectors, EMBED_TOKENS: tokens.reshape(-1, 1)}
