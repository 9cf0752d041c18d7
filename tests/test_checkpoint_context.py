"""The context-size rules, read from checkpoint files: one function each, shared by launcher and engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonmm_server.checkpoints.context import NO_LIMIT, encoder_window, generation_context


def checkpoint(tmp_path: Path, config: dict, tokenizer: dict | None = None, sentence: dict | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    if sentence is not None:
        (tmp_path / "sentence_bert_config.json").write_text(json.dumps(sentence))
    return tmp_path


@pytest.mark.parametrize(
    ("config", "tokenizer", "sentence", "window"),
    [
        # all-MiniLM-L6-v2: sentence-transformers reads 256 of the 512 positions.
        ({"max_position_embeddings": 512}, {"model_max_length": 512}, {"max_seq_length": 256}, 256),
        # A declared window past the position table cannot be read: the table wins.
        ({"max_position_embeddings": 512}, None, {"max_seq_length": 1024}, 512),
        # A cross-encoder without sentence-transformers files: the tokenizer's smaller limit.
        ({"max_position_embeddings": 512}, {"model_max_length": 384}, None, 384),
        # A tokenizer without a limit says int(1e30): no limit.
        ({"max_position_embeddings": 512}, {"model_max_length": int(1e30)}, None, 512),
        # CLIP: the text tower's table sits in text_config.
        ({"text_config": {"max_position_embeddings": 77}, "vision_config": {}}, {"model_max_length": 77}, None, 77),
        ({"model_type": "bert"}, None, None, None),  # states nothing
        ({"max_position_embeddings": True}, {"model_max_length": "512"}, {"max_seq_length": 0}, None),  # not counts
    ],
)
def test_encoder_window_is_the_smallest_stated_limit(
    tmp_path: Path, config: dict, tokenizer: dict | None, sentence: dict | None, window: int | None
) -> None:
    assert encoder_window(checkpoint(tmp_path, config, tokenizer, sentence)) == window


@pytest.mark.parametrize(
    ("config", "tokenizer", "context"),
    [
        # A vision-language checkpoint nests its language model's table; the top level may hold another's.
        ({"text_config": {"max_position_embeddings": 8192}, "max_position_embeddings": 512}, None, 8192),
        ({"max_position_embeddings": 4096}, {"model_max_length": 2048}, 4096),  # not capped by the tokenizer
        ({"model_type": "custom"}, {"model_max_length": 2048}, 2048),  # the tokenizer when the config is silent
        ({"model_type": "custom"}, {"model_max_length": NO_LIMIT * 10}, None),
    ],
)
def test_generation_context_is_the_language_models_positions(
    tmp_path: Path, config: dict, tokenizer: dict | None, context: int | None
) -> None:
    assert generation_context(checkpoint(tmp_path, config, tokenizer)) == context


def test_unreadable_files_state_nothing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    assert encoder_window(tmp_path) is None and generation_context(tmp_path) is None
    assert encoder_window(tmp_path / "missing") is None
