# SPDX-License-Identifier: Apache-2.0
"""Text to speech with Piper voices, streamed sentence by sentence as MP3 (or one WAV).

Everything the Triton model does except the tensor plumbing, so that it can be
tested in-process: validation, splitting long text, synthesis, encoding.

Streaming shape: Piper synthesises one sentence per step. For MP3 one encoder
stays open for the whole request and every sentence's PCM goes into it; the MP3
frames it has ready after each sentence form one chunk, and the frames still
held back (the encoder's look-ahead) follow with later chunks or the final
flush. So every chunk holds whole frames and their concatenation is a single
continuous MP3 stream, with no gap or click between sentences. WAV needs its
length in the header, so it is one chunk at the end.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import wave
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime
from piper import PiperVoice, SynthesisConfig

from tritonmm.contract import AUDIO_FORMATS, AUDIO_MP3, AUDIO_WAV
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.piper import VoiceChoice, VoiceFile, find_voices, lookup, voice_choices

LOG = logging.getLogger(__name__)

# Longer texts are refused (config key KEY_MAX_TEXT_CHARS): 100k characters are
# about two hours of speech, roughly 55 MB of MP3 at 64 kbit/s (WAV: about 5x that).
MAX_TEXT_CHARS = 100_000
KEY_MAX_TEXT_CHARS = "tmm.max_text_chars"
# MP3 bit rate in kbit/s (config key KEY_MP3_KBPS); 64 is transparent enough for 22 kHz mono speech.
MP3_KBPS = 64
KEY_MP3_KBPS = "tmm.mp3_kbps"
# Piper runs one ONNX pass per sentence, with memory and latency growing with its
# length; text with no sentence punctuation is cut into pieces of at most this
# many characters, at the last sentence end, line break, clause or space before it.
# A 400-character piece is at most ~35 s of audio, ~280 kB of MP3.
MAX_PIECE_CHARS = 400
WARM_UP_TEXT = "Ready."

_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*\s+")
_LINE_BREAK = re.compile(r"\s*\n\s*")
_CLAUSE_END = re.compile(r"[,;:\u3001\uff0c\uff1b\uff1a]\s*|\s[-\u2013\u2014]\s")
_SPACE = re.compile(r"\s+")


def split_text(text: str, limit: int = MAX_PIECE_CHARS) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut where a pause is natural.

    Piper still splits each piece into sentences itself; the pieces only bound
    the work per sentence when the text has long runs without punctuation.
    """
    pieces = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]  # a cut right after the limit-th character is still in bounds
        cut = next(
            (
                end
                for pattern in (_SENTENCE_END, _LINE_BREAK, _CLAUSE_END, _SPACE)
                if (end := _last_end(pattern, window))
            ),
            limit,  # one "word" longer than the limit (e.g. text without spaces): cut it anywhere
        )
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [piece for piece in pieces if piece]


def _last_end(pattern: re.Pattern[str], window: str) -> int:
    """End of the last match of ``pattern`` in ``window`` that leaves a non-empty piece, else 0."""
    end = 0
    for match in pattern.finditer(window):
        if window[: match.end()].strip():
            end = match.end()
    return end


class Mp3Writer:
    """One MP3 encoder for a whole request: PCM in, whole MP3 frames out as they are ready."""

    def __init__(self, sample_rate: int, kbps: int = MP3_KBPS) -> None:
        codec = av.Codec("mp3", "w")
        rate = _mp3_rate(sample_rate, sorted(codec.audio_rates or ()))
        self._context = av.CodecContext.create(codec)
        self._context.sample_rate = rate
        self._context.layout = "mono"
        self._context.format = "s16p"
        self._context.bit_rate = kbps * 1000
        self._context.open()
        self._source_rate = sample_rate
        self._resampler = None if rate == sample_rate else av.AudioResampler(format="s16p", layout="mono", rate=rate)
        self._pts = 0

    def add(self, pcm: np.ndarray) -> bytes:
        """Encode int16 mono samples; returns the MP3 frames completed so far (maybe none)."""
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16p", layout="mono")
        frame.sample_rate = self._source_rate
        frame.time_base = Fraction(1, self._source_rate)
        frame.pts = self._pts
        self._pts += frame.samples
        frames = self._resampler.resample(frame) if self._resampler else [frame]
        return b"".join(self._encode(f) for f in frames)

    def finish(self) -> bytes:
        """The frames still held in the encoder; the stream is complete after them."""
        tail = self._resampler.resample(None) if self._resampler else []
        return b"".join(self._encode(f) for f in [*tail, None])

    def _encode(self, frame: Any) -> bytes:
        return b"".join(bytes(packet) for packet in self._context.encode(frame))


def _mp3_rate(sample_rate: int, rates: list[int]) -> int:
    """libmp3lame takes only the MPEG sample rates; other voices are resampled to the next one up."""
    if not rates or sample_rate in rates:
        return sample_rate
    return next((rate for rate in rates if rate > sample_rate), rates[-1])


class WavWriter:
    """PCM16 mono WAV; the whole file comes out at the end, since its header holds the length."""

    def __init__(self, sample_rate: int) -> None:
        self._sample_rate = sample_rate
        self._parts: list[bytes] = []

    def add(self, pcm: np.ndarray) -> bytes:
        self._parts.append(pcm.astype("<i2", copy=False).tobytes())
        return b""

    def finish(self) -> bytes:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self._sample_rate)
            wav.writeframes(b"".join(self._parts))
        self._parts.clear()
        return buffer.getvalue()


class Synthesis:
    """One request's speech. Iterate it once for the encoded chunks.

    For MP3: one chunk per sentence that completed at least one MP3 frame, then
    the encoder's tail. For WAV: one chunk, the whole file. Iteration stops early,
    with ``cancelled`` set, when ``is_cancelled()`` turns true between sentences.
    """

    def __init__(
        self,
        voice: Any,
        choice: VoiceChoice,
        pieces: list[str],
        writer: Mp3Writer | WavWriter,
        is_cancelled: Callable[[], bool],
    ) -> None:
        self._voice = voice
        self._choice = choice
        self._pieces = pieces
        self._writer = writer
        self._is_cancelled = is_cancelled
        self._started = False
        self.sample_rate = voice.config.sample_rate
        self.samples = 0
        self.sentences = 0
        self.cancelled = False

    @property
    def seconds(self) -> float:
        """Audio synthesised so far, in seconds."""
        return self.samples / self.sample_rate

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a Synthesis can be iterated only once")
        self._started = True
        config = SynthesisConfig(speaker_id=self._choice.speaker_id)
        for piece in self._pieces:
            sentences = iter(self._voice.synthesize(piece, syn_config=config))
            while True:
                # Checked before each sentence is synthesised: a cancelled request costs at most one more.
                if self._is_cancelled():
                    self.cancelled = True
                    return
                chunk = next(sentences, None)
                if chunk is None:
                    break
                pcm = chunk.audio_int16_array
                self.samples += len(pcm)
                self.sentences += 1
                if data := self._writer.add(pcm):
                    yield data
        if self.samples == 0:
            raise InputError("the text has nothing to speak (only punctuation or symbols)")
        if tail := self._writer.finish():
            yield tail


class TtsEngine:
    """The Piper voices of one directory; ``synthesize`` validates a request and returns its ``Synthesis``."""

    def __init__(
        self,
        voice_dir: str | Path,
        *,
        max_text_chars: int = MAX_TEXT_CHARS,
        mp3_kbps: int = MP3_KBPS,
        use_gpu: bool | None = None,
    ) -> None:
        files = find_voices(Path(voice_dir))  # VoiceDirError when there is none
        self.choices: tuple[VoiceChoice, ...] = tuple(voice_choices(files))
        self._by_name = lookup(files)
        self.max_text_chars = max_text_chars
        self.mp3_kbps = mp3_kbps
        self._use_gpu = _cuda_available() if use_gpu is None else use_gpu
        self._loaded: dict[Path, Any] = {}
        self._load_lock = threading.Lock()

    @property
    def default_voice(self) -> VoiceChoice:
        return self.choices[0]

    @property
    def device(self) -> str:
        return "cuda" if self._use_gpu else "cpu"

    def warm_up(self) -> None:
        """Load the default voice and run it once: the first ONNX run and espeak's start-up are slow."""
        for _ in self.synthesize(WARM_UP_TEXT, audio_format=AUDIO_WAV):
            pass

    def synthesize(
        self,
        text: str,
        voice: str | None = None,
        audio_format: str | None = None,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> Synthesis:
        """Check the request (``InputError`` if it is wrong) and prepare its synthesis.

        ``voice`` None or "" is the default voice; ``audio_format`` None or "" is MP3.
        Validation happens here, before any audio, so a bad request never gets a partial stream.
        """
        if not text or not text.strip():
            raise InputError("the text is empty")
        if len(text) > self.max_text_chars:
            raise InputError(
                f"the text has {len(text)} characters; this model takes at most {self.max_text_chars} per request"
            )
        choice = self._choice(voice)
        fmt = (audio_format or AUDIO_MP3).strip().lower()
        if fmt not in AUDIO_FORMATS:
            raise InputError(f"unknown audio format {audio_format!r}; use one of: {', '.join(AUDIO_FORMATS)}")
        piper_voice = self._load(choice.voice)
        rate = piper_voice.config.sample_rate
        writer = Mp3Writer(rate, self.mp3_kbps) if fmt == AUDIO_MP3 else WavWriter(rate)
        return Synthesis(piper_voice, choice, split_text(text), writer, is_cancelled)

    def _choice(self, name: str | None) -> VoiceChoice:
        if not name:
            return self.default_voice
        try:
            return self._by_name[name]
        except KeyError:
            names = [c.name for c in self.choices]
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            raise InputError(f"unknown voice {name!r}; available voices: {shown}") from None

    def _load(self, voice: VoiceFile) -> Any:
        # Voices load on first use (about a second each), not all at start-up: a
        # directory of many voices would otherwise hold them all in memory.
        with self._load_lock:
            loaded = self._loaded.get(voice.model)
            if loaded is None:
                loaded = PiperVoice.load(voice.model, config_path=voice.config, use_cuda=self._use_gpu)
                self._loaded[voice.model] = loaded
                LOG.info(
                    "loaded Piper voice %s (%s, %d Hz, %s)", voice.name, voice.language, voice.sample_rate, self.device
                )
            return loaded


def _cuda_available() -> bool:
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
