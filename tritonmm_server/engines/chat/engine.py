"""Generation engine of the bundled chat model.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/chat/1/model.py`` only moves tensors in and out of it.

A request goes through two steps:

* :meth:`ChatEngine.prepare` decodes ``MESSAGES_JSON`` with the chat wire module
  (:mod:`tritonmm.chat_wire`, the one format both sides speak), checks the media
  against what the checkpoint takes and the request carries, decodes them and runs
  the checkpoint's own processor and chat template, with the tools offered and the
  thinking switch (:mod:`.template`, :mod:`.conversation`). Anything wrong with the
  request raises :class:`InputError`.
* :meth:`ChatEngine.generate` returns a :class:`ChatOutput`: iterating it yields the
  text of each generated token (with tools offered, only what is not call markup);
  afterwards it carries the finish reason, the token counts and the tool calls. A
  structured-output constraint (:meth:`ChatEngine.constraint`) steers every token.

Media parts refer to the request's media tensors by index; errors name them as
people count them, from 1 per kind: ``{"type": "image", "index": 0}`` is "image 1".
``tmm.max_images`` caps each media kind (images, videos, audio clips) per request.

Audio parts go to the model itself only when it hears audio natively: the
checkpoint's processor has an audio feature extractor (Qwen2-Audio does) and the
config's ``tmm.features`` lists ``audio`` (the engine's ``native_audio``).
Otherwise an audio part is refused, never dropped: the plugin sends such a model
a transcript instead (``tmm.asr_model``). Likewise, image and video parts are
refused by a checkpoint without an image processor.

Parameters, media decoding, the generation step, token streaming and the output
filter live in :mod:`.params`, :mod:`.media`, :mod:`.generator`, :mod:`.token_stream`
and :mod:`.output`. PDF documents are rendered page by page into images
(``tmm.document_*``), so a checkpoint that sees images reads them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from tritonmm.structured_output import ResponseFormat
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.context import generation_context
from tritonmm_server.engines.chat.batching import BatchLimits, BatchScheduler
from tritonmm_server.engines.chat.constrained import Constraint, ConstraintLogitsProcessor, StructuredOutput
from tritonmm_server.engines.chat.conversation import parse_tools
from tritonmm_server.engines.chat.generator import Generator
from tritonmm_server.engines.chat.kv_batch import supports_batched_decoding
from tritonmm_server.engines.chat.media import DEFAULT_DOCUMENT_LIMITS, ChatMedia, DocumentLimits, silent_wav
from tritonmm_server.engines.chat.output import ChatOutput
from tritonmm_server.engines.chat.params import GenerationParams
from tritonmm_server.engines.chat.template import ChatTemplate
from tritonmm_server.engines.chat.token_stream import Generation
from tritonmm_server.media.audio import DEFAULT_MAX_SECONDS, WHISPER_RATE

__all__ = ["ChatEngine", "Prepared"]


@dataclass(frozen=True)
class Prepared:
    """A request turned into model inputs."""

    inputs: BatchFeature
    prompt_tokens: int  # input_ids length, image and audio placeholder tokens included
    image_count: int  # images given to the model, video frames included
    video_frames: dict[int, int] = field(default_factory=dict)  # video wire index -> frames sampled
    audio_seconds: dict[int, float] = field(default_factory=dict)  # audio wire index -> seconds heard
    document_pages: dict[int, int] = field(default_factory=dict)  # document wire index -> pages rendered
    tool_names: tuple[str, ...] = ()  # the tools offered
    hidden_ids: frozenset[int] | None = None  # special tokens dropped from the text (TokenText's)
    opens_thinking: bool = False  # the prompt ends in an open <think> block


class ChatEngine:
    """A multimodal chat checkpoint, loaded once and shared by concurrent requests.

    ``max_images`` caps each kind of media part (images, videos, audios) per request.
    ``native_audio`` says the config declares the ``audio`` feature; the checkpoint
    must then have an audio processor, or loading fails. ``tool_call_family`` and
    ``thinking_switch`` are the config's claims about the chat template
    (:class:`ChatTemplate` checks them); ``documents``: how PDF pages are rendered.
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
        tool_call_family: str = "",
        thinking_switch: bool = False,
        documents: DocumentLimits = DEFAULT_DOCUMENT_LIMITS,
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
            documents=documents,
        )
        self._generator = Generator.for_checkpoint(model, self._processor.tokenizer, context_size)
        # Iteration-level batching where the architecture allows it (kv_batch), else a
        # generate() per request in its own thread (token_stream.Generation).
        self._scheduler = None
        if batching is not None and supports_batched_decoding(model):
            self._scheduler = BatchScheduler(
                model, self.tokenizer, self.eos_token_ids, context_size, batching, name=self.name
            )
        self._template = ChatTemplate(
            self._processor,
            self.tokenizer,
            name=self.name,
            tool_call_family=tool_call_family,
            thinking_switch=thinking_switch,
        )
        self._structured: StructuredOutput | None = None  # built at the first structured request
        self._structured_lock = threading.Lock()
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

    @property
    def tool_call_family(self) -> str:
        """The family whose tool calls this model makes ("" when its template renders no tools)."""
        return self._template.family.value if self._template.family else ""

    def prepare(
        self,
        messages_json: str | bytes,
        images: Sequence[bytes],
        videos: Sequence[bytes],
        audios: Sequence[bytes] = (),
        documents: Sequence[bytes] = (),
        *,
        tools_json: str | bytes | None = None,
        enable_thinking: bool | None = None,
    ) -> Prepared:
        """Validate and preprocess one request; raises InputError for a bad request.

        ``tools_json``: the tools offered (``TOOLS_JSON``); ``enable_thinking``: the
        template's thinking switch (None: its default).
        """
        try:
            messages = decode_messages(messages_json)
            self._check_modalities(messages)
            check_media_counts(messages, self._max_images, self.name)
            sizes = {"image": len(images), "video": len(videos), "audio": len(audios), "document": len(documents)}
            check_media_refs(messages, sizes)
        except WireError as exc:
            raise InputError(str(exc)) from None
        tools = parse_tools(tools_json)
        media = self._media.decode(messages, images, videos, audios, documents)
        conversation = self._template.conversation.messages(messages, media)
        with self._preprocess_lock:
            inputs = self._template.render(conversation, tools, enable_thinking)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        if prompt_tokens >= self.context_size:
            raise InputError(
                f"the prompt is {prompt_tokens} tokens (images, document pages and audio included), "
                f"the model's context is {self.context_size}"
            )
        model = self._generator.model
        return Prepared(
            inputs=inputs.to(model.device, dtype=model.dtype),
            prompt_tokens=prompt_tokens,
            image_count=sum(
                part["type"] == "image" for m in conversation if isinstance(m["content"], list) for part in m["content"]
            ),
            video_frames={index: len(frames) for index, frames in media.videos.items()},
            audio_seconds={index: samples.size / self._media.audio_rate for index, samples in media.audios.items()},
            document_pages={index: len(pages) for index, pages in media.documents.items()},
            tool_names=tuple(tool["function"]["name"] for tool in tools),
            hidden_ids=self._template.hidden_ids(bool(tools)),
            opens_thinking=self._template.opens_thinking(inputs["input_ids"]),
        )

    def constraint(self, response_format: ResponseFormat) -> Constraint:
        """The grammar that holds one request's answer to ``response_format``.

        Raises InputError naming the problem for a schema that cannot be used, before
        anything is generated. The grammar compiler for this tokenizer is built at the
        first structured request (seconds for a large vocabulary), not at load.
        """
        with self._structured_lock:
            if self._structured is None:
                width = self._generator.model.get_output_embeddings().weight.shape[0]
                self._structured = StructuredOutput(self.tokenizer, eos_token_ids=self.eos_token_ids, vocab_size=width)
        return self._structured.constraint(response_format)

    def generate(
        self,
        prepared: Prepared,
        params: GenerationParams,
        is_cancelled: Callable[[], bool] = lambda: False,
        constraint: Constraint | None = None,
    ) -> ChatOutput:
        """A generation for ``prepared``: iterate it for the text of each token.

        With batching it joins the shared batch now (raises :class:`Busy` when the
        waiting line is full); without, nothing runs until it is iterated.
        ``is_cancelled`` is polled after every token; ``constraint`` (from
        :meth:`constraint`) holds the tokens to a response format.
        """
        if self._scheduler is not None:
            generation: Any = self._scheduler.submit(prepared, params, is_cancelled, constraint=constraint)
        else:
            processor = None if constraint is None else ConstraintLogitsProcessor(constraint, prepared.prompt_tokens)
            generation = Generation(
                self._generator,
                prepared.inputs,
                prepared.prompt_tokens,
                params,
                is_cancelled,
                constraint=processor,
                hidden_ids=prepared.hidden_ids,
            )
        return ChatOutput(
            generation,
            family=self._template.family if prepared.tool_names else None,
            tool_names=prepared.tool_names or None,
            opens_thinking=prepared.opens_thinking,
        )

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
        for kind in ("image", "video", "document"):
            if kind in kinds and not self._sees_images:
                raise InputError(f"model {self.name} does not take {kind} input ({arch} has no image processor)")


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
