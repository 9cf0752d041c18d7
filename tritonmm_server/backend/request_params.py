"""PARAMS_JSON, the optional JSON object of per-request parameters (chat, speech_to_text, video_frames).

Each model validates its own keys; what they share is reading the tensor's value
into a dict: absent, empty or blank means no parameters, ``null`` values are
dropped (they take the defaults), and anything else that is not a JSON object of
known keys raises :class:`~tritonmm_server.backend.errors.InputError` naming the tensor.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from tritonmm.contract import TensorSpec
from tritonmm_server.backend.errors import InputError

__all__ = ["is_int", "params_object"]


def params_object(raw: bytes | str | None, spec: TensorSpec, known: Collection[str]) -> dict[str, Any]:
    """The parameters of ``raw`` (``spec``'s value) without their null values; {} when there are none."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{spec.name} is not valid UTF-8: {exc}") from None
    if raw is None or not raw.strip():
        return {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{spec.name} is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InputError(f"{spec.name} must be a JSON object, got {type(params).__name__}")
    values = {key: value for key, value in params.items() if value is not None}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown parameter {unknown[0]!r}; known parameters: {', '.join(known)}")
    return values


def is_int(value: Any) -> bool:
    """A JSON integer: bool is an int in Python, but ``"count": true`` is a client bug, not 1."""
    return isinstance(value, int) and not isinstance(value, bool)
