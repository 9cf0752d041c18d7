"""The tiny sentence-embedding build (``bert-embed``) through the text-embedding engine and the launcher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tritonmm_server.checkpoints.context import encoder_window
from tritonmm_server.engines.embedding import EmbeddingEngine

DIMENSIONS, WINDOW = 32, 128  # hidden size; sentence_bert_config.json's max_seq_length


@pytest.fixture(scope="module")
def bert_dir(tiny_model: Callable[[str], Path]) -> Path:
    return tiny_model("bert-embed")


@pytest.fixture(scope="module")
def engine(bert_dir: Path) -> EmbeddingEngine:
    return EmbeddingEngine(bert_dir, num_threads=2)


def test_bert_embed_gives_32_dimensional_unit_vectors(engine: EmbeddingEngine, bert_dir: Path) -> None:
    assert (engine.architecture, engine.dimensions, engine.context_size) == ("bert", DIMENSIONS, WINDOW)
    assert encoder_window(bert_dir) == WINDOW  # what the launcher declares as tmm.context_size
    vectors, tokens = engine.embed(["A man is eating food.", "A monkey is playing drums.", ""])
    assert vectors.shape == (3, DIMENSIONS) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tokens[2] == 2  # [CLS] [SEP]
    assert float(vectors[0] @ vectors[1]) < 0.99  # texts are told apart


def test_bert_embed_takes_thousands_of_texts_in_one_call(engine: EmbeddingEngine) -> None:
    texts = [f"document number {i} is about topic {i % 7}" for i in range(2000)]
    vectors, tokens = engine.embed(texts)
    assert vectors.shape == (2000, DIMENSIONS) and len(tokens) == 2000
    alone, _ = engine.embed([texts[1234]])
    np.testing.assert_allclose(alone[0], vectors[1234], atol=1e-5)


def test_bert_embed_has_the_sentence_transformers_layout(bert_dir: Path) -> None:
    files = sorted(p.relative_to(bert_dir) for p in bert_dir.rglob("*") if p.is_file())
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "model.safetensors"):
        assert Path(name) in files, name
