"""The conversation as a chat template reads it: Hugging Face's message layout, rendered to one string.

Messages become ``{"role", "content"}`` dicts (content a string when it is text only
and the template takes strings, else a list of ``{"type": "text", "text"}`` and
``{"type": "image"}`` parts in the order they came), assistant turns carry their
``tool_calls`` (``{"id", "type": "function", "function": {"name", "arguments"}}``),
tool results their ``tool_call_id`` and ``name``; tools are ``{"type": "function",
"function": {"name", "description", "parameters"}}``. The generation prompt is always
added: the backend writes the assistant's next turn.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

from tritonmm.errors import InvalidInput
from tritonmm.interfaces.templates import ChatTemplate
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart, Tool
from tritonmm.tool_calls import mistral_call_id


def render_prompt(
    template: ChatTemplate,
    messages: Sequence[Message],
    tools: Sequence[Tool] = (),
    enable_thinking: bool | None = None,
    *,
    today: datetime.date | None = None,
) -> str:
    """The prompt string for ``messages`` (images already in place as image parts); ``today``
    is the date templates that write one (Llama 3) are given, the current one by default."""
    context: dict[str, Any] = {
        "messages": [_message(m, template) for m in messages],
        "tools": [_tool(t) for t in tools] or None,
        "add_generation_prompt": True,
    }
    if enable_thinking is not None:
        context["enable_thinking"] = enable_thinking
    if today is not None:
        context["date_string"] = today.strftime("%d %b %Y")
    return template.render(context, with_tools=bool(tools))


def _message(message: Message, template: ChatTemplate) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _content(message, template)}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": _call_id(call.id, template),
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call.arguments_json, template)},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = _call_id(message.tool_call_id, template)
        out["name"] = message.name
    return out


def _content(message: Message, template: ChatTemplate) -> str | list[dict[str, str]]:
    parts: list[dict[str, str]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, MediaPart) and part.modality is Modality.IMAGE:
            parts.append({"type": "image"})
        else:  # routing turns every other kind into images or text before the prompt is rendered
            raise InvalidInput(f"a {part.modality.value} part cannot be written into a text prompt")
    if template.content_lists or any(p["type"] != "text" for p in parts):
        return parts
    return "".join(p["text"] for p in parts)


def _arguments(arguments_json: str, template: ChatTemplate) -> Any:
    return arguments_json if template.string_arguments else json.loads(arguments_json)


def _call_id(call_id: str, template: ChatTemplate) -> str:
    return mistral_call_id(call_id) if template.mistral_ids else call_id


def _tool(tool: Tool) -> dict[str, Any]:
    function = {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)}
    return {"type": "function", "function": function}
