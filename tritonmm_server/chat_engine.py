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

Parameters, video decoding and token streaming live in ``chat_params``,
``video_frames`` and ``token_stream``.
"""

from __future__ import annotations

import io
import json
import queue
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    BatchFeature,
    LogitsProcessorList,
    StoppingCriteriaList,
)

from tritonmm.contract import CHAT_MESSAGES
from tritonmm.images import to_rgb
from tritonmm_server.chat_params import GenerationParams, is_int
from tritonmm_server.errors import InputError
from tritonmm_server.token_stream import END, Generation, Relay, Sampler
from tritonmm_server.video_frames import sample_video_frames

__all__ = ["ChatEngine", "Prepared"]

ROLES = ("system", "user", "assistant")
VIDEO_MARKER = "Video frames:"
_ZERO_WIDTH_SPACE = "\u200b"


# --- messages ----------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    kind: str  # "text" | "image" | "video"
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
    if kind in ("image", "video"):
        index = raw.get("index")
        if not is_int(index) or index < 0:
            raise InputError(f"{where}: a part of type {kind!r} needs an integer 'index' >= 0, got {index!r}")
        return _Part(kind, index=index)
    raise InputError(f"{where}: unknown part type {kind!r} (expected text, image or video)")


# --- media -------------------------------------------------------------------


def _decode_image(where: str, data: bytes) -> Image.Image:
    if not data:
        raise InputError(f"{where}: no data")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return to_rgb(img)
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: cannot identify image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports truncated or corrupt data with these.
        raise InputError(f"{where}: cannot decode image: {exc}") from None


# --- prepared request --------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A request turned into model inputs."""

    inputs: BatchFeature
    prompt_tokens: int  # input_ids length, image placeholder tokens included
    image_count: int  # images given to the model, video frames included
    video_frames: dict[int, int] = field(default_factory=dict)  # video index -> frames sampled


# --- engine ------------------------------------------------------------------


class ChatEngine:
    """A vision-language chat checkpoint, loaded once and shared by concurrent requests."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        video_max_frames: int,
        video_fps: float,
        max_images: int,
        num_threads: int | None = None,
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
        self._model = AutoModelForImageTextToText.from_pretrained(self._dir, dtype="auto").eval()
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

    def prepare(self, messages_json: str, images: list[bytes], videos: list[bytes]) -> Prepared:
        """Validate and preprocess one request; raises InputError for a bad request."""
        messages = _parse_messages(messages_json)
        decoded_images = self._decode_images(messages, images)
        decoded_videos = self._decode_videos(messages, videos)
        conversation = [self._to_hf_message(m, decoded_images, decoded_videos) for m in messages]
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
                f"the prompt is {prompt_tokens} tokens (images included), the model's context is {self.context_size}"
            )
        return Prepared(
            inputs=inputs.to(self._model.device, dtype=self._model.dtype),
            prompt_tokens=prompt_tokens,
            image_count=sum(part["type"] == "image" for m in conversation for part in m["content"]),
            video_frames={index: len(frames) for index, frames in decoded_videos.items()},
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
        """Run one short generation so that the first request does not pay for lazy initialisation."""
        prepared = self.prepare(json.dumps([{"role": "user", "content": "Hi"}]), [], [])
        for _ in self.generate(prepared, GenerationParams(max_tokens=1, temperature=0)):
            pass

    # -- internals --

    def _decode_images(self, messages: list[_Message], images: list[bytes]) -> dict[int, Image.Image]:
        refs = [p.index for m in messages for p in m.parts if p.kind == "image"]
        if len(refs) > self._max_images:
            raise InputError(f"too many images: {len(refs)} (this model takes at most {self._max_images})")
        decoded = {}
        for index in dict.fromkeys(refs):
            if index >= len(images):
                raise InputError(f"image index {index} is out of range: the request has {len(images)} image(s)")
            decoded[index] = _decode_image(f"image {index}", images[index])
        return decoded

    def _decode_videos(self, messages: list[_Message], videos: list[bytes]) -> dict[int, list[Image.Image]]:
        refs = [p.index for m in messages for p in m.parts if p.kind == "video"]
        if len(refs) > self._max_images:
            raise InputError(f"too many videos: {len(refs)} (this model takes at most {self._max_images})")
        decoded = {}
        for index in dict.fromkeys(refs):
            if index >= len(videos):
                raise InputError(f"video index {index} is out of range: the request has {len(videos)} video(s)")
            try:
                decoded[index] = sample_video_frames(
                    videos[index], max_frames=self._video_max_frames, fps=self._video_fps
                )
            except ValueError as exc:
                raise InputError(f"video {index}: {exc}") from None
        return decoded

    def _to_hf_message(
        self, message: _Message, images: Mapping[int, Image.Image], videos: Mapping[int, list[Image.Image]]
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if part.kind == "text":
                content.append({"type": "text", "text": self._defuse(part.text)})
            elif part.kind == "image":
                content.append({"type": "image", "image": images[part.index]})
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
