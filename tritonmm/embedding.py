"""Embeddings of texts, or of texts and images in one space, split into batches, in order.

Each batch (tritonmm.batching) is one unary ``/infer`` with the texts as raw BYTES rows; Triton's
dynamic batcher merges concurrent batches and its response cache answers
repeated ones. Results always come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonmm import contract, media
from tritonmm.batching import infer_rows
from tritonmm.contract import Capabilities, Task
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart
from tritonmm.transport import TritonClient

INPUT_TYPES = (contract.INPUT_TYPE_QUERY, contract.INPUT_TYPE_DOCUMENT)


@dataclass(frozen=True)
class Content:
    """One item of a multimodal request: UTF-8 text, or image file bytes."""

    kind: str  # contract.CONTENT_TEXT or contract.CONTENT_IMAGE
    data: bytes


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    tokens: list[int]  # per text, counted by the model's own tokenizer


def embed_texts(client: TritonClient, model: str, caps: Capabilities, texts: list[str], input_type: str) -> Embeddings:
    if input_type not in INPUT_TYPES:
        raise InvalidInput(f"input_type must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}")
    if not texts:
        return Embeddings([], [])
    if caps.task is Task.MULTIMODAL_EMBEDDING:  # a CLIP-family model embeds plain texts too
        return embed_contents(client, model, caps, [Content(contract.CONTENT_TEXT, t.encode("utf-8")) for t in texts])
    columns = {
        contract.EMBED_TEXT: [t.encode("utf-8") for t in texts],
        contract.EMBED_INPUT_TYPE: [input_type.encode()] * len(texts),
    }
    out = infer_rows(client, model, caps, columns, [contract.EMBED_VECTOR.name, contract.EMBED_TOKENS.name])
    vectors = _rows(out[contract.EMBED_VECTOR.name], len(texts), model)
    return Embeddings(vectors, [int(n) for n in out[contract.EMBED_TOKENS.name]])


def embed_contents(client: TritonClient, model: str, caps: Capabilities, items: list[Content]) -> Embeddings:
    """Texts and images into one vector space (a multimodal_embedding model), in input order."""
    if not items:
        return Embeddings([], [])
    if caps.task is not Task.MULTIMODAL_EMBEDDING:
        raise InvalidInput(
            f"model '{model}' embeds text only ({caps.task.value}); images need a multimodal_embedding model"
        )
    columns = {
        contract.MM_CONTENT: [item.data for item in items],
        contract.MM_CONTENT_TYPE: [item.kind.encode() for item in items],
    }
    out = infer_rows(client, model, caps, columns, [contract.EMBED_VECTOR.name, contract.EMBED_TOKENS.name])
    vectors = _rows(out[contract.EMBED_VECTOR.name], len(items), model)
    return Embeddings(vectors, [int(n) for n in out[contract.EMBED_TOKENS.name]])


def content_item(kind: str, content: str, what: str, client: TritonClient) -> Content:
    """A (content_type, content) pair as Dify sends it: text, or raw base64 of an image.

    Images are checked by their bytes and shrunk to the low-detail size: CLIP-family
    encoders see 224-384 px, so more only costs transfer.
    """
    if kind == contract.CONTENT_TEXT:
        return Content(kind, content.encode("utf-8"))
    if kind == contract.CONTENT_IMAGE:
        part = MediaPart(Modality.IMAGE, base64_data=content, low_detail=True)
        return Content(kind, loader_for(Modality.IMAGE).load(part, what, client.settings))
    raise InvalidInput(f"{what}: content_type must be one of {', '.join(contract.CONTENT_TYPES)}, got {kind!r}")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return dot / norm if norm else 0.0


def _rows(flat: list[float], count: int, model: str) -> list[list[float]]:
    if count == 0 or len(flat) % count:
        raise ServerError(f"model '{model}' returned {len(flat)} values for {count} texts")
    width = len(flat) // count
    return [flat[i * width : (i + 1) * width] for i in range(count)]


PROBE_IMAGE_SIDE = 32


def probe(client: TritonClient, model: str, caps: Capabilities) -> None:
    """One short text (and one small image for a multimodal model): proves the model
    embeds and answers in the contract's shape."""
    result = embed_texts(client, model, caps, ["hello"], contract.INPUT_TYPE_QUERY)
    if len(result.vectors) != 1 or not result.vectors[0]:
        raise ServerError(f"model '{model}' returned no embedding for a one-word probe")
    if caps.task is Task.MULTIMODAL_EMBEDDING:
        image = Content(contract.CONTENT_IMAGE, media.blank_png(PROBE_IMAGE_SIDE))
        mixed = embed_contents(client, model, caps, [image])
        if len(mixed.vectors[0]) != len(result.vectors[0]):
            raise ServerError(f"model '{model}' puts images and texts in spaces of different sizes")
