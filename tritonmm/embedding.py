"""Text embeddings: any number of texts, split into the model's batches, in order.

Each batch (tritonmm.batching) is one unary ``/infer`` with the texts as raw BYTES rows; Triton's
dynamic batcher merges concurrent batches and its response cache answers
repeated ones. Results always come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonmm import contract
from tritonmm.batching import infer_rows
from tritonmm.contract import Capabilities
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.settings import ServerSettings

INPUT_TYPES = (contract.INPUT_TYPE_QUERY, contract.INPUT_TYPE_DOCUMENT)


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: list[int]  # per text, counted by the model's own tokenizer


def embed_texts(
    settings: ServerSettings, model: str, caps: Capabilities, texts: list[str], input_type: str
) -> Embeddings:
    if input_type not in INPUT_TYPES:
        raise InvalidInput(f"input_type must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
    if not texts:
        return Embeddings([], [])
    columns = {
        contract.EMBED_TEXT: [t.encode("utf-8") for t in texts],
        contract.EMBED_INPUT_TYPE: [input_type.encode()] * len(texts),
    }
    out = infer_rows(settings, model, caps, columns, [contract.EMBED_VECTOR.name, contract.EMBED_TOKENS.name])
    vectors = _rows(out[contract.EMBED_VECTOR.name], len(texts), model)
    return Embeddings(vectors, [int(n) for n in out[contract.EMBED_TOKENS.name]])


def _rows(flat: list[float], count: int, model: str) -> list[list[float]]:
    if count == 0 or len(flat) % count:
        raise ServerError(f"model '{model}' returned {len(flat)} values for {count} texts")
    width = len(flat) // count
    return [flat[i * width : (i + 1) * width] for i in range(count)]


def probe(settings: ServerSettings, model: str, caps: Capabilities) -> None:
    """One short text: proves the model embeds and answers in the contract's shape."""
    result = embed_texts(settings, model, caps, ["hello"], contract.INPUT_TYPE_QUERY)
    if len(result.vectors) != 1 or not result.vectors[0]:
        raise ServerError(f"model '{model}' returned no embedding for a one-word probe")
