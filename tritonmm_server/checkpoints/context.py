"""How many tokens a checkpoint reads at once, read from its files (no torch).

Two rules, each in one function, used by both the launcher (which writes the answer
into ``tmm.context_size``, what the plugin tells Dify) and the engine that loads the
checkpoint (which cuts or refuses by it), so the two can never disagree:

* :func:`generation_context`: a chat model's context, the language model's position
  table (``text_config`` first, as vision-language and audio-language checkpoints nest
  it), else the tokenizer's ``model_max_length``.
* :func:`encoder_window`: the window of an encoder (sentence embedding, cross-encoder,
  a CLIP text tower): the smallest limit the checkpoint states, among
  ``sentence_bert_config.json``'s ``max_seq_length`` (what sentence-transformers reads
  with, 256 for all-MiniLM-L6-v2, whose position table holds 512), the position table
  and the tokenizer's ``model_max_length``. An encoder cannot read past any of them.

Both return None when the checkpoint states no limit at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["encoder_window", "generation_context"]

# tokenizer_config.json of a tokenizer without a limit says int(1e30); anything this large means "none".
NO_LIMIT = 1_000_000


def generation_context(checkpoint: Path) -> int | None:
    """The position table of the language model (``text_config`` first), else the tokenizer's limit."""
    return _positions(checkpoint) or _tokenizer_limit(checkpoint)


def encoder_window(checkpoint: Path) -> int | None:
    """The smallest of the sentence-transformers window, the position table and the tokenizer's limit."""
    limits = [
        _positive_int(_read_json(checkpoint / "sentence_bert_config.json"), "max_seq_length"),
        _positions(checkpoint),
        _tokenizer_limit(checkpoint),
    ]
    found = [limit for limit in limits if limit is not None]
    return min(found) if found else None


def _positions(checkpoint: Path) -> int | None:
    config = _read_json(checkpoint / "config.json")
    for section in (config.get("text_config"), config):
        value = _positive_int(section, "max_position_embeddings")
        if value is not None:
            return value
    return None


def _tokenizer_limit(checkpoint: Path) -> int | None:
    value = _positive_int(_read_json(checkpoint / "tokenizer_config.json"), "model_max_length")
    return value if value is not None and value < NO_LIMIT else None


def _read_json(path: Path) -> dict[str, Any]:
    """The object in ``path``; {} when the file is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _positive_int(section: object, key: str) -> int | None:
    value = section.get(key) if isinstance(section, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
