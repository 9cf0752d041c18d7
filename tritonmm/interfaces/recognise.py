"""Which interface a chat model speaks, read from its config: inputs and outputs (names and
dtypes), the platform or backend, and the decoupled policy.

* vLLM backend: ``text_input`` and ``sampling_parameters`` (STRING), ``text_output``
  (STRING), decoupled (the backend forces it); images as base64 strings in ``image``.
* TensorRT-LLM ensemble: platform ``ensemble`` with ``text_input`` (STRING),
  ``max_tokens`` (INT32) and ``text_output`` (STRING); it streams when a step is decoupled.
* TensorRT-LLM BLS: the same tensors on a model that is not an ensemble; images in
  ``image_url_input`` (a data URL) or ``image_bytes_input`` (pixels); with the
  ``accumulate_tokens`` parameter on, each streamed ``text_output`` is the whole text so far.
* Generate endpoint: any model with a STRING text input and output (names from the
  form, ``text_input`` / ``text_output`` by default), reached over HTTP and SSE.

Models that declare ``tmm.task`` follow our own contract and are not handled here.
A model that fits none is refused with what each interface would need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tritonmm.contract import KEY_TASK, TensorSpec
from tritonmm.errors import InvalidInput
from tritonmm.transport.http import config_parameters

STRING, BOOL, INT32 = "TYPE_STRING", "TYPE_BOOL", "TYPE_INT32"
AUTO = "auto"


class Interface(StrEnum):
    TRITONMM = "tritonmm"  # our own contract (docs/model-contract.md)
    VLLM = "vllm"
    TRTLLM_ENSEMBLE = "trtllm_ensemble"
    TRTLLM_BLS = "trtllm_bls"
    GENERATE = "generate"


INTERFACE_CHOICES = (AUTO, *(i.value for i in Interface))
LABELS = {
    Interface.VLLM: "the vLLM backend",
    Interface.TRTLLM_ENSEMBLE: "a TensorRT-LLM ensemble",
    Interface.TRTLLM_BLS: "TensorRT-LLM's BLS model",
    Interface.GENERATE: "the generate endpoint",
}
# Where each interface takes images, in the order they are preferred.
IMAGE_INPUTS = {
    Interface.VLLM: ("image",),
    Interface.TRTLLM_BLS: ("image_url_input", "image_bytes_input"),
}


@dataclass(frozen=True)
class ModelInterface:
    """A model we did not write, as far as talking to it goes.

    ``inputs``/``outputs``: the config's tensors by name (a ``TensorSpec`` each, dtype as
    the config writes it); ``batched``: ``max_batch_size > 0`` (every tensor gets a leading
    batch dimension of 1); ``cumulative``: each streamed text is the whole text so far;
    ``image_input``: the input images go in, "" when it takes none.
    """

    kind: Interface
    model: str
    inputs: Mapping[str, TensorSpec] = field(repr=False)
    outputs: Mapping[str, TensorSpec] = field(repr=False)
    decoupled: bool
    batched: bool
    text_input: str = "text_input"
    text_output: str = "text_output"
    cumulative: bool = False
    image_input: str = ""

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def recognise(
    model: str,
    config: Mapping[str, Any],
    *,
    choice: str = AUTO,
    text_input: str = "text_input",
    text_output: str = "text_output",
    step_config: Callable[[str], Mapping[str, Any]] | None = None,
) -> ModelInterface | None:
    """The interface of ``model``, or None when it follows our own contract.

    ``choice`` is the form's: ``auto`` tries each in turn. ``step_config`` reads another
    model's config (an ensemble streams when one of its steps is decoupled). Raises
    ``InvalidInput`` naming what is missing when the model fits none (or not the one chosen).
    """
    if choice not in INTERFACE_CHOICES:
        raise InvalidInput(f"unknown chat interface {choice!r}; choose one of {', '.join(INTERFACE_CHOICES)}")
    parameters = config_parameters(dict(config))
    if choice == Interface.TRITONMM or (choice == AUTO and KEY_TASK in parameters):
        return None
    inputs, outputs = _tensors(config, "input"), _tensors(config, "output")
    names = {Interface.GENERATE: (text_input, text_output)}
    candidates = [Interface(choice)] if choice != AUTO else [i for i in Interface if i is not Interface.TRITONMM]
    missing: dict[Interface, list[str]] = {}
    for kind in candidates:
        text_in, text_out = names.get(kind, ("text_input", "text_output"))
        gaps = _missing(kind, config, inputs, outputs, text_in, text_out)
        if not gaps:
            decoupled = _decoupled(config) or (
                kind is Interface.TRTLLM_ENSEMBLE and _step_decoupled(config, step_config)
            )
            return ModelInterface(
                kind=kind,
                model=model,
                inputs=inputs,
                outputs=outputs,
                decoupled=decoupled,
                batched=int(config.get("max_batch_size") or 0) > 0,
                text_input=text_in,
                text_output=text_out,
                cumulative=_flag(parameters.get("accumulate_tokens", "")),
                image_input=next((n for n in IMAGE_INPUTS.get(kind, ()) if n in inputs), ""),
            )
        missing[kind] = gaps
    raise InvalidInput(_refusal(model, choice, missing, inputs, outputs))


def _missing(
    kind: Interface,
    config: Mapping[str, Any],
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
    text_in: str,
    text_out: str,
) -> list[str]:
    need = [_need(inputs, "input", text_in, STRING), _need(outputs, "output", text_out, STRING)]
    if kind is Interface.VLLM:
        need.append(_need(inputs, "input", "sampling_parameters", STRING))
        if not _decoupled(config):
            need.append("the decoupled transaction policy (the vLLM backend always has it)")
    elif kind in (Interface.TRTLLM_ENSEMBLE, Interface.TRTLLM_BLS):
        need.append(_need(inputs, "input", "max_tokens", INT32))
        is_ensemble = config.get("platform") == "ensemble"
        if kind is Interface.TRTLLM_ENSEMBLE and not is_ensemble:
            need.append("platform 'ensemble'")
        if kind is Interface.TRTLLM_BLS and is_ensemble:
            need.append("a model that is not an ensemble (this one is)")
    return [gap for gap in need if gap]


def _need(tensors: Mapping[str, TensorSpec], section: str, name: str, dtype: str) -> str:
    found = tensors.get(name)
    if found is None:
        return f"{section} '{name}' ({dtype})"
    if found.triton_dtype != dtype:
        return f"{section} '{name}' as {dtype} (it is {found.triton_dtype})"
    return ""


def _refusal(
    model: str,
    choice: str,
    missing: dict[Interface, list[str]],
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
) -> str:
    reasons = "; ".join(f"{LABELS[kind]} needs {', '.join(gaps)}" for kind, gaps in missing.items())
    lead = (
        f"model '{model}' is not {LABELS[Interface(choice)]}"
        if choice != AUTO
        else f"model '{model}' fits no chat interface: it has no '{KEY_TASK}' parameter (our own models' contract)"
    )
    has = f"its inputs: {_listing(inputs)}; its outputs: {_listing(outputs)}"
    hint = " (the generate endpoint's input and output names can be set in the model's form)"
    return f"{lead}; {reasons}; {has}{hint if Interface.GENERATE in missing else ''}"


def _listing(tensors: Mapping[str, TensorSpec]) -> str:
    return ", ".join(f"{name} ({spec.triton_dtype})" for name, spec in tensors.items()) or "none"


def _tensors(config: Mapping[str, Any], section: str) -> dict[str, TensorSpec]:
    out = {}
    for entry in config.get(section) or []:
        dims = tuple(int(d) for d in entry.get("dims") or ())
        out[str(entry["name"])] = TensorSpec(
            str(entry["name"]), str(entry.get("data_type", "")), dims, bool(entry.get("optional"))
        )
    return out


def _decoupled(config: Mapping[str, Any]) -> bool:
    return bool((config.get("model_transaction_policy") or {}).get("decoupled"))


def _step_decoupled(config: Mapping[str, Any], step_config: Callable[[str], Mapping[str, Any]] | None) -> bool:
    """An ensemble answers as its steps do: it streams when one of them is decoupled."""
    if step_config is None:
        return False
    steps = (config.get("ensemble_scheduling") or {}).get("step") or []
    return any(_decoupled(step_config(str(step["model_name"]))) for step in steps if step.get("model_name"))


def _flag(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "t")
