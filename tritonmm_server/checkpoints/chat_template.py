"""A checkpoint's chat template, read from its files, and what it can do: tools, a thinking switch.

The launcher writes what it finds into the chat model's config (``tmm.tool_call_family``,
``tmm.thinking_switch``), where the plugin reads it like every other feature; the chat
engine checks the same facts against the template its processor loaded, so that a
config and a checkpoint that disagree fail the load instead of a request.

Read without transformers (the launcher does not import it), in the order a
processor finds its template: ``chat_template.jinja`` (transformers 5 saves it),
``chat_template.json``, ``processor_config.json``, then ``tokenizer_config.json`` (a
string, or a list of named templates of which ``default`` is the one used).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tritonmm.contract import KEY_THINKING_SWITCH, KEY_TOOL_CALL_FAMILY
from tritonmm.tool_calls import detect_tool_support

__all__ = ["read_chat_template", "takes_thinking_switch", "template_parameters", "tool_call_family"]

_JINJA_TAG = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_THINKING = re.compile(r"\benable_thinking\b")
TRUE, FALSE = "true", "false"


def read_chat_template(checkpoint: Path) -> str | None:
    """The Jinja source of the checkpoint's chat template, or None when it has none."""
    checkpoint = Path(checkpoint)
    jinja = checkpoint / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        template = _template_in(checkpoint / name)
        if template:
            return template
    return None


def _template_in(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (ValueError, AttributeError):
        return None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def takes_thinking_switch(template: str | None) -> bool:
    """The template reads ``enable_thinking`` (Qwen3: off writes an empty think block into the prompt)."""
    return any(_THINKING.search(tag) for tag in _JINJA_TAG.findall(template or ""))


def tool_call_family(template: str | None) -> str:
    """The tool-call family whose markup the template writes, "" when it renders no tools (or none we parse)."""
    support = detect_tool_support(template)
    return support.family.value if support.supports_tool_calls and support.family else ""


def template_parameters(checkpoint: Path) -> dict[str, str]:
    """The ``tmm.*`` values the launcher writes into a chat model's config for this checkpoint."""
    template = read_chat_template(checkpoint)
    return {
        KEY_TOOL_CALL_FAMILY: tool_call_family(template),
        KEY_THINKING_SWITCH: TRUE if takes_thinking_switch(template) else FALSE,
    }
