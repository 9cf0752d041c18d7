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
"""

from __future__ import annotations

import io
import json
import math
import queue
import re
import secrets
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import jinja2
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    BatchFeature,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tritonmm.contract import (
    CHAT_MESSAGES,
    CHAT_PARAMS,
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    PARAM_MAX_TOKENS,
    PARAM_SEED,
    PARAM_STOP,
    PARAM_TEMPERATURE,
    PARAM_TOP_K,
    PARAM_TOP_P,
)

__all__ = [
    "ChatEngine",
    "Generation",
    "GenerationParams",
    "InputError",
    "Prepared",
    "parse_params",
    "sample_video_frames",
]

ROLES = ("system", "user", "assistant")
VIDEO_MARKER = "Video frames:"
MAX_STOP_SEQUENCES = 16
_SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes unsigned 64-bit seeds
_ZERO_WIDTH_SPACE = "\u200b"


class InputError(Exception):
    """The request itself is wrong; ``str(e)`` says what and where, fit for the end user."""


# --- parameters --------------------------------------------------------------


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256  # 0: only count the prompt
    temperature: float = 0.7  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a fresh random seed per request


def parse_params(raw_json: str | None) -> GenerationParams:
    """Parse and validate PARAMS_JSON; absent, empty or ``null`` values take the defaults."""
    if raw_json is None or not raw_json.strip():
        return GenerationParams()
    try:
        raw = json.loads(raw_json)
    except json.JSONDecodeError as exc:
        raise InputError(f"{CHAT_PARAMS.name} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{CHAT_PARAMS.name} must be a JSON object, got {type(raw).__name__}")
    values = {k: v for k, v in raw.items() if v is not None}
    unknown = sorted(set(values) - set(_PARAMS))
    if unknown:
        raise InputError(f"unknown parameter {unknown[0]!r}; known parameters: {', '.join(_PARAMS)}")
    fields = {}
    for key, value in values.items():
        name, validate = _PARAMS[key]
        fields[name] = validate(key, value)
    return GenerationParams(**fields)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if _is_int(value):
        return abs(value) < 2**63  # a bigger JSON integer would overflow float()
    return isinstance(value, float) and math.isfinite(value)


def _max_tokens(key: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise InputError(f"{key} must be an integer >= 0, got {value!r}")
    return value


def _temperature(key: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise InputError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)


def _top_p(key: str, value: Any) -> float:
    if not _is_number(value) or not 0 < value <= 1:
        raise InputError(f"{key} must be a number in (0, 1], got {value!r}")
    return float(value)


def _top_k(key: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise InputError(f"{key} must be an integer >= 0 (0 disables it), got {value!r}")
    return value


def _stop(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise InputError(f"{key} must be a non-empty string or a list of them, got {value!r}")
    if len(items) > MAX_STOP_SEQUENCES:
        raise InputError(f"{key} takes at most {MAX_STOP_SEQUENCES} sequences, got {len(items)}")
    return tuple(dict.fromkeys(items))


def _seed(key: str, value: Any) -> int:
    if not _is_int(value) or not 0 <= value < _SEED_LIMIT:
        raise InputError(f"{key} must be an integer in [0, 2**64), got {value!r}")
    return value


# wire key -> (GenerationParams field, validator)
_PARAMS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    PARAM_MAX_TOKENS: ("max_tokens", _max_tokens),
    PARAM_TEMPERATURE: ("temperature", _temperature),
    PARAM_TOP_P: ("top_p", _top_p),
    PARAM_TOP_K: ("top_k", _top_k),
    PARAM_STOP: ("stop", _stop),
    PARAM_SEED: ("seed", _seed),
}


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
        if not _is_int(index) or index < 0:
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
            return _to_rgb(img)
    except Image.UnidentifiedImageError:
        raise InputError(f"{where}: cannot identify image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL reports truncated or corrupt data with these.
        raise InputError(f"{where}: cannot decode image: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    # Flattening transparency onto white, not black: dark text on a transparent
    # background (logos, screenshots) would otherwise vanish.
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def sample_video_frames(data: bytes, *, max_frames: int, fps: float) -> list[Image.Image]:
    """Decode a video container from memory and return evenly spaced RGB frames.

    At most ``fps`` frames per second of video and at most ``max_frames`` in all,
    but always one frame at least. Raises ``ValueError`` with the reason when the
    bytes hold no decodable video.
    """
    if not data:
        raise ValueError("no data")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = _video_stream(container)
            frame_pts, keyframe_pts = _index_packets(container, stream)
            if not frame_pts:
                raise ValueError("the video stream has no frames")
            wanted = _pick_frames(frame_pts, float(stream.time_base), max_frames, fps)
            try:
                frames = _decode_seeking(container, stream, wanted, keyframe_pts)
            except _SeekMissed:
                frames = None
        if frames is None:
            with av.open(io.BytesIO(data), mode="r") as container:
                frames = _decode_in_order(container, _video_stream(container), wanted, frame_pts)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode video: {exc.strerror or exc}") from None
    if not frames:
        raise ValueError("no frame of the video stream could be decoded")
    return frames


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise ValueError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame- and slice-threaded decoding
    return stream


def _index_packets(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[list[int], list[int]]:
    # Demuxing without decoding is cheap and gives the true frame timestamps even
    # when the container's duration metadata is missing (webm, mkv).
    frames, keyframes = [], []
    for packet in container.demux(stream):
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None or packet.size == 0:
            continue
        frames.append(pts)
        if packet.is_keyframe:
            keyframes.append(pts)
    return sorted(frames), sorted(keyframes)


def _pick_frames(frame_pts: list[int], time_base: float, max_frames: int, fps: float) -> list[int]:
    """Timestamps of the frames nearest to the centres of ``n`` equal slices of the video."""
    first, last = frame_pts[0], frame_pts[-1]
    step = (last - first) / (len(frame_pts) - 1) if len(frame_pts) > 1 else 0
    span = last - first + step  # the last frame lasts one frame interval too
    seconds = span * time_base
    n = max(1, min(max_frames, len(frame_pts), math.floor(seconds * fps + 1e-6)))
    picked: list[int] = []
    for i in range(n):
        target = first + (i + 0.5) * span / n
        j = bisect_left(frame_pts, target)
        nearest = min(frame_pts[max(j - 1, 0) : j + 1], key=lambda p: abs(p - target))
        if not picked or nearest != picked[-1]:
            picked.append(nearest)
    return picked


class _SeekMissed(Exception):
    """A seek landed past the frame it aimed at; MPEG-TS, for one, seeks only approximately."""


def _decode_seeking(
    container: av.container.InputContainer, stream: av.VideoStream, wanted: list[int], keyframes: list[int]
) -> list[Image.Image]:
    """Decode only the GOPs holding the wanted frames: a long video costs a few GOPs, not all its frames."""
    frames: list[Image.Image] = []
    decoder: Iterator[av.VideoFrame] | None = None
    position = -math.inf  # pts of the last decoded frame
    for pts in wanted:
        k = bisect_right(keyframes, pts) - 1
        keyframe = keyframes[k] if k >= 0 else keyframes[0] if keyframes else pts
        # Decoding on is cheaper than jumping back to a keyframe already behind us.
        seek = decoder is None or keyframe > position
        if seek:
            container.seek(keyframe, stream=stream, backward=True)
            decoder = container.decode(stream)
        for frame in decoder:
            if frame.pts is None or (seek and frame.pts > pts):
                raise _SeekMissed
            seek, position = False, frame.pts
            if frame.pts >= pts:
                frames.append(frame.to_image())
                break
        else:
            raise _SeekMissed  # the decoder ran dry before reaching the frame
    return frames


def _decode_in_order(
    container: av.container.InputContainer, stream: av.VideoStream, wanted: list[int], frame_pts: list[int]
) -> list[Image.Image]:
    frames: list[Image.Image] = []
    targets = iter(wanted)
    target = next(targets)
    for index, frame in enumerate(container.decode(stream)):
        # Frames come out in presentation order, so a frame without a timestamp
        # takes the index-th demuxed one.
        pts = frame.pts if frame.pts is not None else frame_pts[min(index, len(frame_pts) - 1)]
        if pts >= target:
            frames.append(frame.to_image())
            if (target := next(targets, None)) is None:
                break
    return frames


# --- prepared request --------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A request turned into model inputs."""

    inputs: BatchFeature
    prompt_tokens: int  # input_ids length, image placeholder tokens included
    image_count: int  # images given to the model, video frames included
    video_frames: dict[int, int] = field(default_factory=dict)  # video index -> frames sampled


# --- generation --------------------------------------------------------------


class _Sampler(LogitsProcessor):
    """Sampling inside greedy search, with a per-request RNG.

    ``generate(do_sample=True)`` draws from the global torch RNG, which requests
    running in parallel threads share, so a seed would not reproduce anything.
    This processor samples the token itself with its own ``torch.Generator`` and
    leaves only that token finite, so that greedy search picks it.
    """

    def __init__(self, params: GenerationParams) -> None:
        self._temperature = params.temperature
        self._top_k = params.top_k
        self._top_p = params.top_p
        self._seed = params.seed if params.seed is not None else secrets.randbits(64)
        self._rng: torch.Generator | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._temperature == 0:
            return scores
        if self._rng is None:
            self._rng = torch.Generator(device=scores.device).manual_seed(self._seed)
        logits = scores.float() / self._temperature
        if self._top_k:
            kth = torch.topk(logits, min(self._top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if self._top_p < 1:
            logits = _top_p_filter(logits, self._top_p)
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=self._rng)
        return torch.full_like(scores, -math.inf).scatter_(-1, token, 0.0)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop a token when the ones ranked above it already reach top_p; the best one always stays.
    drop = (probs.cumsum(dim=-1) - probs) >= top_p
    return logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)


class _TokenText:
    """Turns generated token ids into per-token text and decides stop and length.

    Decoding is incremental over a two-token window (as in text-generation-inference):
    a token that ends inside a multi-byte character gives "" until the character
    is complete, and tokenizers that drop a leading space at the start of a decode
    still give the right text. Text that might be the start of a stop sequence is
    held back until it is known not to be.
    """

    def __init__(self, tokenizer: Any, eos_ids: frozenset[int], stop: tuple[str, ...], max_new: int) -> None:
        self._tokenizer = tokenizer
        self._eos_ids = eos_ids
        self._stop = stop
        self._max_new = max_new
        self._ids: list[int] = []
        self._prefix = 0  # window start: _ids[_prefix:_read] is already-emitted context
        self._read = 0
        self._held = ""
        self.count = 0
        self.finish_reason: str | None = None

    def push(self, token_id: int) -> str:
        """The text token ``token_id`` adds; sets ``finish_reason`` when it ends generation."""
        self.count += 1
        if token_id in self._eos_ids:
            self.finish_reason = FINISH_STOP
            return self._flush()
        self._ids.append(token_id)
        text = self._held + self._decode_new()
        cut = min((i for i in (text.find(stop) for stop in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finish_reason = FINISH_STOP
            return text[:cut]  # the stop sequence and anything after it are dropped
        keep = _stop_prefix_len(text, self._stop)
        self._held = text[len(text) - keep :]
        emitted = text[: len(text) - keep]
        if self.count >= self._max_new:
            self.finish_reason = FINISH_LENGTH
            return emitted + self._flush()
        return emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _decode_new(self) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def _flush(self) -> str:
        """Everything still held back, incomplete characters included: generation is over."""
        tail = self._decode(self._ids[self._prefix :])[len(self._decode(self._ids[self._prefix : self._read])) :]
        self._prefix = self._read = len(self._ids)
        text, self._held = self._held + tail, ""
        return text


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of a stop sequence."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


_END = object()


class _Relay(StoppingCriteria):
    """Hands each new token's text to the consumer and decides when to stop.

    A stopping criterion rather than a ``BaseStreamer``: it is the one hook that
    ``generate`` calls after every token and before the next forward pass (since
    transformers 5 the criteria even run before ``streamer.put``), so stop
    sequences and cancellation cost no extra forward pass.
    """

    def __init__(
        self,
        text: _TokenText,
        prompt_tokens: int,
        out: queue.SimpleQueue,
        is_cancelled: Callable[[], bool],
        abort: threading.Event,
    ) -> None:
        self._text = text
        self._prompt_tokens = prompt_tokens
        self._out = out
        self._is_cancelled = is_cancelled
        self._abort = abort
        self.cancelled = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        new_ids = input_ids[0, self._prompt_tokens + self._text.count :].tolist()
        for token_id in new_ids:
            if self._text.finish_reason is not None:
                break
            self._out.put(self._text.push(token_id))
        if self._text.finish_reason is None and (self._abort.is_set() or self._is_cancelled()):
            self.cancelled = True
        stop = self._text.finish_reason is not None or self.cancelled
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class Generation:
    """One generation. Iterate it (once) for the text of each generated token.

    Once iteration is over, ``finish_reason`` (FINISH_STOP, FINISH_LENGTH or
    FINISH_CANCELLED), ``prompt_tokens`` and ``completion_tokens`` are set. An
    exception raised while generating is re-raised by the iterator. Leaving the
    loop early stops the worker thread after its current token.
    """

    def __init__(
        self,
        engine: ChatEngine,
        prepared: Prepared,
        params: GenerationParams,
        is_cancelled: Callable[[], bool],
    ) -> None:
        self._engine = engine
        self._prepared = prepared
        self._params = params
        self._is_cancelled = is_cancelled
        self._abort = threading.Event()
        self._started = False
        self.prompt_tokens = prepared.prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def close(self) -> None:
        """Stop generating at the next token boundary (the consumer went away)."""
        self._abort.set()

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        max_new = min(self._params.max_tokens, self._engine.context_size - self.prompt_tokens)
        if max_new <= 0:
            self.finish_reason = FINISH_LENGTH
            return
        if self._is_cancelled():
            self.finish_reason = FINISH_CANCELLED
            return
        yield from self._stream(max_new)

    def _stream(self, max_new: int) -> Iterator[str]:
        engine = self._engine
        text = _TokenText(engine.tokenizer, engine.eos_token_ids, self._params.stop, max_new)
        out: queue.SimpleQueue = queue.SimpleQueue()
        relay = _Relay(text, self.prompt_tokens, out, self._is_cancelled, self._abort)
        worker = threading.Thread(
            target=engine._run_generate,
            args=(self._prepared.inputs, max_new, _Sampler(self._params), relay, out),
            name="chat-generate",
            daemon=True,
        )
        worker.start()
        try:
            while (item := out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                self.completion_tokens += 1
                yield item
        finally:
            self._abort.set()  # a no-op unless the consumer left early
        worker.join()
        if text.finish_reason is not None:
            self.finish_reason = text.finish_reason
        elif relay.cancelled:
            self.finish_reason = FINISH_CANCELLED
        else:  # generate stopped on a criterion of its own
            self.finish_reason = FINISH_LENGTH if text.count >= max_new else FINISH_STOP


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
        sampler: _Sampler,
        relay: _Relay,
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
            out.put(_END)


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
