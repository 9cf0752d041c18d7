"""Credential validation as a sequence of named steps, each with its own answer.

"Validation failed" helps nobody; "step 4/5 model loaded: model 'chat' is in the
repository but UNAVAILABLE: <Triton's reason>" tells the operator what to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tritonmm.contract import Task
from tritonmm.errors import ModelNotFound, ModelNotReady, ServerNotReady, TritonMMError
from tritonmm.transport import TritonClient

Found = TypeVar("Found")
STEPS = ("server reachable", "server ready", "model present", "model loaded", "probe request")


class CheckFailed(TritonMMError):
    def __init__(self, step: str, cause: Exception) -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"step {STEPS.index(step) + 1}/{len(STEPS)} '{step}' failed: {cause}")


def check_model(
    client: TritonClient,
    model: str,
    task: Task | tuple[Task, ...],
    probe: Callable[[Found], None],
    describe: Callable[[], Found] | None = None,
) -> Found:
    """Run every step in order; raise ``CheckFailed`` at the first that fails.

    ``describe`` reads what the model is (default: its capabilities under our contract, refused
    for another task); ``probe`` gets that. Models we did not write are described by
    ``tritonmm.interfaces`` instead.
    """
    check_server(client)
    with _step("model present"):
        _require_in_repository(client, model)
    with _step("model loaded"):
        if not client.is_model_ready(model):
            raise ModelNotReady(f"model '{model}' is in the repository but not loaded{_state(client, model)}")
    with _step("model present"):
        found = describe() if describe is not None else client.capabilities(model, task, fresh=True)
    with _step("probe request"):
        probe(found)
    return found


def check_server(client: TritonClient) -> None:
    """The first two steps, for callers that use many models (the workflow tools)."""
    with _step("server reachable"):
        client.is_live()
    with _step("server ready"):
        if not client.is_ready():
            raise ServerNotReady(
                f"{client.url}/v2/health/ready is not OK (a model failed to load, or the server is starting)"
            )


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Tag any failure inside the block with the step's name."""
    try:
        yield
    except CheckFailed:
        raise
    except Exception as exc:
        raise CheckFailed(name, exc) from exc


def _require_in_repository(client: TritonClient, model: str) -> None:
    """Present = listed in the repository index, loaded or not.

    A model that is in the repository but not loaded has no readable config
    either, so the config alone cannot tell "missing" from "not loaded".
    """
    try:
        names = sorted({e["name"] for e in client.repository_index() if "name" in e})
    except TritonMMError:  # index API unavailable (e.g. behind a proxy): fall back to the config
        client.model_config(model)
        return
    if model not in names:
        raise ModelNotFound(
            f"model '{model}' is not in the repository; models on this server: {', '.join(names) or '(none)'}"
        )


def _state(client: TritonClient, model: str) -> str:
    try:
        entries = [e for e in client.repository_index() if e.get("name") == model]
    except TritonMMError:
        return ""
    if not entries:
        return ""
    entry = entries[-1]
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    return f" (state {entry.get('state', 'unknown')}{reason})"
