"""Dify prompt messages and parameters -> the core library's neutral types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dify_plugin.entities.model.message import (
    ImagePromptMessageContent,
    MultiModalPromptMessageContent,
    PromptMessage,
    PromptMessageContentType,
    PromptMessageRole,
    TextPromptMessageContent,
)

from tritonmm.chat import ChatParams
from tritonmm.errors import UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, Part, TextPart

_ROLES = {
    PromptMessageRole.SYSTEM: "system",
    PromptMessageRole.DEVELOPER: "system",
    PromptMessageRole.USER: "user",
    PromptMessageRole.ASSISTANT: "assistant",
    PromptMessageRole.TOOL: "user",  # no tool calling: a tool result reads as user-provided text
}

_MODALITIES = {
    PromptMessageContentType.IMAGE: Modality.IMAGE,
    PromptMessageContentType.VIDEO: Modality.VIDEO,
    PromptMessageContentType.AUDIO: Modality.AUDIO,
}


def to_messages(prompt_messages: Sequence[PromptMessage]) -> list[Message]:
    return [Message(role=_ROLES[m.role], parts=tuple(_parts(m.content))) for m in prompt_messages]


def _parts(content: Any) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
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
    """The SDK has already filtered and type-checked these against parameter_rules."""
    return ChatParams(
        max_tokens=model_parameters.get("max_tokens"),
        temperature=model_parameters.get("temperature"),
        top_p=model_parameters.get("top_p"),
        top_k=model_parameters.get("top_k"),
        seed=model_parameters.get("seed"),
        stop=tuple(s for s in (stop or ()) if s),
    )
