"""Image and text embeddings and multimodal rerank through the built package, on the
tiny CLIP build served by tritonserver (no CLIP weights install offline)."""

from __future__ import annotations

import base64
import math

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests.media_fixtures import png

MODEL = "multimodal_embedding"
RED = base64.b64encode(png(color=(220, 30, 30))).decode()
GREEN = base64.b64encode(png(160, 120, color=(30, 200, 30))).decode()


def embed(plugin: PluginProcess, credentials: dict, documents: list[dict], input_type: str = "document") -> dict:
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": MODEL,
            "credentials": credentials, "documents": documents, "input_type": input_type}  # fmt: skip
    [answer] = plugin.call("model", "invoke_multimodal_embedding", data)
    return answer


def rerank(plugin: PluginProcess, credentials: dict, query: dict, docs: list[dict], top_n: int = 0) -> list[dict]:
    data = {"provider": "triton_multimodal", "model_type": "rerank", "model": MODEL, "credentials": credentials,
            "query": query, "docs": docs, "score_threshold": 0.0, "top_n": top_n}  # fmt: skip
    [answer] = plugin.call("model", "invoke_multimodal_rerank", data)
    return answer["docs"]


def text(value: str) -> dict:
    return {"content": value, "content_type": "text"}


def image(value: str) -> dict:
    return {"content": value, "content_type": "image"}


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_texts_and_images_share_one_space_in_input_order(plugin: PluginProcess, credentials: dict) -> None:
    documents = [text("a red circle"), image(RED), text("a green square"), image(GREEN)]
    answer = embed(plugin, credentials, documents)
    vectors = answer["embeddings"]
    assert len(vectors) == 4 and len({len(v) for v in vectors}) == 1
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    for position in (1, 2):  # each item alone gives the vector it got in the mixed batch
        [alone] = embed(plugin, credentials, [documents[position]])["embeddings"]
        assert cosine(alone, vectors[position]) > 0.9999
    assert answer["usage"]["total_tokens"] > 0


def test_plain_text_embedding_works_on_the_multimodal_model(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": MODEL,
            "credentials": credentials, "texts": ["a red circle"], "input_type": "query"}  # fmt: skip
    [answer] = plugin.call("model", "invoke_text_embedding", data)
    [mixed] = embed(plugin, credentials, [text("a red circle")])["embeddings"]
    assert cosine(answer["embeddings"][0], mixed) > 0.9999


def test_image_query_ranks_text_and_image_documents(plugin: PluginProcess, credentials: dict) -> None:
    docs = [text("a red circle"), image(GREEN), image(RED), text("music")]
    ranked = rerank(plugin, credentials, image(RED), docs)
    assert sorted(d["index"] for d in ranked) == [0, 1, 2, 3]
    assert ranked[0]["index"] == 2  # the same image scores 1.0
    assert ranked[0]["score"] == pytest.approx(1.0, abs=1e-4)
    scores = [d["score"] for d in ranked]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert [d["text"] for d in ranked] == [docs[d["index"]]["content"] for d in ranked]
    assert len(rerank(plugin, credentials, text("red"), docs, top_n=2)) == 2


def test_text_rerank_on_the_multimodal_model(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "model_type": "rerank", "model": MODEL, "credentials": credentials,
            "query": "a red circle", "docs": ["music", "a red circle"], "score_threshold": 0.0, "top_n": 0}  # fmt: skip
    [answer] = plugin.call("model", "invoke_rerank", data)
    assert answer["docs"][0]["index"] == 1 and answer["docs"][0]["score"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("document", "error_type", "message"),
    [
        (image(base64.b64encode(b"%PDF-1.4 not an image").decode()), "InvokeBadRequestError", "document 1"),
        (image("@@not base64@@"), "InvokeBadRequestError", "not valid base64"),
        ({"content": "x", "content_type": "video"}, "ValidationError", "content_type"),  # refused by the SDK
    ],
)
def test_bad_items_are_refused_and_the_plugin_keeps_serving(
    plugin: PluginProcess, credentials: dict, document: dict, error_type: str, message: str
) -> None:
    with pytest.raises(PluginError) as raised:
        embed(plugin, credentials, [document])
    assert raised.value.error_type == error_type
    assert message in raised.value.message
    assert embed(plugin, credentials, [text("still serving")])["embeddings"]


def test_text_only_model_refuses_images_by_name(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": "text_embedding",
            "credentials": credentials, "documents": [image(RED)], "input_type": "document"}  # fmt: skip
    with pytest.raises(PluginError) as raised:
        plugin.call("model", "invoke_multimodal_embedding", data)
    assert "images need a multimodal_embedding model" in raised.value.message
