"""Generation engine of the bundled chat model.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/chat/1/model.py`` only moves tensors in and out of it.

A request goes through two steps:

* :meth:`ChatEngine.prepare` validates the messages, decodes the media and runs
  the checkpoint's own processor and chat template. Anything wrong with the
  request raises :class:`InputError`.
* :meth:`ChatEngine.generate` returns a :class:`Generation`: iterating it runs
  ``model.generate`` in a worker thread and yields one string per generated
  token; afterwards it carries the finish reason and the token counts.

Media parts refer to the request's media tensors by index, and errors name them
the same way: ``{"type": "image", "index": 2}`` is "image 2".

Audio parts go to the model itself only when it hears audio natively: the
checkpoint's processor has an audio feature extractor (Qwen2-Audio does) and the
config's ``tmm.features`` lists ``audio`` (the engine's ``native_audio``).
Otherwise an audio part is refused, never dropped: the plugin sends such a model
a transcript instead (``tmm.asr_model``). Likewise, image and video parts are
refused by a checkpoint without an image processor.

Parameters, video decoding and token streaming live in ``chat_params``,
``video_frames`` and ``token_stream``.
"""

from __future__ import annotations

import io
import json
import queue
import re
import threading
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModelForMultimodalLM,
    AutoProcessor,
    BatchFeature,
    LogitsProcessorList,
    StoppingCriteriaList,
)

from tritonmm.contract import CHAT_MESSAGES, KEY_ASR_MODEL, KEY_FEATURES, Feature
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.request_params import is_int
from tritonmm_server.engines.chat.params import GenerationParams
from tritonmm_server.engines.chat.token_stream import END, Generation, Relay, Sampler
from tritonmm_server.media.audio import DEFAULT_MAX_SECONDS, WHISPER_RATE, AudioTooLong, decode_audio
from tritonmm_server.media.image import decode_image
from tritonmm_server.media.video import sample_video_frames

__all__ = ["ChatEngine", "Prepared"]

ROLES = ("system", "user", "assistant")
VIDEO_MARKER = "Video frames:"
_ZERO_WIDTH_SPACE = "\u200b"
# Shorter clips give Qwen2-Audio's encoder fewer than two frames, which its
# placeholder expansion cannot handle (it then fails inside generate).
MIN_AUDIO_SECONDS = 0.1
MediaT = TypeVar("MediaT")  # what one image, video or audio decodes to


# --- messages ----------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    kind: str  # "text" | "image" | "video" | "audio"
    text: str = ""
    index: int = -1


@dataclass(frozen=True)
class _Message:
    role: str
    parts: tuple[_Part, ...]


def _parse_messages(messages_json: str) -> list[_Message]:
    try:
        raw = json.loads(messages_json)
    except json.JSONDecodeError as exc:
        raise InputError(f"{CHAT_MESSAGES.name} is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{CHAT_MESSAGES.name} must be a non-empty JSON list of messages")
    return [_parse_message(i, m) for i, m in enumerate(raw)]


def _parse_message(i: int, raw: Any) -> _Message:
    where = f"message {i}"
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be an object, got {type(raw).__name__}")
    role = raw.get("role")
    if role not in ROLES:
        raise InputError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    content = raw.get("content")
    if isinstance(content, str):
        return _Message(role, (_Part("text", text=content),))
    if not isinstance(content, list):
        raise InputError(f"{where}: content must be a string or a list of parts")
    return _Message(role, tuple(_parse_part(f"{where} part {j}", p) for j, p in enumerate(content)))


def _parse_part(where: str, raw: Any) -> _Part:
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be an object, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind == "text":
        text = raw.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where}: a text part needs a string 'text'")
        return _Part("text", text=text)
    if kind in ("image", "video", "audio"):
        index = raw.get("index")
        if not is_int(index) or index < 0:
            raise InputError(f"{where}: a part of type {kind!r} needs an integer 'index' >= 0, got {index!r}")
        return _Part(kind, index=index)
    raise InputError(f"{where}: unknown part type {kind!r} (expected text, image, video or audio)")


# --- media -------------------------------------------------------------------


def _decode_image(index: int, data: bytes) -> Image.Image:
    return decode_image(data, f"image {index}")


# --- prepared request --------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A request turned into model inputs."""

    inputs: BatchFeature
    prompt_tokens: int  # input_ids length, image and audio placeholder tokens included
    image_count: int  # images given to the model, video frames included
    video_frames: dict[int, int] = field(default_factory=dict)  # video index -> frames sampled
    audio_seconds: dict[int, float] = field(default_factory=dict)  # audio index -> seconds heard


# --- engine ------------------------------------------------------------------


class ChatEngine:
    """A multimodal chat checkpoint, loaded once and shared by concurrent requests.

    ``max_images`` caps each kind of media part (images, videos, audios) per request.
    ``native_audio`` says the config declares the ``audio`` feature; the checkpoint
    must then have an audio processor, or loading fails.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        video_max_frames: int,
        video_fps: float,
        max_images: int,
        num_threads: int | None = None,
        native_audio: bool = False,
    ) -> None:
        if video_max_frames < 1 or video_fps <= 0 or max_images < 1:
            raise ValueError("video_max_frames and max_images must be >= 1 and video_fps > 0")
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide: one engine per stub process
        self._dir = Path(model_dir)
        self._video_max_frames = video_max_frames
        self._video_fps = video_fps
        self._max_images = max_images
        self._processor = AutoProcessor.from_pretrained(self._dir)
        # The multimodal-LM auto class covers the image-text-to-text models and the
        # audio-text ones (Qwen2-Audio) alike.
        self._model = AutoModelForMultimodalLM.from_pretrained(self._dir, dtype="auto").eval()
        self._sees_images = getattr(self._processor, "image_processor", None) is not None
        self._audio_extractor = _audio_extractor(self._processor)
        if native_audio and self._audio_extractor is None:
            raise ValueError(
                f"{KEY_FEATURES} lists {Feature.AUDIO.value!r}, but checkpoint {self._dir.name} "
                f"({self._model.config.model_type}) has no audio processor: remove {Feature.AUDIO.value!r} "
                f"from {KEY_FEATURES} (audio then reaches the model as a transcript, see {KEY_ASR_MODEL})"
            )
        self._native_audio = native_audio
        self._audio_rate = int(getattr(self._audio_extractor, "sampling_rate", None) or WHISPER_RATE)
        # Whisper-style extractors pad or cut every clip to one fixed window
        # (n_samples; 30 s for Qwen2-Audio): a longer clip would lose its end silently.
        window = getattr(self._audio_extractor, "n_samples", None)
        self._max_audio_seconds = window / self._audio_rate if window else DEFAULT_MAX_SECONDS
        self.tokenizer = self._processor.tokenizer
        self.eos_token_ids = _eos_token_ids(self._model, self.tokenizer)
        self._pad_token_id = _pad_token_id(self._model, self.tokenizer, self.eos_token_ids)
        self._control_tokens = _control_token_pattern(self.tokenizer, self._processor.chat_template or "")
        self._context_size = _context_size(self._model, self.tokenizer)
        # Preprocessing is short; serialising it keeps the (Rust) tokenizer out of
        # concurrent mutation. Generation itself runs unlocked.
        self._preprocess_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def architecture(self) -> str:
        return self._model.config.model_type

    @property
    def context_size(self) -> int:
        return self._context_size

    @property
    def native_audio(self) -> bool:
        """Whether audio parts go to the model itself."""
        return self._native_audio

    @property
    def max_audio_seconds(self) -> float:
        """The longest audio clip the model hears whole."""
        return self._max_audio_seconds

    def prepare(
        self, messages_json: str, images: Sequence[bytes], videos: Sequence[bytes], audios: Sequence[bytes] = ()
    ) -> Prepared:
        """Validate and preprocess one request; raises InputError for a bad request."""
        messages = _parse_messages(messages_json)
        self._check_modalities(messages)
        decoded_images = self._decode_media(messages, "image", images, _decode_image)
        decoded_videos = self._decode_media(messages, "video", videos, self._decode_video)
        decoded_audios = self._decode_media(messages, "audio", audios, self._decode_audio)
        conversation = [self._to_hf_message(m, decoded_images, decoded_videos, decoded_audios) for m in messages]
        try:
            with self._preprocess_lock:
                inputs = self._processor.apply_chat_template(
                    conversation,
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=True,
                    return_tensors="pt",
                )
        except jinja2.TemplateError as exc:
            # Real templates reject what they do not support (e.g. roles that do not alternate).
            raise InputError(f"the model's chat template rejected the messages: {exc}") from None
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        if prompt_tokens >= self.context_size:
            raise InputError(
                f"the prompt is {prompt_tokens} tokens (images and audio included), "
                f"the model's context is {self.context_size}"
            )
        return Prepared(
            inputs=inputs.to(self._model.device, dtype=self._model.dtype),
            prompt_tokens=prompt_tokens,
            image_count=sum(part["type"] == "image" for m in conversation for part in m["content"]),
            video_frames={index: len(frames) for index, frames in decoded_videos.items()},
            audio_seconds={index: samples.size / self._audio_rate for index, samples in decoded_audios.items()},
        )

    def generate(
        self,
        prepared: Prepared,
        params: GenerationParams,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> Generation:
        """A generation for ``prepared``; nothing runs until it is iterated.

        ``is_cancelled`` is polled after every token, from the worker thread.
        """
        return Generation(self, prepared, params, is_cancelled)

    def warm_up(self) -> None:
        """Run one short generation so that the first request does not pay for lazy initialisation.

        With native audio it hears a second of silence, so that the audio encoder
        is initialised too.
        """
        content: list[dict[str, Any]] = [{"type": "text", "text": "Hi"}]
        audios: list[bytes] = []
        if self._native_audio:
            content.insert(0, {"type": "audio", "index": 0})
            audios.append(_silent_wav(self._audio_rate))
        prepared = self.prepare(json.dumps([{"role": "user", "content": content}]), [], [], audios)
        for _ in self.generate(prepared, GenerationParams(max_tokens=1, temperature=0)):
            pass

    # -- internals --

    def _check_modalities(self, messages: list[_Message]) -> None:
        """Refuse media the model cannot take, before anything is decoded."""
        kinds = {p.kind for m in messages for p in m.parts}
        arch = self._model.config.model_type
        if "audio" in kinds and not self._native_audio:
            if self._audio_extractor is None:
                why = f"{arch} has no audio encoder"
            else:
                why = f"its {KEY_FEATURES} does not list {Feature.AUDIO.value!r}"
            raise InputError(
                f"model {self.name} does not take audio natively ({why}); audio must reach it as a transcript "
                f"from a speech-to-text model ({KEY_ASR_MODEL})"
            )
        for kind in ("image", "video"):
            if kind in kinds and not self._sees_images:
                raise InputError(f"model {self.name} does not take {kind} input ({arch} has no image processor)")

    def _decode_media(
        self, messages: list[_Message], kind: str, blobs: Sequence[bytes], decode: Callable[[int, bytes], MediaT]
    ) -> dict[int, MediaT]:
        """Each ``kind`` ("image", "video", "audio") the messages refer to, decoded once, by index."""
        refs = [p.index for m in messages for p in m.parts if p.kind == kind]
        if len(refs) > self._max_images:
            raise InputError(f"too many {kind}s: {len(refs)} (this model takes at most {self._max_images})")
        decoded = {}
        for index in dict.fromkeys(refs):
            if index >= len(blobs):
                raise InputError(f"{kind} index {index} is out of range: the request has {len(blobs)} {kind}(s)")
            decoded[index] = decode(index, blobs[index])
        return decoded

    def _decode_video(self, index: int, data: bytes) -> list[Image.Image]:
        try:
            return sample_video_frames(data, max_frames=self._video_max_frames, fps=self._video_fps)
        except ValueError as exc:
            raise InputError(f"video {index}: {exc}") from None

    def _decode_audio(self, index: int, data: bytes) -> np.ndarray:
        too_long = (
            f"audio {index} is longer than {self._max_audio_seconds:g} s, the most this model hears in one clip; "
            f"cut it into shorter clips"
        )
        try:
            # Decoding stops at the window, so a long file costs no more than a clip that fits.
            samples = decode_audio(data, rate=self._audio_rate, max_seconds=self._max_audio_seconds)
        except AudioTooLong:
            raise InputError(too_long) from None
        except ValueError as exc:
            raise InputError(f"audio {index}: {exc}") from None
        # The resampler's flush can add a few samples past the check inside decode_audio.
        if samples.size > self._max_audio_seconds * self._audio_rate:
            raise InputError(too_long)
        if samples.size < MIN_AUDIO_SECONDS * self._audio_rate:
            raise InputError(
                f"audio {index} is {1000 * samples.size / self._audio_rate:.0f} ms long; "
                f"this model needs at least {1000 * MIN_AUDIO_SECONDS:.0f} ms"
            )
        return samples

    def _to_hf_message(
        self,
        message: _Message,
        images: Mapping[int, Image.Image],
        videos: Mapping[int, list[Image.Image]],
        audios: Mapping[int, np.ndarray],
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if part.kind == "text":
                content.append({"type": "text", "text": self._defuse(part.text)})
            elif part.kind == "image":
                content.append({"type": "image", "image": images[part.index]})
            elif part.kind == "audio":
                # Decoded already, at the extractor's rate: apply_chat_template passes arrays through.
                content.append({"type": "audio", "audio": audios[part.index]})
            else:
                # Video processors need torchvision, so frames go in as images.
                content.append({"type": "text", "text": VIDEO_MARKER})
                content.extend({"type": "image", "image": frame} for frame in videos[part.index])
        return {"role": message.role, "content": content}

    def _defuse(self, text: str) -> str:
        """Break control tokens written in message text, so they stay text.

        Without this, a user could write "<image>" (breaking the placeholder
        count) or an end-of-turn token (faking a turn). transformers' own
        ``sanitize_control_tokens`` does this job but fails with Idefics3's
        processor in 5.23, hence a zero-width space after the first character.
        """
        if self._control_tokens is None:
            return text
        return self._control_tokens.sub(lambda m: m[0][0] + _ZERO_WIDTH_SPACE + m[0][1:], text)

    def _run_generate(
        self,
        inputs: BatchFeature,
        max_new: int,
        sampler: Sampler,
        relay: Relay,
        out: queue.SimpleQueue,
    ) -> None:
        try:
            with torch.inference_mode():
                self._model.generate(
                    **inputs,
                    max_new_tokens=max_new,
                    do_sample=False,
                    num_beams=1,
                    eos_token_id=sorted(self.eos_token_ids),
                    pad_token_id=self._pad_token_id,
                    logits_processor=LogitsProcessorList([sampler]),
                    stopping_criteria=StoppingCriteriaList([relay]),
                )
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put(exc)
        finally:
            out.put(END)


def _audio_extractor(processor: Any) -> Any | None:
    """The processor's audio feature extractor, or None for a processor that takes no audio.

    Vision processors have no ``feature_extractor``; transformers names the audio
    side ``feature_extractor`` (Qwen2-Audio) or ``audio_processor``.
    """
    for attribute in ("audio_processor", "feature_extractor"):
        extractor = getattr(processor, attribute, None)
        if extractor is not None:
            return extractor
    return None


def _silent_wav(rate: int, seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * int(rate * seconds)))
    return buf.getvalue()


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    if not ids:
        raise ValueError("the checkpoint defines no end-of-sequence token")
    return frozenset(ids)


def _context_size(model: Any, tokenizer: Any) -> int:
    size = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if size is None and tokenizer.model_max_length < 10**7:  # unset, it is a huge sentinel
        size = tokenizer.model_max_length
    if not size:
        raise ValueError("the checkpoint states no context size (max_position_embeddings)")
    return int(size)


def _pad_token_id(model: Any, tokenizer: Any, eos_ids: frozenset[int]) -> int:
    for candidate in (model.generation_config.pad_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return candidate
    return min(eos_ids)


def _control_token_pattern(tokenizer: Any, chat_template: str) -> re.Pattern | None:
    """Special tokens, plus added tokens the template writes itself (as transformers defines control tokens)."""
    tokens = {
        t.content
        for t in tokenizer.added_tokens_decoder.values()
        if len(t.content) > 1 and (t.special or (t.content in chat_template and not t.content.isspace()))
    }
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
