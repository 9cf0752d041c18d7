# SPDX-License-Identifier: Apache-2.0
"""Triton side of the rerank model: one (query, document) pair per batch row in, one score out.

All the work is in ``tritonmm_server.engines.rerank``; this file only adapts it to
the python-backend API. Dynamic batching hands ``execute`` several requests at
once: each is validated on its own (a bad one gets its own INVALID_ARG response),
then the pairs of the good ones are scored together and split back in order
(``tritonmm_server.backend.batched``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import RERANK_DOCUMENT, RERANK_INPUTS, RERANK_OUTPUTS, RERANK_QUERY, RERANK_SCORE, TensorSpec
from tritonmm_server.backend.batched import BatchedModel
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import load_setup, start_engine, warn_context_size
from tritonmm_server.backend.responses import rows
from tritonmm_server.engines.rerank import PreparedPair, RerankEngine


class TritonPythonModel(BatchedModel[PreparedPair]):
    def initialize(self, args: dict[str, str]) -> None:
        setup = load_setup(args, "rerank", RERANK_INPUTS, RERANK_OUTPUTS, row="one (query, document) pair")
        self.name = setup.name
        self._engine = start_engine(setup, RerankEngine)
        warn_context_size(setup, self._engine.context_size)
        pb_utils.Logger.log_info(
            f"{self.name}: loaded {setup.model_path} ({self._engine.architecture} {self._engine.method}, "
            f"window {self._engine.context_size}, weights {setup.capabilities.weights})"
        )

    def prepare(self, request: Any) -> list[PreparedPair]:
        queries, documents = (_required(request, spec) for spec in (RERANK_QUERY, RERANK_DOCUMENT))
        return self._engine.prepare(queries, documents)

    def compute(self, items: list[PreparedPair]) -> dict[TensorSpec, np.ndarray]:
        return {RERANK_SCORE: self._engine.score_prepared(items).reshape(-1, 1)}


def _required(request: Any, spec: TensorSpec) -> list[bytes]:
    column = rows(request, spec)
    if column is None:
        raise InputError(f"{spec.name} is required")
    return column
