"""Embedding engine of the bundled text-embedding model.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/text_embedding/1/model.py`` only moves tensors in and out of it.

A sentence embedding is the checkpoint's last hidden state, mean-pooled over the
attention mask and L2-normalised: what sentence-transformers computes for
all-MiniLM-L6-v2, the e5 and the bge families (the latter two with a prefix).

Two steps, so that a Triton model can reject one request of a dynamic batch and
still serve the others with a single forward pass:

* :meth:`EmbeddingEngine.tokenize` validates one request's rows (UTF-8 text,
  input type ``query`` or ``document``) and tokenizes them, prefix included.
  Anything wrong raises :class:`InputError` naming the row.
* :meth:`EmbeddingEngine.embed_tokenized` embeds any number of tokenized texts
  at once: every window of every text goes into the same length-sorted batches.

A text longer than the model's window is either cut at the window
(``long_input="truncate"``) or split into consecutive windows, each with the
model's special tokens and the prefix, whose vectors are averaged weighted by
their token counts and normalised again (``long_input="mean"``). Either way the
token count reported is the whole text's, as the model's tokenizer counts it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from tritonmm.contract import INPUT_TYPE_DOCUMENT, INPUT_TYPE_QUERY, LONG_INPUT_MEAN, LONG_INPUT_TRUNCATE
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.context import encoder_window

__all__ = ["EmbeddingEngine", "TokenizedText"]

INPUT_TYPES = (INPUT_TYPE_QUERY, INPUT_TYPE_DOCUMENT)
LONG_INPUT_MODES = (LONG_INPUT_MEAN, LONG_INPUT_TRUNCATE)
# Padded tokens per forward pass: bounds memory for a batch of long texts while
# keeping batches large enough to use the cores (64 windows of 256 tokens).
MAX_BATCH_TOKENS = 64 * 256
# The window of a checkpoint that states none (no position table, no tokenizer limit): BERT's.
FALLBACK_WINDOW = 512


@dataclass(frozen=True)
class TokenizedText:
    """One text, ready for :meth:`EmbeddingEngine.embed_tokenized`.

    ``windows`` are complete model inputs (special tokens included); ``tokens``
    is the whole text's token count, which exceeds the window when it was cut.
    """

    windows: tuple[tuple[int, ...], ...]
    tokens: int


class EmbeddingEngine:
    """A sentence-embedding checkpoint, loaded once; calls are serialised."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        query_prefix: str = "",
        document_prefix: str = "",
        long_input: str = LONG_INPUT_MEAN,
        num_threads: int | None = None,
    ) -> None:
        if long_input not in LONG_INPUT_MODES:
            raise ValueError(f"long_input must be one of {', '.join(LONG_INPUT_MODES)}, got {long_input!r}")
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide: one engine per stub process
        self._dir = Path(model_dir)
        self._long_input = long_input
        self._tokenizer = AutoTokenizer.from_pretrained(self._dir)
        self._model = AutoModel.from_pretrained(self._dir, dtype=torch.float32).eval()
        self._context_size = encoder_window(self._dir) or FALLBACK_WINDOW
        self._head, self._tail = _special_token_layout(self._tokenizer)
        if self._head + self._tail >= self._context_size:
            raise ValueError(f"a window of {self._context_size} tokens leaves no room for text")
        pad = self._tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else 0
        self._prefixes = {
            INPUT_TYPE_QUERY: (query_prefix, self._body_ids(query_prefix)),
            INPUT_TYPE_DOCUMENT: (document_prefix, self._body_ids(document_prefix)),
        }
        self._lock = threading.Lock()  # the Rust tokenizer and torch's thread pool are shared

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def architecture(self) -> str:
        return str(self._model.config.model_type)

    @property
    def context_size(self) -> int:
        """The most tokens (special tokens included) the model reads at once."""
        return self._context_size

    @property
    def dimensions(self) -> int:
        return int(self._model.config.hidden_size)

    @property
    def long_input(self) -> str:
        return self._long_input

    def warm_up(self) -> None:
        """One small forward pass, so the first request does not pay for torch's start-up."""
        self.embed(["warm up"], [INPUT_TYPE_DOCUMENT])

    # --- the two steps -------------------------------------------------------------------

    def tokenize(
        self, texts: Sequence[str | bytes], input_types: Sequence[str | bytes] | None = None
    ) -> list[TokenizedText]:
        """Validate and tokenize the rows of one request; ``None`` types mean ``document``.

        Raises InputError naming the first bad row (0-based, within this call).
        """
        if input_types is None:
            input_types = [INPUT_TYPE_DOCUMENT] * len(texts)
        if len(input_types) != len(texts):
            raise InputError(f"{len(texts)} text(s) but {len(input_types)} input type(s): give one per text")
        decoded = [row_text(row, raw) for row, raw in enumerate(texts)]
        kinds = [_input_type(row, raw) for row, raw in enumerate(input_types)]
        if not decoded:
            return []
        full_texts = [self._prefixes[kind][0] + text for text, kind in zip(decoded, kinds, strict=True)]
        with self._lock:
            encoded = self._tokenizer(full_texts, add_special_tokens=True, verbose=False)["input_ids"]
        return [self._windows(ids, self._prefixes[kind][1]) for ids, kind in zip(encoded, kinds, strict=True)]

    def embed_tokenized(self, items: Sequence[TokenizedText]) -> np.ndarray:
        """Unit vectors ``[len(items), dimensions]`` (float32), one forward pass per batch."""
        windows = [(i, w) for i, item in enumerate(items) for w in item.windows]
        if not windows:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            vectors = self._embed_windows([w for _, w in windows])
        owner = np.array([i for i, _ in windows])
        weights = np.array([len(w) for _, w in windows], dtype=np.float64)
        sums = np.zeros((len(items), vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, owner, vectors.astype(np.float64) * weights[:, None])
        return _normalise(sums).astype(np.float32)

    def embed(
        self, texts: Sequence[str | bytes], input_types: Sequence[str | bytes] | None = None
    ) -> tuple[np.ndarray, list[int]]:
        """Unit vectors ``[len(texts), dimensions]`` and each text's token count."""
        items = self.tokenize(texts, input_types)
        return self.embed_tokenized(items), [item.tokens for item in items]

    # --- internals --------------------------------------------------------------------------

    def _body_ids(self, text: str) -> tuple[int, ...]:
        if not text:
            return ()
        ids = self._tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]
        return tuple(ids[self._head : len(ids) - self._tail])

    def _windows(self, ids: list[int], prefix: tuple[int, ...]) -> TokenizedText:
        if len(ids) <= self._context_size:
            return TokenizedText((tuple(ids),), len(ids))
        head, tail = ids[: self._head], ids[len(ids) - self._tail :]
        body = ids[self._head : len(ids) - self._tail]
        # Each later window repeats the prefix ("query: " etc.) when it tokenized on its own.
        repeat = (
            prefix if prefix and len(prefix) < self._context_size // 2 and tuple(body[: len(prefix)]) == prefix else ()
        )
        body = body[len(repeat) :]
        room = self._context_size - self._head - self._tail - len(repeat)
        if self._long_input == LONG_INPUT_TRUNCATE:
            chunks = [body[:room]]
        else:
            chunks = [body[start : start + room] for start in range(0, len(body), room)]
        windows = tuple(tuple(head) + repeat + tuple(chunk) + tuple(tail) for chunk in chunks)
        return TokenizedText(windows, len(ids))

    @torch.inference_mode()
    def _embed_windows(self, windows: list[tuple[int, ...]]) -> np.ndarray:
        """Mean-pooled unit vectors of complete windows, in the given order."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]), reverse=True)
        out = np.empty((len(windows), self.dimensions), dtype=np.float32)
        for batch in length_batches(order, [len(w) for w in windows]):
            width = len(windows[batch[0]])  # the longest: sorted
            ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                window = windows[index]
                ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
                mask[row, : len(window)] = 1
            hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(pooled.float(), p=2, dim=1).numpy()
        return out


def length_batches(order: list[int], lengths: list[int]) -> list[list[int]]:
    """Consecutive runs of ``order`` (longest first) of at most MAX_BATCH_TOKENS padded tokens."""
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= MAX_BATCH_TOKENS:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def row_text(row: int, raw: str | bytes, what: str = "text") -> str:
    """A row's text as str; InputError naming the row when it is not valid UTF-8."""
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"row {row}: the {what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not isinstance(raw, str):
        raise InputError(f"row {row}: the {what} must be a string, got {type(raw).__name__}")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise InputError(f"row {row}: the {what} is not valid UTF-8 ({exc.reason} at character {exc.start})") from None
    return raw


def _input_type(row: int, raw: str | bytes) -> str:
    value = raw
    if isinstance(raw, bytes | bytearray | memoryview):
        value = bytes(raw).decode("utf-8", errors="replace")
    if value not in INPUT_TYPES:
        raise InputError(f"row {row}: input type {value!r} is not one of {', '.join(map(repr, INPUT_TYPES))}")
    return str(value)


def _special_token_layout(tokenizer: object) -> tuple[int, int]:
    """How many special tokens a single sequence gets before and after its text."""
    encoded = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True, verbose=False)  # type: ignore[operator]
    mask = list(encoded["special_tokens_mask"])
    head = next((i for i, special in enumerate(mask) if not special), len(mask))
    tail = next((i for i, special in enumerate(reversed(mask)) if not special), 0)
    return head, tail
