"""Speech to text for the bundled Triton model: an audio file in, the transcript and its timed segments out.

Two runtimes behind one interface, picked by the checkpoint directory
(``tritonmm_server.checkpoints.whisper``):

* a CTranslate2 directory runs on faster-whisper (int8 on CPU, float16 on GPU),
  which does Whisper's own long-form decoding (30 s windows that advance by the
  predicted timestamps, each conditioned on the text before it);
* a Hugging Face directory runs on transformers' ``WhisperForConditionalGeneration``.
  Its long-form mode needs timestamp tokens, which not every checkpoint predicts
  well (and the tiny test build not at all), so the audio is cut instead into
  windows of at most 30 s between utterances, and each window is one segment.

Both decode with ``audio_decode`` (PyAV, 16 kHz mono) and listen only where the
Silero VAD that faster-whisper bundles hears speech: silence gives an empty
transcript rather than Whisper's well-known hallucinations ("Thank you."), and a
cut never falls inside a word. Importable and testable without Triton.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tritonmm.contract import ASR_PARAMS, PARAM_LANGUAGE, PARAM_PROMPT
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.request_params import params_object
from tritonmm_server.checkpoints.whisper import CTRANSLATE2, WhisperCheckpoint, inspect_whisper
from tritonmm_server.media.audio import WHISPER_RATE, decode_audio

__all__ = ["AsrEngine", "AsrOptions", "Cancelled", "Segment", "Transcript", "load_engine", "parse_options"]

LOG = logging.getLogger(__name__)

WINDOW_S = 30.0  # Whisper's input window
# Whisper writes its control tokens as <|...|>; inside a prompt they would steer decoding.
_CONTROL_TOKEN = re.compile(r"<\|[^|<>]*\|>")


class Cancelled(Exception):
    """The caller's ``should_stop`` turned true; the transcription was abandoned."""


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: tuple[Segment, ...]  # in time order; none when no speech was heard
    language: str  # the language given or detected; "" when a multilingual model heard nothing
    duration: float  # seconds of audio decoded

    def segments_json(self) -> str:
        return json.dumps([segment.as_json() for segment in self.segments], ensure_ascii=False)


@dataclass(frozen=True)
class AsrOptions:
    language: str | None = None  # ISO 639-1; None: detect (multilingual models)
    prompt: str | None = None  # conditions the first window: names, spelling, style


def parse_options(raw: bytes | str | None) -> AsrOptions:
    """PARAMS_JSON as options; absent, empty or ``null`` values take the defaults."""
    values = params_object(raw, ASR_PARAMS, (PARAM_LANGUAGE, PARAM_PROMPT))
    for key, value in values.items():
        if not isinstance(value, str):
            raise InputError(f"{key} must be a string, got {type(value).__name__}")
    prompt = values.get(PARAM_PROMPT, "").strip() or None
    if prompt and _CONTROL_TOKEN.search(prompt):
        raise InputError(f"{PARAM_PROMPT} must not contain Whisper control tokens such as <|en|>")
    return AsrOptions(language=values.get(PARAM_LANGUAGE, "").strip() or None, prompt=prompt)


def _never() -> bool:
    return False


class AsrEngine(ABC):
    """One loaded Whisper checkpoint. Not thread-safe: one transcription at a time."""

    runtime: str  # "faster-whisper" or "transformers", for the log

    def __init__(self, checkpoint: WhisperCheckpoint, device: str) -> None:
        self.checkpoint = checkpoint
        self.device = device

    @property
    def languages(self) -> tuple[str, ...]:
        """The ISO 639-1 codes this model transcribes (``("en",)`` for English-only models)."""
        return self.checkpoint.languages

    @property
    def multilingual(self) -> bool:
        return self.checkpoint.multilingual

    def transcribe(
        self, audio: bytes, options: AsrOptions = AsrOptions(), should_stop: Callable[[], bool] = _never
    ) -> Transcript:
        """Transcribe a whole audio file (any container ``decode_audio`` reads).

        Raises InputError for undecodable or empty audio and unsupported languages,
        Cancelled when ``should_stop()`` turns true between segments.
        """
        language = self.check_language(options.language)
        try:
            samples = decode_audio(audio)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        duration = samples.size / WHISPER_RATE
        started = time.perf_counter()
        pieces, language = self._transcribe(samples, language, options.prompt, should_stop)
        segments = _clean(pieces, duration)
        LOG.debug("transcribed %.1f s of audio in %.2f s", duration, time.perf_counter() - started)
        text = "".join(piece.text for piece in pieces).strip()
        return Transcript(text, segments, language, duration)

    def check_language(self, language: str | None) -> str | None:
        """The ISO code to decode in (None: detect); InputError for one the model lacks."""
        if language is None:
            return None if self.multilingual else "en"
        code = language.strip().lower().replace("_", "-").split("-")[0]  # "en-US" -> "en"
        if code in self.languages:
            return code
        if not self.multilingual:
            raise InputError(f"language {language!r} is not supported: this Whisper model is English-only (en)")
        raise InputError(
            f"language {language!r} is not supported by this Whisper model; it supports: {', '.join(self.languages)}"
        )

    @abstractmethod
    def warm_up(self) -> None:
        """Run the model once, so the first request does not pay for lazy initialisation."""

    @abstractmethod
    def _transcribe(
        self, samples: np.ndarray, language: str | None, prompt: str | None, should_stop: Callable[[], bool]
    ) -> tuple[list[Segment], str]:
        """Raw segments (text as the model wrote it) and the language used."""


def _clean(pieces: list[Segment], duration: float) -> tuple[Segment, ...]:
    """Times clipped to the audio and never running backwards; empty texts dropped."""
    segments, last_end = [], 0.0
    for piece in pieces:
        text = piece.text.strip()
        if not text:
            continue
        start = min(max(piece.start, last_end), duration)
        end = min(max(piece.end, start), duration)
        segments.append(Segment(start, end, text))
        last_end = end
    return tuple(segments)


def load_engine(path: str | Path) -> AsrEngine:
    """The engine for a Whisper checkpoint directory; ValueError says why it is not one."""
    checkpoint = inspect_whisper(Path(path))
    if checkpoint.layout == CTRANSLATE2:
        return FasterWhisperEngine(checkpoint)
    return TransformersWhisperEngine(checkpoint)


def _cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- faster-whisper (CTranslate2) ---------------------------------------------------------------


class FasterWhisperEngine(AsrEngine):
    runtime = "faster-whisper"

    def __init__(self, checkpoint: WhisperCheckpoint) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        # CTranslate2's own CUDA check: it is what runs the model, whatever torch sees.
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        super().__init__(checkpoint, device)
        self._model = WhisperModel(
            str(checkpoint.path),
            device=device,
            compute_type="float16" if device == "cuda" else "int8",
            cpu_threads=_cpu_threads(),
        )
        if not self._model.model.is_multilingual and checkpoint.multilingual:
            raise ValueError("CTranslate2 loads this checkpoint as English-only but its vocabulary is multilingual")

    def warm_up(self) -> None:
        # Without the VAD: silence must still reach the encoder and decoder once.
        segments, _ = self._model.transcribe(np.zeros(WHISPER_RATE, np.float32), language="en", vad_filter=False)
        list(segments)

    def _transcribe(
        self, samples: np.ndarray, language: str | None, prompt: str | None, should_stop: Callable[[], bool]
    ) -> tuple[list[Segment], str]:
        segments, info = self._model.transcribe(
            samples, language=language, task="transcribe", initial_prompt=prompt, vad_filter=True
        )
        pieces = []
        for segment in segments:  # a generator: each step decodes the next window
            if should_stop():
                raise Cancelled
            pieces.append(Segment(segment.start, segment.end, segment.text))
        return pieces, language or info.language


# --- transformers -------------------------------------------------------------------------------


def speech_windows(samples: np.ndarray, window_s: float = WINDOW_S) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at most ``window_s`` seconds that hold all the speech.

    The VAD cuts at every pause of half a second (between sentences, mostly), and
    consecutive pieces share a window while they fit, so a window ends in a pause.
    Its default of 2 s would leave fluent speech in one piece that the VAD then cuts
    at the limit, wherever that falls; speech without any pause still is.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    limit = int(window_s * WHISPER_RATE)
    options = VadOptions(min_silence_duration_ms=500, max_speech_duration_s=window_s)
    chunks = get_speech_timestamps(samples, options, sampling_rate=WHISPER_RATE)
    windows: list[tuple[int, int]] = []
    for chunk in chunks:
        start, end = int(chunk["start"]), min(int(chunk["end"]), samples.size)
        if windows and end - windows[-1][0] <= limit:
            windows[-1] = (windows[-1][0], end)
            continue
        while end - start > limit:  # the VAD keeps chunks within the limit; if one is not, none of it is dropped
            windows.append((start, start + limit))
            start += limit
        windows.append((start, end))
    return windows


class TransformersWhisperEngine(AsrEngine):
    runtime = "transformers"

    def __init__(self, checkpoint: WhisperCheckpoint) -> None:
        import torch
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        device = "cuda" if torch.cuda.is_available() else "cpu"
        super().__init__(checkpoint, device)
        self._torch = torch
        self._processor = AutoProcessor.from_pretrained(checkpoint.path)
        dtype = torch.float16 if device == "cuda" else torch.float32
        self._model = AutoModelForSpeechSeq2Seq.from_pretrained(checkpoint.path, dtype=dtype).to(device).eval()
        generation = self._model.generation_config
        positions = self._model.config.max_target_positions
        # Whisper's own limits: a prompt of at most half the decoder window, and at
        # most half the window of new tokens per 30 s (openai/whisper's sample_len).
        # Random weights seldom emit the end token, so this also bounds each call.
        self._max_prompt = positions // 2 - 1
        self._max_new_tokens = positions // 2
        self._id_to_language = {token_id: token[2:-2] for token, token_id in (generation.lang_to_id or {}).items()}

    def warm_up(self) -> None:
        self._generate(np.zeros(WHISPER_RATE, np.float32), "en" if self.multilingual else None, None, max_new_tokens=2)

    def _transcribe(
        self, samples: np.ndarray, language: str | None, prompt: str | None, should_stop: Callable[[], bool]
    ) -> tuple[list[Segment], str]:
        prompt_ids = self._prompt_ids(prompt) if prompt else None
        pieces = []
        for start, end in speech_windows(samples):
            if should_stop():
                raise Cancelled
            window = samples[start:end]
            if language is None:
                language = self._detect_language(window)
            text = self._generate(window, language if self.multilingual else None, prompt_ids)
            pieces.append(Segment(start / WHISPER_RATE, end / WHISPER_RATE, text))
            prompt_ids = None  # the prompt conditions the first window only
        return pieces, language or ""

    def _features(self, window: np.ndarray) -> Any:
        features = self._processor(window, sampling_rate=WHISPER_RATE, return_tensors="pt").input_features
        return features.to(self._model.device, self._model.dtype)

    def _detect_language(self, window: np.ndarray) -> str:
        with self._torch.inference_mode():
            token_id = int(self._model.detect_language(self._features(window))[0])
        return self._id_to_language[token_id]

    def _prompt_ids(self, prompt: str) -> Any:
        ids = self._processor.get_prompt_ids(prompt, return_tensors="pt")
        if ids.shape[-1] > self._max_prompt:  # keep <|startofprev|> and the prompt's end, as Whisper does
            ids = self._torch.cat([ids[:1], ids[-(self._max_prompt - 1) :]])
        return ids.to(self._model.device)

    def _generate(
        self, window: np.ndarray, language: str | None, prompt_ids: Any, max_new_tokens: int | None = None
    ) -> str:
        kwargs: dict[str, Any] = {"return_timestamps": False, "do_sample": False, "num_beams": 1}
        if language is not None:  # English-only checkpoints refuse a language or task
            kwargs.update(language=language, task="transcribe")
        if prompt_ids is not None:
            kwargs["prompt_ids"] = prompt_ids
        # Whisper's generate reads max_length as new tokens after the start tokens and
        # the prompt, and caps the total at the decoder window itself. (max_new_tokens
        # would make transformers warn on every call that it overrides the checkpoint's max_length.)
        kwargs["max_length"] = max_new_tokens or self._max_new_tokens
        with self._torch.inference_mode():
            sequences = self._model.generate(self._features(window), **kwargs)
        return self._processor.batch_decode(sequences, skip_special_tokens=True)[0]
