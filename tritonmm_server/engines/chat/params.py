"""PARAMS_JSON parsing and validation.

Apart from the engine because it needs no model: the Triton model rejects bad
parameters before a request reaches preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tritonmm.contract import (
    CHAT_PARAM_KEYS,
    CHAT_PARAMS,
    PARAM_ENABLE_THINKING,
    PARAM_JSON_SCHEMA,
    PARAM_MAX_TOKENS,
    PARAM_RESPONSE_FORMAT,
    PARAM_SEED,
    PARAM_STOP,
    PARAM_TEMPERATURE,
    PARAM_TOP_K,
    PARAM_TOP_P,
)
from tritonmm.errors import InvalidInput
from tritonmm.structured_output import ResponseFormat, parse_response_format
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.request_params import is_int, params_object

MAX_STOP_SEQUENCES = 16
_SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes unsigned 64-bit seeds


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256  # 0: only count the prompt
    temperature: float = 0.7  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a fresh random seed per request
    response_format: ResponseFormat | None = None  # structured output; None: free text
    enable_thinking: bool | None = None  # the template's switch; None: its default


def parse_params(raw_json: str | None) -> GenerationParams:
    """Parse and validate PARAMS_JSON; absent, empty or ``null`` values take the defaults.

    ``response_format`` and ``json_schema`` are read together, by the core's rules
    (:func:`tritonmm.structured_output.parse_response_format`); the schema itself is
    checked when its grammar is built, before generation.
    """
    fields: dict[str, Any] = {}
    values = params_object(raw_json, CHAT_PARAMS, CHAT_PARAM_KEYS)
    for key, value in values.items():
        if key in _PARAMS:
            name, validate = _PARAMS[key]
            fields[name] = validate(key, value)
    try:
        fields["response_format"] = parse_response_format(
            values.get(PARAM_RESPONSE_FORMAT), values.get(PARAM_JSON_SCHEMA)
        )
    except InvalidInput as exc:
        raise InputError(str(exc)) from None
    return GenerationParams(**fields)


def _is_number(value: Any) -> bool:
    if is_int(value):
        return abs(value) < 2**63  # a bigger JSON integer would overflow float()
    return isinstance(value, float) and math.isfinite(value)


def _max_tokens(key: str, value: Any) -> int:
    if not is_int(value) or value < 0:
        raise InputError(f"{key} must be an integer >= 0, got {value!r}")
    return value


def _temperature(key: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise InputError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)


def _top_p(key: str, value: Any) -> float:
    if not _is_number(value) or not 0 < value <= 1:
        raise InputError(f"{key} must be a number in (0, 1], got {value!r}")
    return float(value)


def _top_k(key: str, value: Any) -> int:
    if not is_int(value) or value < 0:
        raise InputError(f"{key} must be an integer >= 0 (0 disables it), got {value!r}")
    return value


def _stop(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise InputError(f"{key} must be a non-empty string or a list of them, got {value!r}")
    if len(items) > MAX_STOP_SEQUENCES:
        raise InputError(f"{key} takes at most {MAX_STOP_SEQUENCES} sequences, got {len(items)}")
    return tuple(dict.fromkeys(items))


def _seed(key: str, value: Any) -> int:
    if not is_int(value) or not 0 <= value < _SEED_LIMIT:
        raise InputError(f"{key} must be an integer in [0, 2**64), got {value!r}")
    return value


def _enable_thinking(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{key} must be true or false, got {value!r}")
    return value


# wire key -> (GenerationParams field, validator)
_PARAMS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    PARAM_MAX_TOKENS: ("max_tokens", _max_tokens),
    PARAM_TEMPERATURE: ("temperature", _temperature),
    PARAM_TOP_P: ("top_p", _top_p),
    PARAM_TOP_K: ("top_k", _top_k),
    PARAM_STOP: ("stop", _stop),
    PARAM_SEED: ("seed", _seed),
    PARAM_ENABLE_THINKING: ("enable_thinking", _enable_thinking),
}
