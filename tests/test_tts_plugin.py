"""Text to speech through the built package: the real Piper joe voice on tritonserver,
streamed as MP3 sentence by sentence."""

from __future__ import annotations

import io

import av
import pytest

from devtools.plugin_harness import MAX_LINE_BYTES, PluginError, PluginProcess

MODEL = "text_to_speech"
TEXT = "The quick brown fox jumps over the lazy dog. Offline speech works on this machine. Goodbye for now."


def speak(plugin: PluginProcess, credentials: dict, text: str, voice: str = "") -> list[dict]:
    data = {"provider": "triton_multimodal", "model_type": "tts", "model": MODEL, "credentials": credentials,
            "content_text": text, "voice": voice, "tenant_id": "t-1"}  # fmt: skip
    return plugin.call("model", "invoke_tts", data)


def mp3_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data), format="mp3") as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def test_speech_streams_as_mp3_per_sentence(plugin: PluginProcess, credentials: dict) -> None:
    chunks = speak(plugin, credentials, TEXT)
    assert len(chunks) >= 3  # one or more per sentence, not one blob at the end
    assert {c["mime_type"] for c in chunks} == {"audio/mpeg"}
    assert all(len(c["result"]) < MAX_LINE_BYTES // 4 for c in chunks)
    audio = b"".join(bytes.fromhex(c["result"]) for c in chunks)
    seconds = mp3_seconds(audio)
    words = len(TEXT.split())
    assert words / 5.0 < seconds < words / 1.0, seconds  # 1-5 words per second of speech


def test_a_long_unpunctuated_text_stays_in_small_chunks(plugin: PluginProcess, credentials: dict) -> None:
    text = " ".join(["word"] * 600)  # no sentence end anywhere
    chunks = speak(plugin, credentials, text)
    assert len(chunks) > 1
    assert max(len(c["result"]) for c in chunks) < 2 * 512 * 1024 + 1  # hex of <= 512 KiB


def test_voices_are_listed_from_the_server(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "model_type": "tts", "model": MODEL, "credentials": credentials}
    [answer] = plugin.call("model", "get_tts_model_voices", {**data, "language": "en-US"})
    assert {"name": "en_US-joe-medium", "value": "en_US-joe-medium"} in answer["voices"]
    [other] = plugin.call("model", "get_tts_model_voices", {**data, "language": "de-DE"})
    assert other["voices"] == []
    chunks = speak(plugin, credentials, "Hello there.", voice="en_US-joe-medium")
    assert chunks


@pytest.mark.parametrize(
    ("text", "voice", "message"),
    [("   ", "", "text to speak is empty"), ("Hello.", "no-such-voice", "has no voice 'no-such-voice'")],
)
def test_bad_requests_are_refused_and_the_plugin_keeps_serving(
    plugin: PluginProcess, credentials: dict, text: str, voice: str, message: str
) -> None:
    with pytest.raises(PluginError) as raised:
        speak(plugin, credentials, text, voice)
    assert raised.value.error_type == "InvokeBadRequestError" and message in raised.value.message
    assert speak(plugin, credentials, "Still here.")
