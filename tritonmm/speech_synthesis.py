"""Text to speech: the text in, encoded audio out as the server synthesises it.

The model streams one response per sentence (gRPC, decoupled); each is passed
on at once, cut into pieces no larger than ``MAX_CHUNK`` bytes, because the
Dify daemon hex-encodes every chunk into one stdout line and kills the plugin
past 5 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator

from tritonmm import contract
from tritonmm.contract import Capabilities, Voice
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.transport import InferStream, InputTensor, TritonClient

MAX_CHUNK = 512 * 1024  # 1 MiB of hex per line: far below the daemon's 5 MiB


def pick_voice(caps: Capabilities, model: str, voice: str | None) -> Voice:
    """The named voice, or the model's default (its first) for an empty name."""
    if not caps.voices:
        raise ServerError(f"model '{model}' lists no voices (its config has no {contract.KEY_VOICES})")
    if not voice:
        return caps.voices[0]
    for known in caps.voices:
        if known.name == voice:
            return known
    names = ", ".join(v.name for v in caps.voices)
    raise InvalidInput(f"model '{model}' has no voice {voice!r}; its voices: {names}")


def synthesize(
    client: TritonClient,
    model: str,
    caps: Capabilities,
    text: str,
    *,
    voice: str | None = None,
    audio_format: str = contract.AUDIO_MP3,
) -> Iterator[bytes]:
    """Open the stream now (bad input and connection errors raise here); iterate for audio bytes."""
    if not text.strip():
        raise InvalidInput("the text to speak is empty")
    if audio_format not in contract.AUDIO_FORMATS:
        raise InvalidInput(f"audio format must be one of {', '.join(contract.AUDIO_FORMATS)}, got {audio_format!r}")
    chosen = pick_voice(caps, model, voice)
    inputs = [
        InputTensor(contract.TTS_TEXT, (text.encode("utf-8"),)),
        InputTensor(contract.TTS_VOICE, (chosen.name.encode(),)),
        InputTensor(contract.TTS_FORMAT, (audio_format.encode(),)),
    ]
    return _audio(client.stream_infer(model, inputs, [contract.TTS_AUDIO.name]), model)


def _audio(stream: InferStream, model: str) -> Iterator[bytes]:
    try:
        for response in stream:
            for piece in response.outputs.get(contract.TTS_AUDIO.name) or ():
                for start in range(0, len(piece), MAX_CHUNK):
                    yield piece[start : start + MAX_CHUNK]
            if response.final:
                return
        raise ServerError(f"model '{model}' ended the stream without a final response")
    finally:
        stream.close()


def probe(client: TritonClient, model: str, caps: Capabilities) -> None:
    """One word: proves the model speaks and streams audio back."""
    if not any(synthesize(client, model, caps, "Hello.")):
        raise ServerError(f"model '{model}' returned no audio for a one-word probe")
