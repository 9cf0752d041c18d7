"""Rerank through the built package: the MiniLM bi-encoder (real weights, the
offline default) and a tiny cross-encoder build, on the real tritonserver."""

from __future__ import annotations

import pytest

from devtools.plugin_harness import PluginError, PluginProcess

QUERY = "A man is eating food."
DOCS = [
    "A man is riding a horse.",
    "A man is eating a piece of bread.",
    "A monkey is playing drums.",
    "Someone eats a sandwich.",
]


def rerank(
    plugin: PluginProcess,
    credentials: dict,
    query: str,
    docs: list[str],
    *,
    model: str = "rerank",
    threshold: float = 0.0,
    top_n: int = 0,
) -> list[dict]:
    data = {"provider": "triton_multimodal", "model_type": "rerank", "model": model, "credentials": credentials,
            "query": query, "docs": docs, "score_threshold": threshold, "top_n": top_n}  # fmt: skip
    [answer] = plugin.call("model", "invoke_rerank", data)
    return answer["docs"]


def test_bi_encoder_puts_the_paraphrase_first(plugin: PluginProcess, credentials: dict) -> None:
    ranked = rerank(plugin, credentials, QUERY, DOCS)
    assert [d["index"] for d in ranked][:2] == [1, 3]  # bread, sandwich
    assert all(d["text"] == DOCS[d["index"]] for d in ranked)
    scores = [d["score"] for d in ranked]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_top_n_and_threshold(plugin: PluginProcess, credentials: dict) -> None:
    everything = rerank(plugin, credentials, QUERY, DOCS)
    assert len(rerank(plugin, credentials, QUERY, DOCS, top_n=2)) == 2
    assert len(rerank(plugin, credentials, QUERY, DOCS, top_n=0)) == len(DOCS)  # 0 (Dify's null) means all
    threshold = (everything[1]["score"] + everything[2]["score"]) / 2
    kept = rerank(plugin, credentials, QUERY, DOCS, threshold=threshold)
    assert [d["index"] for d in kept] == [d["index"] for d in everything[:2]]


@pytest.mark.parametrize("model", ["rerank", "rerank_cross"])
def test_many_documents_keep_their_index(plugin: PluginProcess, credentials: dict, model: str) -> None:
    docs = [f"document {i} talks about {['food', 'horses', 'music', 'bread'][i % 4]}" for i in range(100)]  # 2 batches
    ranked = rerank(plugin, credentials, QUERY, docs, model=model)
    assert sorted(d["index"] for d in ranked) == list(range(100))
    for position in (0, 57, 99):
        [alone] = rerank(plugin, credentials, QUERY, [docs[position]], model=model)
        together = next(d for d in ranked if d["index"] == position)
        assert abs(alone["score"] - together["score"]) < 1e-5


def test_cross_encoder_scores_are_deterministic_probabilities(plugin: PluginProcess, credentials: dict) -> None:
    first = rerank(plugin, credentials, QUERY, DOCS, model="rerank_cross")
    assert first == rerank(plugin, credentials, QUERY, DOCS, model="rerank_cross")
    assert all(0.0 < d["score"] < 1.0 for d in first)


def test_no_documents(plugin: PluginProcess, credentials: dict) -> None:
    assert rerank(plugin, credentials, QUERY, []) == []


def test_credentials(plugin: PluginProcess, credentials: dict) -> None:
    data = {
        "provider": "triton_multimodal",
        "model_type": "rerank",
        "model": "rerank_cross",
        "credentials": credentials,
    }
    [answer] = plugin.call("model", "validate_model_credentials", data)
    assert answer["result"] is True


def test_embedding_model_is_not_a_rerank_model(plugin: PluginProcess, credentials: dict) -> None:
    with pytest.raises(PluginError) as raised:
        rerank(plugin, credentials, QUERY, DOCS, model="text_embedding")
    assert raised.value.error_type == "InvokeBadRequestError"
    assert "is a text_embedding model, not a rerank or multimodal_embedding model" in raised.value.message
    assert plugin.alive()
