"""Dify prompt messages, tools and parameters -> the core library's neutral types, and calls back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dify_plugin.entities.model.message import (
    AssistantPromptMessage,
    ImagePromptMessageContent,
    MultiModalPromptMessageContent,
    PromptMessage,
    PromptMessageContentType,
    PromptMessageRole,
    PromptMessageTool,
    TextPromptMessageContent,
    ToolPromptMessage,
)

from tritonmm.chat import ChatParams
from tritonmm.contract import PARAM_ENABLE_THINKING, PARAM_JSON_SCHEMA, PARAM_RESPONSE_FORMAT
from tritonmm.errors import UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, Part, TextPart, Tool
from tritonmm.structured_output import parse_response_format
from tritonmm.tool_calls import ToolCall

_ROLES = {
    PromptMessageRole.SYSTEM: "system",
    PromptMessageRole.DEVELOPER: "system",
    PromptMessageRole.USER: "user",
    PromptMessageRole.ASSISTANT: "assistant",
    PromptMessageRole.TOOL: "tool",
}

_MODALITIES = {
    PromptMessageContentType.IMAGE: Modality.IMAGE,
    PromptMessageContentType.VIDEO: Modality.VIDEO,
    PromptMessageContentType.AUDIO: Modality.AUDIO,
    PromptMessageContentType.DOCUMENT: Modality.DOCUMENT,
}


def to_messages(prompt_messages: Sequence[PromptMessage]) -> list[Message]:
    """Every message in order: assistant turns with the calls they made, tool results with their call's id."""
    return [_message(m) for m in prompt_messages]


def _message(message: PromptMessage) -> Message:
    role = _ROLES[message.role]
    parts = tuple(_parts(message.content))
    if isinstance(message, AssistantPromptMessage) and message.tool_calls:
        calls = tuple(ToolCall(c.id, c.function.name, c.function.arguments or "{}") for c in message.tool_calls)
        return Message(role, parts, tool_calls=calls)
    if isinstance(message, ToolPromptMessage):
        return Message(role, parts, tool_call_id=message.tool_call_id, name=message.name or "")
    return Message(role, parts)


def to_tools(tools: Sequence[PromptMessageTool] | None) -> list[Tool]:
    return [Tool(t.name, t.description or "", t.parameters or {}) for t in tools or ()]


def to_dify_tool_calls(calls: Sequence[ToolCall]) -> list[AssistantPromptMessage.ToolCall]:
    """The calls as Dify's entities: arguments stay the JSON text of an object."""
    return [
        AssistantPromptMessage.ToolCall(
            id=call.id,
            type="function",
            function=AssistantPromptMessage.ToolCall.ToolCallFunction(name=call.name, arguments=call.arguments_json),
        )
        for call in calls
    ]


def _parts(content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    return [_part(item) for item in content]


def _part(item: Any) -> Part:
    if isinstance(item, TextPromptMessageContent):
        return TextPart(item.data)
    modality = _MODALITIES.get(item.type)
    if modality is None or not isinstance(item, MultiModalPromptMessageContent):
        supported = ", ".join(["text", *(m.value for m in _MODALITIES.values())])
        raise UnsupportedMedia(f"{item.type.value} parts are not supported (supported: {supported})")
    low_detail = getattr(item, "detail", None) == ImagePromptMessageContent.DETAIL.LOW
    return MediaPart(
        modality=modality, base64_data=item.base64_data, url=item.url, mime_type=item.mime_type, low_detail=low_detail
    )


def to_chat_params(model_parameters: Mapping[str, Any], stop: Sequence[str] | None) -> ChatParams:
    """The SDK has already filtered and type-checked these against parameter_rules.

    A bad ``response_format``/``json_schema`` pair is refused here, before anything is
    sent (InvalidInput names the problem); the server checks the schema itself.
    """
    return ChatParams(
        max_tokens=model_parameters.get("max_tokens"),
        temperature=model_parameters.get("temperature"),
        top_p=model_parameters.get("top_p"),
        top_k=model_parameters.get("top_k"),
        seed=model_parameters.get("seed"),
        stop=tuple(s for s in (stop or ()) if s),
        response_format=parse_response_format(
            model_parameters.get(PARAM_RESPONSE_FORMAT), model_parameters.get(PARAM_JSON_SCHEMA)
        ),
        enable_thinking=model_parameters.get(PARAM_ENABLE_THINKING),
    )
