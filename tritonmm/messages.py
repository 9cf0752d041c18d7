"""Chat messages in neutral types, shared by the plugin handlers and the core."""

from __future__ import annotations

from dataclasses import dataclass

from tritonmm.media import Modality


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
    role: str  # system | user | assistant
    parts: tuple[Part, ...]
