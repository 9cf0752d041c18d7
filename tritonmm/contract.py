"""The contract between the plugin side and the bundled Triton models.

Every tensor name, dtype and capability key is spelled here once. The server-side
models (``model_repository/*/1/model.py``) and the plugin both import this module,
and ``tests/test_contract.py`` checks every ``config.pbtxt`` against it.

This module must stay dependency-free: it runs inside the Triton python-backend
stub (Python 3.11, torch) and inside the Dify plugin (Python 3.12, no torch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

NumberT = TypeVar("NumberT", int, float)


class Task(StrEnum):
    """What a bundled model does; declared as ``tmm.task`` in its config."""

    CHAT = "chat"
    TEXT_EMBEDDING = "text_embedding"
    RERANK = "rerank"
    SPEECH_TO_TEXT = "speech_to_text"
    TEXT_TO_SPEECH = "text_to_speech"
    MULTIMODAL_EMBEDDING = "multimodal_embedding"
    OCR = "ocr"
    VIDEO_FRAMES = "video_frames"
    IMAGE_TEXT_MATCH = "image_text_match"


class Feature(StrEnum):
    """What a model takes, as Dify's ``ModelFeature`` names. ``tmm.features`` (comma separated) lists
    media only; the plugin adds ``document`` to ``vision`` (the server renders PDF pages into images)
    and the tool-call three where ``tmm.tool_call_family`` names a family."""

    VISION = "vision"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    TOOL_CALL = "tool-call"
    MULTI_TOOL_CALL = "multi-tool-call"
    STREAM_TOOL_CALL = "stream-tool-call"


MEDIA_FEATURES = frozenset({Feature.VISION, Feature.VIDEO, Feature.AUDIO, Feature.DOCUMENT})
TOOL_CALL_FEATURES = frozenset({Feature.TOOL_CALL, Feature.MULTI_TOOL_CALL, Feature.STREAM_TOOL_CALL})


@dataclass(frozen=True)
class TensorSpec:
    name: str
    triton_dtype: str  # as written in config.pbtxt
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def wire_dtype(self) -> str:
        """The dtype name of the KServe v2 protocol (``TYPE_STRING`` -> ``BYTES``)."""
        base = self.triton_dtype.removeprefix("TYPE_")
        return "BYTES" if base == "STRING" else base


# --- chat (decoupled, one response per generated token) ---------------------
# The request: messages as JSON with media referenced by index into the media
# tensors, media as raw bytes, and generation parameters as JSON.
CHAT_MESSAGES = TensorSpec("MESSAGES_JSON", "TYPE_STRING", (1,))
CHAT_IMAGES = TensorSpec("IMAGES", "TYPE_STRING", (-1,), optional=True)
CHAT_VIDEOS = TensorSpec("VIDEOS", "TYPE_STRING", (-1,), optional=True)
CHAT_PARAMS = TensorSpec("PARAMS_JSON", "TYPE_STRING", (1,), optional=True)
# Audio parts as container bytes, for chat models that declare the audio feature
# natively; other chat models get audio as a transcript (tmm.asr_model, the cascade).
CHAT_AUDIOS = TensorSpec("AUDIOS", "TYPE_STRING", (-1,), optional=True)
# PDF files, for chat models that see images: the server renders each page into an
# image (tmm.document_max_pages, tmm.document_dpi); a part {"type": "document", "index": i}.
CHAT_DOCUMENTS = TensorSpec("DOCUMENTS", "TYPE_STRING", (-1,), optional=True)
# The tools offered: a JSON list of {"name", "description", "parameters": JSON schema}.
CHAT_TOOLS = TensorSpec("TOOLS_JSON", "TYPE_STRING", (1,), optional=True)
CHAT_INPUTS = (CHAT_MESSAGES, CHAT_IMAGES, CHAT_VIDEOS, CHAT_PARAMS, CHAT_AUDIOS, CHAT_DOCUMENTS, CHAT_TOOLS)

# Each intermediate response carries TEXT (the new token's text). The final
# response carries FINISH_REASON and the token counts, and the FINAL flag.
CHAT_TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))
CHAT_FINISH_REASON = TensorSpec("FINISH_REASON", "TYPE_STRING", (1,))
CHAT_PROMPT_TOKENS = TensorSpec("PROMPT_TOKENS", "TYPE_INT32", (1,))
CHAT_COMPLETION_TOKENS = TensorSpec("COMPLETION_TOKENS", "TYPE_INT32", (1,))
# On the final response: the calls the model made, a JSON list of {"id", "name", "arguments":
# JSON text of an object}; "[]" when none. Their markup never comes out in TEXT.
CHAT_TOOL_CALLS = TensorSpec("TOOL_CALLS_JSON", "TYPE_STRING", (1,))
CHAT_OUTPUTS = (CHAT_TEXT, CHAT_FINISH_REASON, CHAT_PROMPT_TOKENS, CHAT_COMPLETION_TOKENS, CHAT_TOOL_CALLS)

# --- text embedding (dynamic batching: one text per batch row) ---------------
# dims exclude the batch dimension: a request of n texts has shape [n, 1].
EMBED_TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))
# "query" or "document" per row; the model adds its configured prefix for each.
EMBED_INPUT_TYPE = TensorSpec("INPUT_TYPE", "TYPE_STRING", (1,), optional=True)
EMBED_INPUTS = (EMBED_TEXT, EMBED_INPUT_TYPE)
EMBED_VECTOR = TensorSpec("EMBEDDING", "TYPE_FP32", (-1,))
EMBED_TOKENS = TensorSpec("TOKENS", "TYPE_INT32", (1,))  # tokens of each text, as the model counts them
EMBED_OUTPUTS = (EMBED_VECTOR, EMBED_TOKENS)
INPUT_TYPE_QUERY = "query"
INPUT_TYPE_DOCUMENT = "document"

# --- rerank (dynamic batching: one (query, document) pair per batch row) -----
RERANK_QUERY = TensorSpec("QUERY", "TYPE_STRING", (1,))
RERANK_DOCUMENT = TensorSpec("DOCUMENT", "TYPE_STRING", (1,))
RERANK_INPUTS = (RERANK_QUERY, RERANK_DOCUMENT)
# Relevance in [0, 1]: a cross-encoder's sigmoid(logit), a bi-encoder's cosine clipped at 0.
RERANK_SCORE = TensorSpec("SCORE", "TYPE_FP32", (1,))
RERANK_OUTPUTS = (RERANK_SCORE,)

# --- speech to text (one audio file per request, not batched) ---------------
# AUDIO is the file as sent (wav, mp3, m4a/aac, ogg, opus, flac, webm); the model
# decodes it to 16 kHz mono itself. PARAMS_JSON takes PARAM_LANGUAGE / PARAM_PROMPT.
ASR_AUDIO = TensorSpec("AUDIO", "TYPE_STRING", (1,))
ASR_PARAMS = TensorSpec("PARAMS_JSON", "TYPE_STRING", (1,), optional=True)
ASR_INPUTS = (ASR_AUDIO, ASR_PARAMS)
ASR_TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))  # the whole transcript
# JSON list of {"start": s, "end": s, "text": str}, in time order, covering the audio.
ASR_SEGMENTS = TensorSpec("SEGMENTS_JSON", "TYPE_STRING", (1,))
ASR_LANGUAGE = TensorSpec("LANGUAGE", "TYPE_STRING", (1,))  # the language used (given or detected)
ASR_DURATION = TensorSpec("DURATION", "TYPE_FP32", (1,))  # seconds of audio decoded
ASR_OUTPUTS = (ASR_TEXT, ASR_SEGMENTS, ASR_LANGUAGE, ASR_DURATION)
PARAM_LANGUAGE = "language"  # ISO 639-1 ("en"); absent or "" = detect (multilingual models)
PARAM_PROMPT = "prompt"  # text that conditions the first window (names, spelling, style)
ASR_PARAM_KEYS = (PARAM_LANGUAGE, PARAM_PROMPT)

# --- text to speech (decoupled: one response per synthesised sentence) --------
TTS_TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))
TTS_VOICE = TensorSpec("VOICE", "TYPE_STRING", (1,), optional=True)  # a name from tmm.voices; absent = default
TTS_FORMAT = TensorSpec("FORMAT", "TYPE_STRING", (1,), optional=True)  # AUDIO_MP3 (default) or AUDIO_WAV
TTS_INPUTS = (TTS_TEXT, TTS_VOICE, TTS_FORMAT)
# mp3: each response holds whole MP3 frames for one sentence, so the concatenation
# of all responses is one playable MP3 stream. wav: one response, the complete file.
TTS_AUDIO = TensorSpec("AUDIO", "TYPE_STRING", (1,))
TTS_OUTPUTS = (TTS_AUDIO,)
AUDIO_MP3 = "mp3"
AUDIO_WAV = "wav"
AUDIO_FORMATS = (AUDIO_MP3, AUDIO_WAV)

# --- multimodal embedding (dynamic batching: one text or one image per row) ---
# CONTENT is UTF-8 text or image file bytes, as CONTENT_TYPE says; texts and
# images land in one vector space (CLIP family). Outputs as for text embedding.
MM_CONTENT = TensorSpec("CONTENT", "TYPE_STRING", (1,))
MM_CONTENT_TYPE = TensorSpec("CONTENT_TYPE", "TYPE_STRING", (1,))
MM_INPUTS = (MM_CONTENT, MM_CONTENT_TYPE)
MM_OUTPUTS = (EMBED_VECTOR, EMBED_TOKENS)
CONTENT_TEXT = "text"
CONTENT_IMAGE = "image"
CONTENT_TYPES = (CONTENT_TEXT, CONTENT_IMAGE)

# --- OCR (one image per request, not batched) ---------------------------------
OCR_IMAGE = TensorSpec("IMAGE", "TYPE_STRING", (1,))
OCR_INPUTS = (OCR_IMAGE,)
OCR_TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))  # lines in reading order, newline separated
# JSON list of {"text": str, "score": float, "box": [[x, y] * 4]} in reading order (pixels of the image sent).
OCR_LINES = TensorSpec("LINES_JSON", "TYPE_STRING", (1,))
OCR_OUTPUTS = (OCR_TEXT, OCR_LINES)

# --- video frames (one video per request, not batched) ------------------------
VIDEO_FILE = TensorSpec("VIDEO", "TYPE_STRING", (1,))
# {"mode": FRAMES_KEYFRAMES | FRAMES_UNIFORM, "count": N (1..max), "max_side": pixels}
VIDEO_PARAMS = TensorSpec("PARAMS_JSON", "TYPE_STRING", (1,), optional=True)
VIDEO_INPUTS = (VIDEO_FILE, VIDEO_PARAMS)
VIDEO_FRAMES_OUT = TensorSpec("FRAMES", "TYPE_STRING", (-1,))  # JPEG files, in time order
VIDEO_TIMESTAMPS = TensorSpec("TIMESTAMPS", "TYPE_FP32", (-1,))  # seconds, one per frame
VIDEO_DURATION = TensorSpec("DURATION", "TYPE_FP32", (1,))  # seconds of video
VIDEO_OUTPUTS = (VIDEO_FRAMES_OUT, VIDEO_TIMESTAMPS, VIDEO_DURATION)
PARAM_MODE = "mode"
PARAM_COUNT = "count"
PARAM_MAX_SIDE = "max_side"
FRAMES_KEYFRAMES = "keyframes"  # the encoder's keyframes (scene starts), at most `count`, evenly picked
FRAMES_UNIFORM = "uniform"  # `count` frames evenly spaced over the duration

# --- image-text match (one image and its candidate labels per request) ---------
MATCH_IMAGE = TensorSpec("IMAGE", "TYPE_STRING", (1,))
MATCH_LABELS = TensorSpec("LABELS_JSON", "TYPE_STRING", (1,))  # JSON list of texts
MATCH_INPUTS = (MATCH_IMAGE, MATCH_LABELS)
MATCH_SCORES = TensorSpec("SCORES", "TYPE_FP32", (-1,))  # zero-shot probabilities over the labels (sum 1)
MATCH_SIMILARITIES = TensorSpec("SIMILARITIES", "TYPE_FP32", (-1,))  # cosine of image and each label
# PNG: the image overlaid with the patch-level similarity to the best-scoring label.
MATCH_HEATMAP = TensorSpec("HEATMAP_PNG", "TYPE_STRING", (1,))
MATCH_OUTPUTS = (MATCH_SCORES, MATCH_SIMILARITIES, MATCH_HEATMAP)

# Media tensor per message part type; a part {"type": "image", "index": i}
# refers to element i of CHAT_IMAGES.
CHAT_MEDIA_TENSORS = {"image": CHAT_IMAGES, "video": CHAT_VIDEOS, "audio": CHAT_AUDIOS, "document": CHAT_DOCUMENTS}

# Keys of PARAMS_JSON. The server validates types and ranges.
PARAM_MAX_TOKENS = "max_tokens"
PARAM_TEMPERATURE = "temperature"
PARAM_TOP_P = "top_p"
PARAM_TOP_K = "top_k"
PARAM_STOP = "stop"
PARAM_SEED = "seed"
# Structured output (Dify's own parameter names and values): PARAM_RESPONSE_FORMAT is
# RESPONSE_JSON_OBJECT or RESPONSE_JSON_SCHEMA (absent: text); with RESPONSE_JSON_SCHEMA,
# PARAM_JSON_SCHEMA is the JSON schema object itself. tritonmm.structured_output parses them.
PARAM_RESPONSE_FORMAT = "response_format"
PARAM_JSON_SCHEMA = "json_schema"
PARAM_ENABLE_THINKING = "enable_thinking"  # true/false, where tmm.thinking_switch is "true"
CHAT_PARAM_KEYS = (PARAM_MAX_TOKENS, PARAM_TEMPERATURE, PARAM_TOP_P, PARAM_TOP_K, PARAM_STOP, PARAM_SEED)
CHAT_PARAM_KEYS += (PARAM_RESPONSE_FORMAT, PARAM_JSON_SCHEMA, PARAM_ENABLE_THINKING)
RESPONSE_TEXT = "text"
RESPONSE_JSON_OBJECT = "json_object"
RESPONSE_JSON_SCHEMA = "json_schema"

# Triton's stream errors carry a message and no status code, so the models
# prefix errors caused by the request itself; the plugin maps them to a
# bad-request error instead of a server failure.
INVALID_INPUT_PREFIX = "invalid input: "
# A streaming model that already serves tmm.max_concurrent_requests requests answers
# one more at once with an UNAVAILABLE error whose message starts with this: the
# request was not started, and retrying later can succeed.
BUSY_PREFIX = "busy: "

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_TOOL_CALLS = "tool_calls"  # the turn ends with tool calls (TOOL_CALLS_JSON)

# --- capability keys in config.pbtxt `parameters` ----------------------------
KEY_TASK = "tmm.task"
KEY_FEATURES = "tmm.features"
KEY_CONTEXT_SIZE = "tmm.context_size"
KEY_MAX_IMAGES = "tmm.max_images"
KEY_VIDEO_MAX_FRAMES = "tmm.video_max_frames"
KEY_VIDEO_FPS = "tmm.video_fps"
KEY_MODEL_PATH = "tmm.model_path"
KEY_WEIGHTS = "tmm.weights"  # "tiny" or "checkpoint": said plainly to the user
KEY_QUERY_PREFIX = "tmm.query_prefix"  # e.g. "query: " for e5 models; empty for MiniLM
KEY_DOCUMENT_PREFIX = "tmm.document_prefix"
KEY_LONG_INPUT = "tmm.long_input"  # "mean": windows over the text, averaged; "truncate"
# Chat: the speech_to_text model whose transcript replaces audio parts when the chat
# model has no native audio feature; the plugin then declares audio for the chat model.
KEY_ASR_MODEL = "tmm.asr_model"
KEY_LANGUAGES = "tmm.languages"  # speech models: comma-separated ISO 639-1 codes; empty = any
# Text to speech: JSON list of {"name": str, "language": "en-US"}; the first is the default.
KEY_VOICES = "tmm.voices"
# Streaming models (chat, text to speech): requests served at once, each in a thread of its own.
KEY_MAX_CONCURRENT_REQUESTS = "tmm.max_concurrent_requests"
# The bundled chat model: "on" (default) runs concurrent requests through one decoding
# batch (iteration-level batching); "off" runs a generate() per request in its own thread.
KEY_BATCHING = "tmm.batching"
KEY_BATCH_MAX_SEQUENCES = "tmm.batch_max_sequences"  # sequences decoding together
KEY_BATCH_MAX_WAITING = "tmm.batch_max_waiting"  # requests waiting for a place; one more is busy
KEY_KV_CACHE_MB = "tmm.kv_cache_mb"  # key/value cache budget of the batch, in MiB
# Chat models that see images: PDF pages rendered per document (a longer one is refused),
# at this many dots per inch, each page image at most tmm.document_max_side pixels long.
KEY_DOCUMENT_MAX_PAGES = "tmm.document_max_pages"
KEY_DOCUMENT_DPI = "tmm.document_dpi"
KEY_DOCUMENT_MAX_SIDE = "tmm.document_max_side"
# Chat: the tool-call markup its template writes (hermes, llama3, mistral); "": renders no tools.
KEY_TOOL_CALL_FAMILY = "tmm.tool_call_family"
KEY_THINKING_SWITCH = "tmm.thinking_switch"  # chat: "true" when the template takes enable_thinking
LONG_INPUT_MEAN = "mean"
LONG_INPUT_TRUNCATE = "truncate"

# The plugin's credential fields for the server's endpoints (its provider form), which the
# launcher names when it says how to point Dify at a server it started.
CRED_SERVER_URL = "server_url"
CRED_GRPC_ENDPOINT = "grpc_endpoint"

TASK_SPECS = {
    Task.CHAT: (CHAT_INPUTS, CHAT_OUTPUTS),
    Task.TEXT_EMBEDDING: (EMBED_INPUTS, EMBED_OUTPUTS),
    Task.RERANK: (RERANK_INPUTS, RERANK_OUTPUTS),
    Task.SPEECH_TO_TEXT: (ASR_INPUTS, ASR_OUTPUTS),
    Task.TEXT_TO_SPEECH: (TTS_INPUTS, TTS_OUTPUTS),
    Task.MULTIMODAL_EMBEDDING: (MM_INPUTS, MM_OUTPUTS),
    Task.OCR: (OCR_INPUTS, OCR_OUTPUTS),
    Task.VIDEO_FRAMES: (VIDEO_INPUTS, VIDEO_OUTPUTS),
    Task.IMAGE_TEXT_MATCH: (MATCH_INPUTS, MATCH_OUTPUTS),
}

# How each task's model is called: streaming tasks are decoupled (gRPC stream, one
# response per token or sentence); batched tasks take one item per batch row
# (dynamic batching, response cache); the rest answer one file per request.
STREAMING_TASKS = frozenset({Task.CHAT, Task.TEXT_TO_SPEECH})
BATCHED_TASKS = frozenset({Task.TEXT_EMBEDDING, Task.RERANK, Task.MULTIMODAL_EMBEDDING})


@dataclass(frozen=True)
class Voice:
    name: str
    language: str  # BCP 47 as Dify lists voices ("en-US")


@dataclass(frozen=True)
class Capabilities:
    """What the plugin learns about a model from ``/v2/models/<m>/config``."""

    task: Task
    features: frozenset[Feature]
    context_size: int
    max_images: int
    weights: str
    max_batch_size: int = 0  # the config's max_batch_size: rows per request, 0 = not batched
    asr_model: str = ""  # chat: the speech_to_text model for audio parts (KEY_ASR_MODEL)
    languages: tuple[str, ...] = ()  # speech models; () = any
    voices: tuple[Voice, ...] = ()  # text to speech; the first is the default
    tool_call_family: str = ""  # chat: KEY_TOOL_CALL_FAMILY; "" = no tool calls
    thinking_switch: bool = False  # chat: the template turns thinking on and off (PARAM_ENABLE_THINKING)

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> Capabilities:
        """Parse the flat ``{key: string_value}`` form of a config's parameters.

        Raises ``ValueError`` naming the key when a value is missing or malformed.
        """
        try:
            task = Task(params[KEY_TASK])
        except KeyError:
            raise ValueError(f"the model config has no '{KEY_TASK}' parameter") from None
        except ValueError:
            raise ValueError(f"unknown {KEY_TASK} {params[KEY_TASK]!r}") from None
        names = [f.strip() for f in params.get(KEY_FEATURES, "").split(",") if f.strip()]
        try:
            features = frozenset(Feature(n) for n in names)
        except ValueError as exc:
            raise ValueError(f"{KEY_FEATURES}: {exc}") from None
        if not features <= MEDIA_FEATURES:
            raise ValueError(f"{KEY_FEATURES} lists media only; tool calls come from {KEY_TOOL_CALL_FAMILY}")
        return cls(
            task=task,
            features=features,
            context_size=positive_parameter(params, KEY_CONTEXT_SIZE, 4096),
            max_images=positive_parameter(params, KEY_MAX_IMAGES, 8),
            weights=params.get(KEY_WEIGHTS, "checkpoint"),
            asr_model=params.get(KEY_ASR_MODEL, "").strip(),
            languages=tuple(x.strip() for x in params.get(KEY_LANGUAGES, "").split(",") if x.strip()),
            voices=_voices(params.get(KEY_VOICES, "")),
            tool_call_family=params.get(KEY_TOOL_CALL_FAMILY, "").strip(),
            thinking_switch=params.get(KEY_THINKING_SWITCH, "").strip().lower() == "true",
        )


def _voices(raw: str) -> tuple[Voice, ...]:
    if not raw.strip():
        return ()
    try:
        entries = json.loads(raw)
        return tuple(Voice(str(e["name"]), str(e.get("language", ""))) for e in entries)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f'{KEY_VOICES} must be a JSON list of {{"name", "language"}} objects: {exc}') from None


def positive_parameter(
    params: Mapping[str, str], key: str, default: NumberT | None = None, kind: type[NumberT] = int
) -> NumberT:
    """A positive ``int`` (or ``float``: ``kind``) parameter of the flat ``{key: string_value}`` form.

    Absent or blank: ``default``, or, when that is None, a ValueError saying the
    parameter is required. Raises ``ValueError`` naming the key when the value is
    malformed or not positive.
    """
    raw = params.get(key) or ""
    if not raw.strip():
        if default is None:
            raise ValueError(f"the model config has no '{key}' parameter")
        return default
    try:
        value = kind(raw)
        if isinstance(value, float) and not math.isfinite(value):  # "inf", "nan"
            raise ValueError(raw)
    except ValueError:
        raise ValueError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{key} must be positive, got {value}")
    return value


def config_mismatch(config: dict, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> str | None:
    """What in a model config (Triton's JSON form) disagrees with the contract, or None.

    Models call this in ``initialize`` so a wrong config fails the load, not the
    first user request.
    """
    for section, specs in (("input", inputs), ("output", outputs)):
        declared = {t["name"]: t for t in config.get(section, [])}
        expected = {s.name: s for s in specs}
        if declared.keys() != expected.keys():
            return f"config {section}s are {sorted(declared)}, the contract says {sorted(expected)}"
        for name, spec in expected.items():
            tensor = declared[name]
            found = (tensor["data_type"], tuple(int(d) for d in tensor["dims"]), bool(tensor.get("optional", False)))
            if found != (spec.triton_dtype, spec.dims, spec.optional):
                return (
                    f"config {section} {name} is (dtype, dims, optional) {found}, "
                    f"the contract says {(spec.triton_dtype, spec.dims, spec.optional)}"
                )
    return None
