"""The chat model's batching settings, read from its config parameters.

Kept apart from the scheduler so that the python-backend adapter can read and check
them (a wrong value fails the model load naming the key) without touching torch
state, and so that the defaults for a CPU and a GPU live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tritonmm.contract import (
    KEY_BATCH_MAX_SEQUENCES,
    KEY_BATCH_MAX_WAITING,
    KEY_BATCHING,
    KEY_KV_CACHE_MB,
    positive_parameter,
)
from tritonmm_server.engines.chat.batching import BatchLimits, MiB

ON, OFF = "on", "off"


def batch_limits(parameters: Mapping[str, str], device: torch.device) -> BatchLimits | None:
    """The limits ``parameters`` ask for (defaults for ``device`` where absent); None for ``tmm.batching: off``.

    Raises ``ValueError`` naming the key of a malformed value.
    """
    switch = (parameters.get(KEY_BATCHING) or ON).strip().lower()
    if switch not in (ON, OFF):
        raise ValueError(f"{KEY_BATCHING} must be '{ON}' or '{OFF}', got {parameters.get(KEY_BATCHING)!r}")
    if switch == OFF:
        return None
    default = BatchLimits.defaults(device)
    waiting = (parameters.get(KEY_BATCH_MAX_WAITING) or "").strip()
    return BatchLimits(
        max_sequences=positive_parameter(parameters, KEY_BATCH_MAX_SEQUENCES, default.max_sequences),
        # 0 is allowed: no waiting line, a request either joins the batch at once or is busy.
        max_waiting=default.max_waiting if not waiting else _non_negative(waiting),
        kv_cache_bytes=int(positive_parameter(parameters, KEY_KV_CACHE_MB, default.kv_cache_bytes / MiB, float) * MiB),
    )


def _non_negative(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{KEY_BATCH_MAX_WAITING} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{KEY_BATCH_MAX_WAITING} must be >= 0, got {value}")
    return value
