"""Generation engine of the bundled chat model.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/chat/1/model.py`` only moves tensors in and out of it.

A request goes through two steps:

* :meth:`ChatEngine.prepare` decodes ``MESSAGES_JSON`` with the chat wire module
  (:mod:`tritonmm.chat_wire`, the one format both sides speak), checks the media
  against what the checkpoint takes and the request carries, decodes them and runs
  the checkpoint's own processor and chat template. Anything wrong with the request
  raises :class:`InputError`.
* :meth:`ChatEngine.generate` returns a :class:`Generation`: iterating it runs the
  generation step (:class:`Generator`) in a worker thread and yields one string per
  generated token; afterwards it carries the finish reason and the token counts.

Media parts refer to the request's media tensors by index; errors name them as
people count them, from 1 per kind: ``{"type": "image", "index": 0}`` is "image 1".
``tmm.max_images`` caps each media kind (images, videos, audio clips) per request.

Audio parts go to the model itself only when it hears audio natively: the
checkpoint's processor has an audio feature extractor (Qwen2-Audio does) and the
config's ``tmm.features`` lists ``audio`` (the engine's ``native_audio``).
Otherwise an audio part is refused, never dropped: the plugin sends such a model
a transcript instead (``tmm.asr_model``). Likewise, image and video parts are
refused by a checkpoint without an image processor.

Parameters, media decoding, the generation step and token streaming live in
:mod:`.params`, :mod:`.media`, :mod:`.generator` and :mod:`.token_stream`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import torch
from transformers import AutoModelForMultimodalLM, AutoProcessor, BatchFeature

from tritonmm.chat_wire import (
    MEDIA_KINDS,
    WireError,
    WireMessage,
    check_media_counts,
    check_media_refs,
    decode_messages,
    encode_messages,
    media_part,
    text_part,
)
from tritonmm.contract import KEY_ASR_MODEL, KEY_FEATURES, Feature
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.context import generation_context
from tritonmm_server.engines.chat.batching import BatchedGeneration, BatchLimits, BatchScheduler
from tritonmm_server.engines.chat.generator import Generator
from tritonmm_server.engines.chat.kv_batch import supports_batched_decoding
from tritonmm_server.engines.chat.media import ChatMedia, DecodedMedia, silent_wav
from tritonmm_server.engines.chat.params import GenerationParams
from tritonmm_server.engines.chat.token_stream import Generation
from tritonmm_server.media.audio import DEFAULT_MAX_SECONDS, WHISPER_RATE

__all__ = ["ChatEngine", "Prepared"]

VIDEO_MARKER = "Video frames:"
_ZERO_WIDTH_SPACE = "\u200b"


@dataclass(frozen=True)
class Prepared:
    """A request turned into model inputs."""

    inputs: BatchFeature
    prompt_tokens: int  # input_ids length, image and audio placeholder tokens included
    image_count: int  # images given to the model, video frames included
    video_frames: dict[int, int] = field(default_factory=dict)  # video wire index -> frames sampled
    audio_seconds: dict[int, float] = field(default_factory=dict)  # audio wire index -> seconds heard


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
        batching: BatchLimits | None = None,
        device: str | None = None,
    ) -> None:
        if video_max_frames < 1 or video_fps <= 0 or max_images < 1:
            raise ValueError("video_max_frames and max_images must be >= 1 and video_fps > 0")
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide: one engine per stub process
        self._dir = Path(model_dir)
        self._max_images = max_images
        context_size = generation_context(self._dir)
        if context_size is None:
            raise ValueError("the checkpoint states no context size (max_position_embeddings)")
        self._processor = AutoProcessor.from_pretrained(self._dir)
        # The multimodal-LM auto class covers the image-text-to-text models and the
        # audio-text ones (Qwen2-Audio) alike.
        # The first GPU when there is one (Triton's KIND_CPU instance groups leave the
        # choice to the model); the checkpoint's own dtype ("auto").
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForMultimodalLM.from_pretrained(self._dir, dtype="auto").to(device).eval()
        self._sees_images = getattr(self._processor, "image_processor", None) is not None
        self._audio_extractor = _audio_extractor(self._processor)
        if native_audio and self._audio_extractor is None:
            raise ValueError(
                f"{KEY_FEATURES} lists {Feature.AUDIO.value!r}, but checkpoint {self._dir.name} "
                f"({model.config.model_type}) has no audio processor: remove {Feature.AUDIO.value!r} "
                f"from {KEY_FEATURES} (audio then reaches the model as a transcript, see {KEY_ASR_MODEL})"
            )
        self._native_audio = native_audio
        audio_rate = int(getattr(self._audio_extractor, "sampling_rate", None) or WHISPER_RATE)
        # Whisper-style extractors pad or cut every clip to one fixed window
        # (n_samples; 30 s for Qwen2-Audio): a longer clip would lose its end silently.
        window = getattr(self._audio_extractor, "n_samples", None)
        self._media = ChatMedia(
            video_max_frames=video_max_frames,
            video_fps=video_fps,
            audio_rate=audio_rate,
            max_audio_seconds=window / audio_rate if window else DEFAULT_MAX_SECONDS,
        )
        self._generator = Generator.for_checkpoint(model, self._processor.tokenizer, context_size)
        # Iteration-level batching where the architecture allows it (kv_batch), else a
        # generate() per request in its own thread (token_stream.Generation).
        self._scheduler = None
        if batching is not None and supports_batched_decoding(model):
            self._scheduler = BatchScheduler(
                model, self.tokenizer, self.eos_token_ids, context_size, batching, name=self.name
            )
        self._control_tokens = _control_token_pattern(self.tokenizer, self._processor.chat_template or "")
        # Preprocessing is short; serialising it keeps the (Rust) tokenizer out of
        # concurrent mutation. Generation itself runs unlocked.
        self._preprocess_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def architecture(self) -> str:
        return self._generator.model.config.model_type

    @property
    def context_size(self) -> int:
        return self._generator.context_size

    @property
    def tokenizer(self) -> Any:
        return self._generator.tokenizer

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._generator.eos_token_ids

    @property
    def batching(self) -> BatchLimits | None:
        """The batch limits when requests share decoding steps; None when each runs alone."""
        return None if self._scheduler is None else self._scheduler.limits

    @property
    def native_audio(self) -> bool:
        """Whether audio parts go to the model itself."""
        return self._native_audio

    @property
    def max_audio_seconds(self) -> float:
        """The longest audio clip the model hears whole."""
        return self._media.max_audio_seconds

    def prepare(
        self, messages_json: str | bytes, images: Sequence[bytes], videos: Sequence[bytes], audios: Sequence[bytes] = ()
    ) -> Prepared:
        """Validate and preprocess one request; raises InputError for a bad request."""
        try:
            messages = decode_messages(messages_json)
            self._check_modalities(messages)
            check_media_counts(messages, self._max_images, self.name)
            check_media_refs(messages, {"image": len(images), "video": len(videos), "audio": len(audios)})
        except WireError as exc:
            raise InputError(str(exc)) from None
        media = self._media.decode(messages, images, videos, audios)
        conversation = [self._to_hf_message(m, media) for m in messages]
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
        model = self._generator.model
        return Prepared(
            inputs=inputs.to(model.device, dtype=model.dtype),
            prompt_tokens=prompt_tokens,
            image_count=sum(part["type"] == "image" for m in conversation for part in m["content"]),
            video_frames={index: len(frames) for index, frames in media.videos.items()},
            audio_seconds={index: samples.size / self._media.audio_rate for index, samples in media.audios.items()},
        )

    def generate(
        self,
        prepared: Prepared,
        params: GenerationParams,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> Generation | BatchedGeneration:
        """A generation for ``prepared``: iterate it for the text of each token.

        With batching it joins the shared batch now (raises :class:`Busy` when the
        waiting line is full); without, nothing runs until it is iterated.
        ``is_cancelled`` is polled after every token.
        """
        if self._scheduler is not None:
            return self._scheduler.submit(prepared, params, is_cancelled)
        return Generation(self._generator, prepared.inputs, prepared.prompt_tokens, params, is_cancelled)

    def close(self) -> None:
        """Stop the batch scheduler after the running requests (model unload)."""
        if self._scheduler is not None:
            self._scheduler.stop()

    def warm_up(self) -> None:
        """Run one short generation so that the first request does not pay for lazy initialisation.

        With native audio it hears a second of silence, so that the audio encoder
        is initialised too.
        """
        parts = [text_part("Hi")]
        audios: list[bytes] = []
        if self._native_audio:
            parts.insert(0, media_part("audio", 0))
            audios.append(silent_wav(self._media.audio_rate))
        prepared = self.prepare(encode_messages([WireMessage("user", tuple(parts))]), [], [], audios)
        for _ in self.generate(prepared, GenerationParams(max_tokens=1, temperature=0)):
            pass

    # -- internals --

    def _check_modalities(self, messages: list[WireMessage]) -> None:
        """Refuse media the model cannot take, before anything is counted or decoded."""
        kinds = {p.kind for m in messages for p in m.parts if p.kind in MEDIA_KINDS}
        arch = self.architecture
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

    def _to_hf_message(self, message: WireMessage, media: DecodedMedia) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if part.kind == "text":
                content.append({"type": "text", "text": self._defuse(part.text)})
            elif part.kind == "image":
                content.append({"type": "image", "image": media.images[part.index]})
            elif part.kind == "audio":
                # Decoded already, at the extractor's rate: apply_chat_template passes arrays through.
                content.append({"type": "audio", "audio": media.audios[part.index]})
            else:
                # Video processors need torchvision, so frames go in as images.
                content.append({"type": "text", "text": VIDEO_MARKER})
                content.extend({"type": "image", "image": frame} for frame in media.videos[part.index])
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
