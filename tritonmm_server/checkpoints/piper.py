# SPDX-License-Identifier: Apache-2.0
"""The Piper voices in a directory, and the names under which they are offered.

A voice is a ``<name>.onnx`` model beside its ``<name>.onnx.json`` config; other
files in the directory are ignored (a pip package's data dir also holds a model
card). Standard library only: the launcher reads the voices to write ``tmm.voices``
without importing onnxruntime, and the engine loads the same list, so the names
and the default (the first) agree on both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MODEL_SUFFIX = ".onnx"
CONFIG_SUFFIX = ".onnx.json"
SPEAKER_SEPARATOR = ":"  # "<voice>:<speaker>" names one speaker of a multi-speaker voice


class VoiceDirError(ValueError):
    """The directory holds no usable voice, or a voice config cannot be read."""


@dataclass(frozen=True)
class VoiceFile:
    """One Piper voice on disk."""

    name: str  # the file stem, e.g. "en_US-joe-medium"
    model: Path
    config: Path
    language: str  # BCP 47, e.g. "en-US"; "" when the config does not say
    sample_rate: int
    speakers: tuple[tuple[str, int], ...]  # (name, speaker id) in id order; () for a single-speaker voice


@dataclass(frozen=True)
class VoiceChoice:
    """A name a request may give: a voice, or one speaker of a multi-speaker voice."""

    name: str
    voice: VoiceFile
    speaker_id: int | None  # None: the voice's default speaker
    language: str


def bcp47(code: str) -> str:
    """Piper's ``en_US`` (or espeak's ``en-us``) as BCP 47 ``en-US``, the form Dify lists voices in."""
    parts = code.replace("_", "-").split("-")
    if not parts[0]:
        return ""
    # Region subtags are upper case, script subtags (4 letters) title case, the rest as given.
    rest = [p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p for p in parts[1:]]
    return "-".join([parts[0].lower(), *rest])


def find_voices(directory: Path) -> list[VoiceFile]:
    """The voices in ``directory``, sorted by name; ``VoiceDirError`` if there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VoiceDirError(f"{directory} is not a directory")
    voices = []
    for model in sorted(directory.glob(f"*{MODEL_SUFFIX}")):
        config = model.with_name(model.name + ".json")
        if model.is_file() and config.is_file():
            voices.append(_read_voice(model, config))
    if not voices:
        raise VoiceDirError(
            f"{directory} holds no Piper voice: expected <name>{MODEL_SUFFIX} beside <name>{CONFIG_SUFFIX}"
        )
    return voices


def _read_voice(model: Path, config_path: Path) -> VoiceFile:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        sample_rate = int(config["audio"]["sample_rate"])
        language = (config.get("language") or {}).get("code") or (config.get("espeak") or {}).get("voice") or ""
        speaker_ids = config.get("speaker_id_map") or {}
        speakers: tuple[tuple[str, int], ...] = ()
        if int(config.get("num_speakers", 1)) > 1 and speaker_ids:
            speakers = tuple(sorted(((str(name), int(i)) for name, i in speaker_ids.items()), key=lambda s: s[1]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise VoiceDirError(f"cannot read the voice config {config_path}: {type(exc).__name__}: {exc}") from None
    return VoiceFile(model.name[: -len(MODEL_SUFFIX)], model, config_path, bcp47(str(language)), sample_rate, speakers)


def voice_choices(voices: list[VoiceFile]) -> list[VoiceChoice]:
    """Every name offered to clients, the default first.

    A multi-speaker voice is offered once per speaker (``<voice>:<speaker>``);
    its bare name stays accepted (see ``lookup``) but is not listed twice.
    """
    choices = []
    for voice in voices:
        if not voice.speakers:
            choices.append(VoiceChoice(voice.name, voice, None, voice.language))
            continue
        for speaker, speaker_id in voice.speakers:
            choices.append(VoiceChoice(f"{voice.name}{SPEAKER_SEPARATOR}{speaker}", voice, speaker_id, voice.language))
    return choices


def lookup(voices: list[VoiceFile]) -> dict[str, VoiceChoice]:
    """Name -> choice for every listed name, plus the bare name of each multi-speaker voice."""
    names = {choice.name: choice for choice in voice_choices(voices)}
    for voice in voices:
        names.setdefault(voice.name, VoiceChoice(voice.name, voice, None, voice.language))
    return names


def voices_json(voices: list[VoiceFile]) -> str:
    """The ``tmm.voices`` value: ``[{"name", "language"}]``, the default first."""
    return json.dumps([{"name": c.name, "language": c.language} for c in voice_choices(voices)], ensure_ascii=False)


def languages(voices: list[VoiceFile]) -> list[str]:
    """The ``tmm.languages`` codes (ISO 639-1 ``en``) of the voices, in voice order, once each."""
    return list(dict.fromkeys(v.language.split("-")[0] for v in voices if v.language))
