"""Rows of a batched model, sent in the model's batch size, answers in input order.

Shared by every task whose model takes one item per batch row (embeddings,
rerank pairs): a call of any size becomes consecutive requests of at most
``max_batch_size`` rows; each output is concatenated back in row order.
"""

from __future__ import annotations

from tritonmm.contract import Capabilities, TensorSpec
from tritonmm.transport import InputTensor, TritonClient

DEFAULT_BATCH = 32  # for a model whose config does not batch


def infer_rows(
    client: TritonClient,
    model: str,
    caps: Capabilities,
    columns: dict[TensorSpec, list[bytes]],
    outputs: list[str],
) -> dict[str, list]:
    """``columns``: one list of row values per input, all of the same length."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns of unequal length: {sorted(lengths)}")
    rows = lengths.pop()
    batch = caps.max_batch_size or DEFAULT_BATCH
    merged: dict[str, list] = {name: [] for name in outputs}
    for start in range(0, rows, batch):
        inputs = [
            InputTensor(spec, tuple(values[start : start + batch]), batched=True) for spec, values in columns.items()
        ]
        answer = client.infer(model, inputs, outputs)
        for name in outputs:
            merged[name].extend(answer[name])
    return merged
