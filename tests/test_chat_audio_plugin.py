"""Audio parts in chat through the built package: natively where the chat model hears
audio, else as the transcript of the speech_to_text model (the cascade)."""

from __future__ import annotations

import base64
import json

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests.audio_fixtures import encode, speech, word_error_rate
from tests.test_llm_plugin import assert_streamed, invoke, text_of, user

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def audio_part() -> dict:
    data = encode(*speech(SENTENCE), "mp3")
    return {"type": "audio", "format": "mp3", "mime_type": "audio/mpeg", "base64_data": base64.b64encode(data).decode()}


def sent_messages(chunks: list[dict]) -> tuple[list[dict], str]:
    """What the echo fixture received: MESSAGES_JSON, and the AUDIOS note if any."""
    raw, _, note = text_of(chunks).partition(" AUDIOS=")
    return json.loads(raw), note


def test_cascade_puts_the_transcript_in_place_of_the_audio(
    plugin: PluginProcess, credentials: dict, audio_part: dict
) -> None:
    chunks = invoke(plugin, credentials, user(audio_part, text="Summarise this:"), model="echo_chat")
    messages, audios = sent_messages(chunks)
    assert audios == ""  # no audio bytes reach a model without native audio
    parts = messages[-1]["content"]
    assert parts[0] == {"type": "text", "text": "Summarise this:"}
    transcript = parts[1]["text"]
    assert transcript.startswith("[Transcript of audio 1]: ")
    assert word_error_rate(SENTENCE, transcript.partition(": ")[2]) <= 0.10, transcript


def test_native_audio_goes_to_the_model_as_bytes(plugin: PluginProcess, credentials: dict, audio_part: dict) -> None:
    messages, audios = sent_messages(invoke(plugin, credentials, user(audio_part), model="echo_chat_native"))
    assert audios == "1"
    assert messages[-1]["content"][1] == {"type": "audio", "index": 0}


def test_a_real_audio_chat_model_streams(plugin: PluginProcess, credentials: dict, audio_part: dict) -> None:
    assert_streamed(invoke(plugin, credentials, user(audio_part, text="What was said?"), model="chat_audio"))


def test_the_bundled_chat_hears_audio_by_cascade(plugin: PluginProcess, credentials: dict, audio_part: dict) -> None:
    assert_streamed(invoke(plugin, credentials, user(audio_part), model="chat"))


def test_no_path_for_audio_is_refused_by_name(plugin: PluginProcess, credentials: dict, audio_part: dict) -> None:
    with pytest.raises(PluginError) as raised:
        invoke(plugin, credentials, user(audio_part), model="echo_chat_no_asr")
    assert raised.value.error_type == "InvokeBadRequestError"
    assert "does not accept audio" in raised.value.message and "no_such_asr_model" in raised.value.message


@pytest.mark.parametrize(
    ("model", "features"),
    [
        ("echo_chat", ["audio", "document", "vision"]),
        ("echo_chat_native", ["audio", "document", "vision"]),
        ("echo_chat_no_asr", ["document", "vision"]),
    ],
)
def test_audio_is_declared_exactly_when_a_path_exists(
    plugin: PluginProcess, credentials: dict, model: str, features: list[str]
) -> None:
    data = {"provider": "triton_multimodal", "model_type": "llm", "model": model, "credentials": credentials}
    [answer] = plugin.call("model", "get_ai_model_schemas", data)
    assert sorted(answer["model_schema"]["features"]) == features
