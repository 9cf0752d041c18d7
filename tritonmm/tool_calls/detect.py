"""Which tool-call family a chat template writes, and whether it renders tools at all.

Read from the template's Jinja source, so that a model declares tool calls exactly
when its checkpoint can take them. A template *renders tools* when one of its Jinja
tags reads the ``tools`` variable (SmolVLM's and the Qwen2-VL / Qwen2.5-VL processor
templates do not). The family comes from the markup the template itself writes:

* hermes: ``<tool_call>`` (Qwen2.5, Qwen3, Hermes 2 Pro);
* mistral: ``[TOOL_CALLS]`` or ``[AVAILABLE_TOOLS]``;
* llama3: ``<|python_tag|>``, or the ``ipython`` role with ``"parameters"`` (Llama 3.1 - 3.3,
  3.2 Vision).

A template that renders tools in a layout none of these parses has no family: the
model then declares no tool calls.

Templates disagree on how a past call's arguments come in: Qwen2.5, Llama 3 and
Hermes 2 Pro apply ``tojson`` to them (a JSON string would come out quoted), while
Qwen3 and Mistral's own templates test ``arguments is string`` and write a string as
it is (and Mistral's escape quotes when handed a mapping). ``string_arguments`` says
which to pass: the JSON text when the template tests for it, else the parsed object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonmm.tool_calls.calls import ToolCallFamily

_JINJA_TAG = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_STRING_LITERAL = re.compile(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", re.DOTALL)
_TOOLS_VARIABLE = re.compile(r"(?<![\w.])tools\b")  # not builtin_tools, custom_tools or message.tools
_STRING_TEST = re.compile(r"arguments(?:'\])?\s+is\s+(?:not\s+)?string\b")

# Checked in this order: the first family whose marker the template writes.
_MARKERS: tuple[tuple[ToolCallFamily, tuple[str, ...]], ...] = (
    (ToolCallFamily.HERMES, ("<tool_call>",)),
    (ToolCallFamily.MISTRAL, ("[TOOL_CALLS]", "[AVAILABLE_TOOLS]")),
    (ToolCallFamily.LLAMA3, ("<|python_tag|>",)),
)


@dataclass(frozen=True)
class TemplateToolSupport:
    """``renders_tools``: the template reads ``tools``; ``family``: the call markup it writes, if known.

    ``string_arguments``: pass a past call's arguments as their JSON text (else as a mapping).
    """

    renders_tools: bool
    family: ToolCallFamily | None
    string_arguments: bool = False

    @property
    def supports_tool_calls(self) -> bool:
        """Tools can be offered and the calls parsed: the model may declare tool-call features."""
        return self.renders_tools and self.family is not None


def detect_tool_support(chat_template: str | None) -> TemplateToolSupport:
    """What ``chat_template`` (Jinja source; ``None`` or "" for none) does with tools."""
    template = chat_template or ""
    return TemplateToolSupport(
        renders_tools=_reads_tools(template),
        family=_family(template),
        string_arguments=bool(_STRING_TEST.search(template)),
    )


def _reads_tools(template: str) -> bool:
    return any(_TOOLS_VARIABLE.search(_STRING_LITERAL.sub("", tag)) for tag in _JINJA_TAG.findall(template))


def _family(template: str) -> ToolCallFamily | None:
    for family, markers in _MARKERS:
        if any(marker in template for marker in markers):
            return family
    if "ipython" in template and '"parameters"' in template:
        return ToolCallFamily.LLAMA3  # Llama 3.2 Vision writes no <|python_tag|>
    return None
