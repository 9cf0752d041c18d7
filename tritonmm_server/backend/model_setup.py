# SPDX-License-Identifier: Apache-2.0
"""What every bundled model's ``initialize`` reads from Triton's arguments: :func:`load_setup`.

The config checked against the shape the model is served in (decoupled, batched or
one request at a time) and against the contract's tensors, then the ``tmm.*``
parameters, the checkpoint directory and the capabilities, all checked once so that a
wrong config fails the load with a message naming the key.
Importable only inside the python-backend stub (it needs ``triton_python_backend_utils``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import triton_python_backend_utils as pb_utils

from tritonmm.contract import (
    KEY_CONTEXT_SIZE,
    KEY_MODEL_PATH,
    Capabilities,
    NumberT,
    TensorSpec,
    config_mismatch,
    positive_parameter,
)


@dataclass(frozen=True)
class ModelSetup:
    """What ``initialize`` learns from Triton's arguments, already validated."""

    name: str
    parameters: dict[str, str]  # the config's parameters as {key: string_value}
    model_path: str  # an existing directory; "" for a model whose weights ship inside its runtime package
    capabilities: Capabilities

    def positive(self, key: str, default: NumberT | None = None, kind: type[NumberT] = int) -> NumberT:
        """A positive ``int`` (or ``float``) ``tmm.*`` parameter; ``default`` when absent (None: required).

        ``TritonModelException`` naming the key when it is missing or malformed.
        """
        try:
            return positive_parameter(self.parameters, key, default, kind)
        except ValueError as exc:
            raise pb_utils.TritonModelException(str(exc)) from None


def load_setup(
    args: dict[str, str],
    kind: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    decoupled: bool = False,
    row: str | None = None,
    needs_model_path: bool = True,
) -> ModelSetup:
    """Check the config's shape and tensors, and read its parameters; ``TritonModelException`` if wrong.

    ``kind`` names the model in messages ("chat"). ``decoupled``: the model streams
    (one response per token or sentence, :mod:`.streaming`). Otherwise it answers once
    per request, either batched with ``row`` saying what one batch row holds ("one
    text", :mod:`.batched`) or, with ``row`` None, one request at a time and
    ``max_batch_size`` 0, since the contract's dims are then the whole request's shape
    (:mod:`.unbatched`). ``needs_model_path`` as for :func:`read_setup`.
    """
    config = json.loads(args["model_config"])
    _check_shape(config, kind, decoupled, row)
    check_contract(config, inputs, outputs)
    return read_setup(args["model_name"], config, needs_model_path=needs_model_path)


def _check_shape(config: dict[str, Any], kind: str, decoupled: bool, row: str | None) -> None:
    is_decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
    if decoupled and not is_decoupled:
        raise pb_utils.TritonModelException(
            f"the {kind} model must be decoupled: model_transaction_policy {{ decoupled: true }}"
        )
    if decoupled:
        return
    if is_decoupled:
        raise pb_utils.TritonModelException(f"the {kind} model must not be decoupled: one response per request")
    max_batch_size = int(config.get("max_batch_size", 0))
    if row is None and max_batch_size != 0:
        raise pb_utils.TritonModelException(f"the {kind} model must have max_batch_size 0: it is not batched")
    if row is not None and max_batch_size < 1:
        raise pb_utils.TritonModelException(f"the {kind} model needs max_batch_size >= 1: {row} per row")


def read_setup(model_name: str, config: dict[str, Any], *, needs_model_path: bool = True) -> ModelSetup:
    """Parameters, checkpoint directory and capabilities; ``TritonModelException`` if wrong.

    ``needs_model_path=False`` is for models whose weights come with their runtime
    package (OCR: RapidOCR's wheel): ``tmm.model_path`` is then not read at all,
    rather than pointed at a made-up directory.
    """
    params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    if not needs_model_path:
        return ModelSetup(model_name, params, "", _capabilities(params))
    model_path = params.get(KEY_MODEL_PATH, "")
    if not model_path:
        raise pb_utils.TritonModelException(
            f"{KEY_MODEL_PATH} is empty: start the server with the launcher or set it to a checkpoint directory"
        )
    if not Path(model_path).is_dir():
        raise pb_utils.TritonModelException(f"{KEY_MODEL_PATH} {model_path!r} is not a directory")
    capabilities = _capabilities(params)
    _quiet_progress_bars()
    return ModelSetup(model_name, params, model_path, capabilities)


class _Engine(Protocol):
    def warm_up(self) -> None: ...


EngineT = TypeVar("EngineT", bound=_Engine)


def start_engine(setup: ModelSetup, build: Callable[[str], EngineT]) -> EngineT:
    """``build(model_path)``, warmed up so that the first request does not pay for the start-up.

    A ValueError from either step means a checkpoint this model cannot run (not a
    dual encoder, a classifier with several labels, a window too small for the
    special tokens, not a Whisper checkpoint): the load fails naming the directory.
    """
    try:
        engine = build(setup.model_path)
        engine.warm_up()
    except ValueError as exc:
        raise pb_utils.TritonModelException(f"{setup.model_path}: {exc}") from None
    return engine


def check_contract(config: dict[str, Any], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """Refuse to load with tensors that do not match the contract the plugin relies on."""
    problem = config_mismatch(config, tuple(inputs), tuple(outputs))
    if problem:
        raise pb_utils.TritonModelException(problem)


def _capabilities(params: dict[str, str]) -> Capabilities:
    try:
        return Capabilities.from_parameters(params)
    except ValueError as exc:
        raise pb_utils.TritonModelException(str(exc)) from None


def warn_context_size(setup: ModelSetup, actual: int) -> None:
    """Log when the declared ``tmm.context_size`` is not the checkpoint's window."""
    if setup.capabilities.context_size != actual:
        pb_utils.Logger.log_warn(
            f"{KEY_CONTEXT_SIZE} says {setup.capabilities.context_size} but the checkpoint's window is "
            f"{actual}; clients will budget with the former"
        )


def _quiet_progress_bars() -> None:
    """No tqdm bars while weights load: they would garble the server log."""
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # a model whose runtime does not use transformers (Piper, CTranslate2)
        return
    transformers_logging.disable_progress_bar()
