"""What a model on the server can do: read from its config, cached briefly.

Dify asks for model schemas often (every page that lists models), so each
``TritonClient`` keeps its models' capabilities for ``TTL`` seconds; an invocation
re-reads them after that, so a model reloaded with other features is noticed
within a minute. Validation reads them fresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tritonmm.contract import Capabilities, Task
from tritonmm.errors import InvalidInput

TTL = 30.0


class CapabilityCache:
    """``read(model)`` answers, kept per model for ``ttl`` seconds of ``clock``."""

    def __init__(
        self, read: Callable[[str], Capabilities], *, ttl: float = TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Capabilities]] = {}
        self._lock = threading.Lock()

    def get(self, model: str, *, fresh: bool = False) -> Capabilities:
        now = self._clock()
        with self._lock:
            hit = self._entries.get(model)
        if hit and not fresh and now - hit[0] < self._ttl:
            return hit[1]
        caps = self._read(model)  # outside the lock: a slow server must not block other models
        with self._lock:
            self._entries[model] = (now, caps)
        return caps

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def from_config(model: str, config: dict[str, Any], parameters: dict[str, str], server: str) -> Capabilities:
    """A model config's capabilities; a config outside the contract is refused by name."""
    try:
        caps = Capabilities.from_parameters(parameters)
        return replace(caps, max_batch_size=int(config.get("max_batch_size") or 0))
    except ValueError as exc:
        raise InvalidInput(
            f"model '{model}' on {server} does not follow the tritonmm model contract (docs/model-contract.md): {exc}"
        ) from None


def require_task(caps: Capabilities, model: str, task: Task | tuple[Task, ...] | None) -> Capabilities:
    """``caps`` when the model serves ``task`` (or one of several); else refused by name."""
    accepted = (task,) if isinstance(task, Task) else task
    if accepted is not None and caps.task not in accepted:
        wanted = " or ".join(t.value for t in accepted)
        raise InvalidInput(f"model '{model}' is a {caps.task.value} model, not a {wanted} model")
    return caps
