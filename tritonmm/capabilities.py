"""What a model on the server can do, read from its config and cached briefly.

Dify asks for model schemas often (every page that lists models), so the answer
is cached per server and model for ``TTL`` seconds; an invocation re-reads it
after that, so a model reloaded with other features is noticed within a minute.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from tritonmm.contract import Capabilities, Task
from tritonmm.errors import InvalidInput, ModelNotReady
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonHTTP, config_parameters

TTL = 30.0

_cache: dict[tuple[str, str], tuple[float, Capabilities]] = {}
_lock = threading.Lock()


def model_capabilities(
    settings: ServerSettings, model: str, task: Task | tuple[Task, ...] | None = None, *, fresh: bool = False
) -> Capabilities:
    """The model's capabilities; with ``task`` (one or several), refuse a model that does something else."""
    key = (settings.http_url, model)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit and not fresh and now - hit[0] < TTL:
        caps = hit[1]
    else:
        caps = _read(settings, model)
        with _lock:
            _cache[key] = (now, caps)
    accepted = (task,) if isinstance(task, Task) else task
    if accepted is not None and caps.task not in accepted:
        wanted = " or ".join(t.value for t in accepted)
        raise InvalidInput(f"model '{model}' is a {caps.task.value} model, not a {wanted} model")
    return caps


def last_known(settings: ServerSettings, model: str) -> Capabilities | None:
    with _lock:
        hit = _cache.get((settings.http_url, model))
    return hit[1] if hit else None


def _read(settings: ServerSettings, model: str) -> Capabilities:
    http = TritonHTTP(settings)
    config = http.model_config(model)  # raises ModelNotFound for an unknown name
    try:
        caps = Capabilities.from_parameters(config_parameters(config))
        caps = replace(caps, max_batch_size=int(config.get("max_batch_size") or 0))
    except ValueError as exc:
        raise InvalidInput(
            f"model '{model}' on {settings.http_url} does not follow the tritonmm chat contract "
            f"(docs/model-contract.md): {exc}"
        ) from None
    if not http.is_model_ready(model):
        raise ModelNotReady(f"model '{model}' is in the repository of {settings.http_url} but not loaded (not ready)")
    return caps
