"""Speech to text: one audio file in, the transcript and its timed segments out.

The file travels as raw bytes in one BYTES tensor (HTTP binary-data extension);
the server decodes whatever container it is. Also the cascade step that turns
the audio parts of a chat into text for chat models without native audio.
"""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass

from tritonmm import contract
from tritonmm.contract import Capabilities
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.transport import InputTensor, TritonClient


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: tuple[Segment, ...]
    language: str
    duration: float  # seconds of audio the server decoded


def transcribe(
    client: TritonClient,
    model: str,
    caps: Capabilities,
    audio: bytes,
    *,
    language: str | None = None,
    prompt: str | None = None,
    what: str = "the audio",
) -> Transcript:
    loader_for(Modality.AUDIO).check(audio, what, client.settings.media)
    language = (language or "").strip().lower() or None
    if language and caps.languages and language not in caps.languages:
        raise InvalidInput(
            f"model '{model}' does not transcribe language {language!r}; it supports: {', '.join(caps.languages)}"
        )
    params = {
        key: value for key, value in ((contract.PARAM_LANGUAGE, language), (contract.PARAM_PROMPT, prompt)) if value
    }
    inputs = [
        InputTensor(contract.ASR_AUDIO, (audio,)),
        InputTensor(contract.ASR_PARAMS, (json.dumps(params).encode(),)),
    ]
    out = client.infer(model, inputs, [spec.name for spec in contract.ASR_OUTPUTS])
    try:
        text = out[contract.ASR_TEXT.name][0].decode("utf-8")
        raw_segments = json.loads(out[contract.ASR_SEGMENTS.name][0])
        segments = tuple(Segment(float(s["start"]), float(s["end"]), str(s["text"])) for s in raw_segments)
        return Transcript(
            text=text.strip(),
            segments=segments,
            language=out[contract.ASR_LANGUAGE.name][0].decode(),
            duration=float(out[contract.ASR_DURATION.name][0]),
        )
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ServerError(f"model '{model}' answered outside the speech_to_text contract: {exc}") from None


def silence_wav(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    """A valid, silent WAV file: the probe's input."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def probe(client: TritonClient, model: str, caps: Capabilities) -> None:
    """Half a second of silence: proves the model decodes audio and answers in the contract's shape."""
    transcript = transcribe(client, model, caps, silence_wav(), what="the probe audio")
    if transcript.duration <= 0:
        raise ServerError(f"model '{model}' decoded no audio from a half-second probe")
