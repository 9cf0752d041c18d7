"""Chat messages in neutral types, shared by the plugin handlers and the core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tritonmm.media import Modality
from tritonmm.tool_calls import ToolCall


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class MediaPart:
    """Media as Dify hands it over (base64 or a URL, plus the claimed MIME type), or
    bytes a tool has already downloaded and checked."""

    modality: Modality
    base64_data: str = ""
    url: str = ""
    mime_type: str = ""
    low_detail: bool = False  # Dify's vision "detail: low": a smaller image is enough
    data: bytes = b""


Part = TextPart | MediaPart


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant | tool
    parts: tuple[Part, ...]
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it made
    tool_call_id: str = ""  # tool: the call whose result this is
    name: str = ""  # tool: the function that was called


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and its parameters' JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
