"""Retries that never duplicate output: another server, or the fallback model, before the first byte.

A request is tried on one address; when that attempt fails in a way another server
may not (it cannot connect, the server or model is unavailable or busy, HTTP 503 or
429, the model is not there), the next attempt goes to **another** address after an
exponential backoff with jitter, while the failover time (``failover_timeout``) lasts.
When no address is left for the model, the fallback model (if the credentials name
one) gets its turn the same way. Each address is tried at most once per model.

An attempt ends when its answer has begun: a unary call's whole answer, a stream's
first response. Nothing has reached the caller before that, so a retry cannot repeat
anything; after it, ``InferStream`` ends a broken stream with an error instead.

A read timeout is not retried: the server is slow, not down, and another attempt
would wait as long again. Invalid input, an unknown model everywhere, refused
credentials and model failures are the request's own and are never retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from tritonmm.errors import (
    ConnectionFailed,
    ModelNotFound,
    ModelNotReady,
    RequestTimeout,
    ServerNotReady,
    TritonMMError,
    Unavailable,
)
from tritonmm.transport.endpoints import Address, EndpointPool

LOG = logging.getLogger(__name__)

RETRY_BASE = 0.05  # seconds before the first retry; doubles with each one
RETRY_MAX = 2.0  # the longest pause between two attempts

T = TypeVar("T")


class Outcome(Enum):
    FINAL = "final"  # the request's own failure: raised as it is
    SERVER_DOWN = "server down"  # retried elsewhere; the address is taken out
    MODEL_ABSENT = "model absent"  # retried elsewhere; the address is not asked for this model for a while
    BUSY = "busy"  # retried elsewhere


def classify(error: TritonMMError) -> Outcome:
    if isinstance(error, RequestTimeout):
        return Outcome.FINAL
    if isinstance(error, (ConnectionFailed, ServerNotReady)):
        return Outcome.SERVER_DOWN
    if isinstance(error, (ModelNotReady, ModelNotFound)):
        return Outcome.MODEL_ABSENT
    if isinstance(error, Unavailable):
        return Outcome.BUSY
    return Outcome.FINAL


def note_failure(pool: EndpointPool, address: Address, model: str | None, error: TritonMMError) -> Outcome:
    """Tell the pool what an attempt's failure says about its address; the outcome."""
    outcome = classify(error)
    if outcome is Outcome.SERVER_DOWN:
        pool.eject(address, error)
    elif outcome is Outcome.MODEL_ABSENT and model is not None:
        pool.mark_model(address, model, False)
    return outcome


@dataclass
class Failover:
    """The retry policy of one client: its pool, the time it may take, the fallback model."""

    pool: EndpointPool
    timeout: float  # seconds in which further attempts may start
    fallback_model: str = ""
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = field(default_factory=lambda: random.Random().random)

    def run(
        self,
        model: str | None,
        attempt: Callable[[Address, str | None], T],
        *,
        request_id: str = "",
        fallback: bool = True,
    ) -> T:
        """``attempt(address, model)`` until one succeeds; with ``fallback``, the fallback model after
        ``model``. ``model`` None: any server will do (control-plane calls)."""
        models = [model]
        if fallback and model is not None and self.fallback_model and self.fallback_model != model:
            models.append(self.fallback_model)
        started = self.clock()
        failures: list[tuple[str, TritonMMError]] = []
        attempts = 0
        for name in models:
            tried: list[Address] = []
            first_for_model = True
            while True:
                if not first_for_model and self.clock() - started >= self.timeout:
                    break  # out of time for this model; the fallback still gets one try
                address = self.pool.choose(name, tried)
                if address is None:
                    if not tried and name is not None:
                        failures.append(("", ModelNotReady(f"model '{name}' is not READY on any server")))
                    break
                if attempts:
                    self._pause(attempts, started, first_for_model)
                tried.append(address)
                attempts += 1
                first_for_model = False
                try:
                    result = attempt(address, name)
                except TritonMMError as exc:
                    if note_failure(self.pool, address, name, exc) is Outcome.FINAL:
                        raise
                    failures.append((address.label, exc))
                    LOG.warning(
                        "request %s (%s) failed on %s, trying elsewhere: %s",
                        request_id or "-",
                        f"model {name}" if name else "control plane",
                        address.label,
                        exc,
                    )
                    continue
                self.pool.succeeded(address)
                if name != model:
                    LOG.warning("request %s: served by the fallback model %s", request_id, name)
                return result
        raise self._gave_up(models, failures, started)

    def _pause(self, attempts: int, started: float, first_for_model: bool) -> None:
        """Exponential backoff with jitter (half to all of the step), never past the failover time."""
        step = min(RETRY_MAX, RETRY_BASE * 2 ** (attempts - 1))
        left = started + self.timeout - self.clock()
        pause = step * (0.5 + 0.5 * self.jitter())
        if not first_for_model:
            pause = min(pause, max(left, 0.0))
        if pause > 0:
            self.sleep(pause)

    def _gave_up(
        self, models: list[str | None], failures: list[tuple[str, TritonMMError]], started: float
    ) -> Exception:
        if not failures:
            return ConnectionFailed("no Triton server is left to send the request to")
        if len(failures) == 1:
            return failures[0][1]
        last = failures[-1][1]
        names = " then ".join(f"'{m}'" for m in models if m is not None) or "the request"
        tried = "; ".join(f"{where}: {error}" if where else str(error) for where, error in failures)
        spent = self.clock() - started
        error = type(last)(f"no server could serve {names} (tried {len(failures)} times in {spent:.1f} s): {tried}")
        error.__cause__ = last
        return error
