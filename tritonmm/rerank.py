"""Rerank: score (query, document) pairs on the server, then sort, threshold, cut.

Pairs travel one per batch row (tritonmm.batching), so Triton's dynamic batcher
and response cache work on them like on embeddings. A multimodal_embedding
(CLIP-family) model ranks instead by the cosine of query and document
embeddings, clipped to [0, 1]: that is how an image query or image documents
are ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tritonmm import contract
from tritonmm.batching import infer_rows
from tritonmm.contract import Capabilities, Task
from tritonmm.embedding import Content, cosine, embed_contents
from tritonmm.errors import ServerError
from tritonmm.transport import TritonClient


@dataclass(frozen=True)
class Ranked:
    index: int  # position in the request's documents
    text: str
    score: float


def rerank(
    client: TritonClient,
    model: str,
    caps: Capabilities,
    query: str,
    documents: list[str],
    *,
    score_threshold: float | None = None,
    top_n: int | None = None,
) -> list[Ranked]:
    """Best first; ties keep input order. ``top_n`` <= 0 or None means all (the
    daemon turns Dify's null into 0); documents scoring below the threshold go."""
    if not documents:
        return []
    if caps.task is Task.MULTIMODAL_EMBEDDING:
        items = [Content(contract.CONTENT_TEXT, d.encode("utf-8")) for d in documents]
        query_item = Content(contract.CONTENT_TEXT, query.encode("utf-8"))
        return rerank_contents(client, model, caps, query_item, items, documents, score_threshold, top_n)
    columns = {
        contract.RERANK_QUERY: [query.encode("utf-8")] * len(documents),
        contract.RERANK_DOCUMENT: [d.encode("utf-8") for d in documents],
    }
    scores = infer_rows(client, model, caps, columns, [contract.RERANK_SCORE.name])[contract.RERANK_SCORE.name]
    if len(scores) != len(documents):
        raise ServerError(f"model '{model}' returned {len(scores)} scores for {len(documents)} documents")
    return _rank(scores, documents, score_threshold, top_n)


def rerank_contents(
    client: TritonClient,
    model: str,
    caps: Capabilities,
    query: Content,
    documents: list[Content],
    texts: Sequence[str],
    score_threshold: float | None = None,
    top_n: int | None = None,
) -> list[Ranked]:
    """Texts and images ranked by a multimodal_embedding model; ``texts`` are what the results carry."""
    if not documents:
        return []
    vectors = embed_contents(client, model, caps, [query, *documents]).vectors
    scores = [max(0.0, cosine(vectors[0], vector)) for vector in vectors[1:]]
    return _rank(scores, texts, score_threshold, top_n)


def _rank(
    scores: Sequence[float], texts: Sequence[str], score_threshold: float | None, top_n: int | None
) -> list[Ranked]:
    ranked = sorted(
        (Ranked(i, text, float(score)) for i, (text, score) in enumerate(zip(texts, scores, strict=True))),
        key=lambda r: (-r.score, r.index),
    )
    if score_threshold:
        ranked = [r for r in ranked if r.score >= score_threshold]
    return ranked[:top_n] if top_n and top_n > 0 else ranked


def probe(client: TritonClient, model: str, caps: Capabilities) -> None:
    """Two documents: proves the model scores pairs and answers in the contract's shape."""
    ranked = rerank(client, model, caps, "hello", ["hello there", "goodbye"])
    if len(ranked) != 2:
        raise ServerError(f"model '{model}' did not score a two-document probe")
