"""The container's settings, read from the environment (compose ``environment:``, a Kubernetes ConfigMap).

One variable per setting, all named ``TMM_*``:

==============================  =====================================================================
``TMM_CHECKPOINT_<model>``      the weights directory of model ``<model>`` (a model of the repository:
                                ``chat``, ``multimodal_embedding``, ...); a relative path is taken under
                                ``TMM_CHECKPOINT_ROOT``. Checked before anything starts: a directory that
                                is not there is an error, never a download.
``TMM_CHECKPOINT_ROOT``         where the checkpoint volume is mounted (default ``/models``)
``TMM_MODELS``                  comma-separated models to serve (default: every model of the repository)
``TMM_ALLOW_TINY_WEIGHTS``      ``1`` lets a chat or CLIP model without a checkpoint run on tiny random
                                weights (smoke tests only: the answers are gibberish); default ``0``
``TMM_HOST``                    the address Triton listens on (default ``0.0.0.0``: reachable from
                                other containers; the launcher's default is loopback)
``TMM_HTTP_PORT`` ...           ``TMM_HTTP_PORT`` / ``TMM_GRPC_PORT`` / ``TMM_METRICS_PORT``
                                (8000 / 8001 / 8002; 0 picks a free port)
``TMM_WORK_DIR``                writable: the rendered repository, the server log, tiny builds
``TMM_REPOSITORY``              the model repository to serve (default: the bundled one)
``TMM_TRITONSERVER_DIR``        a Triton install with ``bin/tritonserver`` and ``backends/`` (the image
                                sets ``/opt/tritonserver``); unset: the binary of the nvidia-pytriton wheel
``TMM_START_TIMEOUT``           seconds every model gets to become READY (default 1800)
``TMM_EXIT_TIMEOUT``            seconds a stop waits for in-flight requests and streams (default 60)
``TMM_TRITON_ARGS``             more tritonserver arguments, shell-quoted (``--log-verbose=1``)
``TMM_CLEAR_SHM``               ``1``: first delete shared-memory regions that earlier servers of this
                                container left in /dev/shm (the image sets it: its /dev/shm is its own)
==============================  =====================================================================
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tritonmm_server.ops.paths import DEFAULT_REPOSITORY, DEFAULT_WORK_DIR

PREFIX = "TMM_"
CHECKPOINT_PREFIX = "TMM_CHECKPOINT_"
CHECKPOINT_ROOT = "TMM_CHECKPOINT_ROOT"
MODELS = "TMM_MODELS"
ALLOW_TINY = "TMM_ALLOW_TINY_WEIGHTS"
HOST = "TMM_HOST"
HTTP_PORT = "TMM_HTTP_PORT"
GRPC_PORT = "TMM_GRPC_PORT"
METRICS_PORT = "TMM_METRICS_PORT"
WORK_DIR = "TMM_WORK_DIR"
REPOSITORY = "TMM_REPOSITORY"
TRITONSERVER_DIR = "TMM_TRITONSERVER_DIR"
START_TIMEOUT = "TMM_START_TIMEOUT"
EXIT_TIMEOUT = "TMM_EXIT_TIMEOUT"
TRITON_ARGS = "TMM_TRITON_ARGS"
CLEAR_SHM = "TMM_CLEAR_SHM"

KNOWN = frozenset(
    {
        CHECKPOINT_ROOT,
        MODELS,
        ALLOW_TINY,
        HOST,
        HTTP_PORT,
        GRPC_PORT,
        METRICS_PORT,
        WORK_DIR,
        REPOSITORY,
        TRITONSERVER_DIR,
        START_TIMEOUT,
        EXIT_TIMEOUT,
        TRITON_ARGS,
        CLEAR_SHM,
    }
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """A setting that cannot be used, worded for the operator (it names the variable)."""


@dataclass(frozen=True)
class Settings:
    checkpoints: dict[str, Path]  # model name -> weights dir (absolute)
    checkpoint_root: Path
    models: list[str] | None  # None: every model of the repository
    allow_tiny: bool
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    work_dir: Path
    repository: Path
    tritonserver_dir: Path | None  # None: the nvidia-pytriton wheel's binary
    start_timeout: float
    exit_timeout: int
    triton_args: list[str]
    clear_shm: bool
    unknown: list[str]  # TMM_* variables that are no setting (typos, or meant for someone else)


def read_settings(environ: Mapping[str, str]) -> Settings:
    """The settings in ``environ``, or a SettingsError naming the first variable that is wrong."""
    root = Path(environ.get(CHECKPOINT_ROOT) or "/models")
    if not root.is_absolute():
        raise SettingsError(f"{CHECKPOINT_ROOT}={root}: give an absolute path (where the checkpoint volume is mounted)")
    checkpoints = {}
    for name, value in sorted(environ.items()):
        if name.startswith(CHECKPOINT_PREFIX) and name != CHECKPOINT_ROOT:
            model = name.removeprefix(CHECKPOINT_PREFIX)
            if not model:
                raise SettingsError(
                    f"{name}: name the model, e.g. {CHECKPOINT_PREFIX}chat=/models/SmolVLM-256M-Instruct"
                )
            if not value.strip():
                raise SettingsError(f"{name} is empty: set it to the model's weights directory or remove it")
            checkpoints[model] = root / value.strip()  # an absolute value replaces the root
    tritonserver_dir = environ.get(TRITONSERVER_DIR)
    return Settings(
        checkpoints=checkpoints,
        checkpoint_root=root,
        models=_models(environ.get(MODELS)),
        allow_tiny=_flag(environ, ALLOW_TINY),
        host=environ.get(HOST) or "0.0.0.0",
        http_port=_port(environ, HTTP_PORT, 8000),
        grpc_port=_port(environ, GRPC_PORT, 8001),
        metrics_port=_port(environ, METRICS_PORT, 8002),
        work_dir=Path(environ.get(WORK_DIR) or DEFAULT_WORK_DIR),
        repository=Path(environ.get(REPOSITORY) or DEFAULT_REPOSITORY),
        tritonserver_dir=Path(tritonserver_dir) if tritonserver_dir else None,
        start_timeout=float(_number(environ, START_TIMEOUT, 1800)),
        exit_timeout=_number(environ, EXIT_TIMEOUT, 60),
        triton_args=_arguments(environ.get(TRITON_ARGS, "")),
        clear_shm=_flag(environ, CLEAR_SHM),
        unknown=sorted(
            name
            for name in environ
            if name.startswith(PREFIX) and name not in KNOWN and not name.startswith(CHECKPOINT_PREFIX)
        ),
    )


def _models(value: str | None) -> list[str] | None:
    if value is None or not value.strip():
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={environ[name]!r}: use 1 or 0")


def _number(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r}: expected a whole number of seconds") from None
    if number <= 0:
        raise SettingsError(f"{name}={value!r}: expected a positive number of seconds")
    return number


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) > 65535:
        raise SettingsError(f"{name}={value!r}: expected a port number (0-65535; 0 picks a free port)")
    return int(value)


def _arguments(value: str) -> list[str]:
    try:
        arguments = shlex.split(value)
    except ValueError as exc:
        raise SettingsError(f"{TRITON_ARGS}={value!r}: {exc}") from None
    for argument in arguments:
        if not argument.startswith("--"):
            raise SettingsError(f"{TRITON_ARGS}: {argument!r} is not a tritonserver option (--name=value)")
    return arguments
