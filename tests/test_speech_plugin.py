"""Speech to text through the built package: Piper speech transcribed by the real
Whisper tiny.en (CTranslate2, from PyPI) on tritonserver, in every container Dify sends."""

from __future__ import annotations

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests.audio_fixtures import encode, speech, spoken_with_pauses, word_error_rate, words

MODEL = "speech_to_text"
SENTENCE = "The quick brown fox jumps over the lazy dog. Offline speech synthesis works on this machine."
# Sentences for the long clip; the last one must survive to the end of the transcript.
LONG = [
    "Welcome to the weekly planning meeting.",
    "First we review the numbers from last month.",
    "Sales grew in every region except the north.",
    "The new warehouse opens in the spring.",
    "Please send your travel plans before Friday.",
    "The design team will present three options.",
    "We still need a volunteer for the booth.",
    "Lunch will be served in the small kitchen.",
    "Remember to lock the door when you leave.",
    "Thank you all and see you next week.",
]


def transcribe(plugin: PluginProcess, credentials: dict, audio: bytes, **extra: str) -> str:
    data = {"provider": "triton_multimodal", "model_type": "speech2text", "model": MODEL,
            "credentials": {**credentials, **extra}, "file": audio.hex()}  # fmt: skip
    [answer] = plugin.call("model", "invoke_speech2text", data)
    return answer["result"]


@pytest.fixture(scope="module")
def sentence() -> tuple:
    return speech(SENTENCE)


def test_piper_speech_is_transcribed(plugin: PluginProcess, credentials: dict, sentence: tuple) -> None:
    text = transcribe(plugin, credentials, encode(*sentence, "wav"))
    assert word_error_rate(SENTENCE, text) <= 0.10, text


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "opus", "m4a", "flac", "webm"])
def test_every_container_gives_the_same_transcript(
    plugin: PluginProcess, credentials: dict, sentence: tuple, fmt: str
) -> None:
    reference = transcribe(plugin, credentials, encode(*sentence, "wav"))
    assert words(transcribe(plugin, credentials, encode(*sentence, fmt))) == words(reference)


def test_a_seventy_second_clip_is_transcribed_to_the_end(plugin: PluginProcess, credentials: dict) -> None:
    spoken, rate = spoken_with_pauses(LONG, pause_s=0.0)
    pause = max(0.5, (70.0 - spoken.size / rate) / len(LONG))
    samples, rate = spoken_with_pauses(LONG, pause_s=pause)
    assert samples.size / rate >= 70.0
    text = transcribe(plugin, credentials, encode(samples, rate, "mp3"))
    assert word_error_rate(" ".join(LONG), text) <= 0.15, text
    assert words(text)[-4:] == words(LONG[-1])[-4:]  # the end is there, not cut at 30 s


def test_language_and_prompt_are_passed(plugin: PluginProcess, credentials: dict, sentence: tuple) -> None:
    text = transcribe(plugin, credentials, encode(*sentence, "wav"), asr_language="en", asr_prompt="Fox, dog.")
    assert word_error_rate(SENTENCE, text) <= 0.10, text
    with pytest.raises(PluginError) as raised:
        transcribe(plugin, credentials, encode(*sentence, "wav"), asr_language="de")
    assert raised.value.error_type == "InvokeBadRequestError" and "'de'" in raised.value.message


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (b"", "is empty"),
        (b"%PDF-1.7 definitely not audio" * 20, "is not audio"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 8, "cannot decode"),  # looks like WAV, is not
    ],
    ids=["empty", "not audio", "broken wav"],
)
def test_bad_audio_is_refused_and_the_plugin_keeps_serving(
    plugin: PluginProcess, credentials: dict, sentence: tuple, audio: bytes, message: str
) -> None:
    with pytest.raises(PluginError) as raised:
        transcribe(plugin, credentials, audio)
    assert raised.value.error_type == "InvokeBadRequestError"
    assert message in raised.value.message
    assert plugin.alive()
    assert word_error_rate(SENTENCE, transcribe(plugin, credentials, encode(*sentence, "wav"))) <= 0.10
