"""The checkpoint's chat template: what it can do, checked against the config, and how it is rendered.

The launcher writes what a checkpoint's template can do into the model's config
(``tmm.tool_call_family``, ``tmm.thinking_switch``; :mod:`tritonmm_server.checkpoints.chat_template`),
and the plugin declares features from that. :class:`ChatTemplate` holds the engine to
the same facts, read from the template the processor actually loaded: a config that
claims tools or a thinking switch the template does not have fails the load, and a
request that asks for either where the config does not declare it is refused.

Rendering passes the tools (``tools=[{"type": "function", "function": {...}}]``) and
the thinking switch (``enable_thinking``) to the template, as Hugging Face templates
take them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jinja2
from transformers import BatchFeature

from tritonmm.contract import KEY_THINKING_SWITCH, KEY_TOOL_CALL_FAMILY, PARAM_ENABLE_THINKING
from tritonmm.tool_calls import ToolCallFamily, detect_tool_support
from tritonmm.tool_calls.llama3 import PYTHON_TAG
from tritonmm.tool_calls.mistral import ARGS, CALL_ID, TOOL_CALLS
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.chat_template import takes_thinking_switch
from tritonmm_server.engines.chat.conversation import Conversation
from tritonmm_server.engines.chat.output import THINK_OPENER

__all__ = ["ChatTemplate"]

# Special tokens a family writes its calls with: kept in the text when tools are offered.
_CALL_MARKERS = {ToolCallFamily.LLAMA3: (PYTHON_TAG,), ToolCallFamily.MISTRAL: (TOOL_CALLS, ARGS, CALL_ID)}
_PROMPT_TAIL_TOKENS = 16  # enough to see whether the generation prompt ends with <think>, however it tokenizes


class ChatTemplate:
    """One checkpoint's template. Raises ValueError when the config's claims do not hold for it.

    ``tool_call_family``: the config's ``tmm.tool_call_family`` ("" for none); it may
    name the family of a template whose markup is not detected, but the template must
    render tools. ``thinking_switch``: the config's ``tmm.thinking_switch``.
    """

    def __init__(
        self, processor: Any, tokenizer: Any, *, name: str, tool_call_family: str = "", thinking_switch: bool = False
    ) -> None:
        self._processor = processor
        self._tokenizer = tokenizer
        self._name = name
        source = processor.chat_template or ""
        support = detect_tool_support(source)
        self.family = self._family(tool_call_family, support.renders_tools)
        if thinking_switch and not takes_thinking_switch(source):
            raise ValueError(
                f"{KEY_THINKING_SWITCH} is true, but the chat template of {name} does not read "
                f"{PARAM_ENABLE_THINKING}: set it to false"
            )
        self.thinking_switch = thinking_switch
        self.conversation = Conversation(tokenizer, source, self.family, support.string_arguments)
        self._hidden_ids = self._hidden_when_calling(tokenizer, self.family)
        self._thinks = THINK_OPENER in source

    def _family(self, declared: str, renders_tools: bool) -> ToolCallFamily | None:
        if not declared.strip():
            return None
        try:
            family = ToolCallFamily(declared.strip())
        except ValueError:
            known = ", ".join(f.value for f in ToolCallFamily)
            raise ValueError(f"{KEY_TOOL_CALL_FAMILY} must be one of {known} or empty, got {declared!r}") from None
        if not renders_tools:
            raise ValueError(
                f"{KEY_TOOL_CALL_FAMILY} is {family.value}, but the chat template of {self._name} renders no tools: "
                f"leave it empty (the launcher reads it from the template)"
            )
        return family

    @staticmethod
    def _hidden_when_calling(tokenizer: Any, family: ToolCallFamily | None) -> frozenset[int] | None:
        """The special token ids to drop from the text when tools are offered: all but the family's call markers.

        None when the family writes no special markers (its calls decode as plain text).
        """
        ids = (tokenizer.convert_tokens_to_ids(m) for m in _CALL_MARKERS.get(family, ()))
        markers = {i for i in ids if i is not None and i != tokenizer.unk_token_id}
        special = set(tokenizer.all_special_ids)
        special |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
        kept = markers & special
        return frozenset(special - kept) if kept else None

    def hidden_ids(self, tools_offered: bool) -> frozenset[int] | None:
        """TokenText's ``hidden_ids`` for a request (None: drop every special token)."""
        return self._hidden_ids if tools_offered else None

    def render(
        self, messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]], enable_thinking: bool | None
    ) -> BatchFeature:
        """The model inputs of ``messages``; InputError when the request asks what the template cannot do."""
        if tools and self.family is None:
            raise InputError(
                f"model {self._name} cannot call tools: its chat template renders none ({KEY_TOOL_CALL_FAMILY} is empty)"
            )
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = list(tools)
        if enable_thinking is not None:
            if not self.thinking_switch:
                raise InputError(
                    f"model {self._name} has no thinking switch: its chat template does not read {PARAM_ENABLE_THINKING}"
                )
            kwargs[PARAM_ENABLE_THINKING] = enable_thinking
        try:
            return self._processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", **kwargs
            )
        except jinja2.TemplateError as exc:
            # Real templates reject what they do not support (e.g. roles that do not alternate).
            raise InputError(f"the model's chat template rejected the messages: {exc}") from None

    def opens_thinking(self, input_ids: Any) -> bool:
        """The generation prompt ends inside an open ``<think>`` block (the model writes only its end)."""
        if not self._thinks:
            return False
        tail = input_ids[0, -_PROMPT_TAIL_TOKENS:].tolist()
        return self._tokenizer.decode(tail, skip_special_tokens=False).rstrip().endswith(THINK_OPENER)
