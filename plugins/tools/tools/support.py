"""What every tool of this provider shares: the server client, parameters, downloads.

No ``Tool`` subclass lives here: the SDK requires exactly one per tool module,
and a base class imported into a module would count as a second.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from dify_plugin.file.file import File

from tritonmm import chat
from tritonmm.chat import ChatParams
from tritonmm.contract import Task
from tritonmm.errors import InvalidInput
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart, Message, TextPart
from tritonmm.settings import ServerSettings, flag
from tritonmm.transport import TritonClient, client_for

CRED_ALLOW_ADMIN = "allow_admin"
CRED_METRICS_URL = "metrics_url"


def truthy(parameters: Mapping[str, Any], name: str) -> bool:
    """A yes/no parameter or credential (bool, "true"/"false" or 1/0, depending on the caller)."""
    return flag(parameters, name, False)


def client(credentials: Mapping[str, Any]) -> TritonClient:
    """The server these credentials name, through its one shared client: the only way a tool
    reaches Triton."""
    return client_for(ServerSettings.from_credentials(credentials))


def text(parameters: Mapping[str, Any], name: str, default: str = "") -> str:
    value = parameters.get(name)
    return default if value is None else str(value).strip() or default


def integer(parameters: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = parameters.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(float(raw))
    except (TypeError, ValueError):
        raise InvalidInput(f"'{name}' must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise InvalidInput(f"'{name}' must be between {low} and {high}, got {value}")
    return value


def files(parameters: Mapping[str, Any], name: str) -> list[File]:
    """A ``file`` or ``files`` parameter as a list; refused by name when absent."""
    value = parameters.get(name)
    found = [f for f in (value if isinstance(value, list) else [value]) if isinstance(f, File)]
    if not found:
        raise InvalidInput(f"'{name}' needs a file")
    return found


def download(credentials: Mapping[str, Any], file: File, modality: Modality, what: str) -> bytes:
    """The file's bytes under the SSRF policy, capped by size and checked by content."""
    label = f"{what} ({file.filename})" if file.filename else what
    return loader_for(modality).download(
        file.url,
        ServerSettings.from_credentials(credentials),
        declared_size=file.size,
        claimed_mime=file.mime_type or "",
        what=label,
    )


def answer(
    credentials: Mapping[str, Any], model: str, question: str, media: list[MediaPart], max_tokens: int
) -> Iterator[str]:
    """Ask the chat model about the media; the answer's text as it is generated.

    Opened here, so a bad request or an unreachable server fails before the first piece.
    """
    if not question:
        raise InvalidInput("'question' is empty")
    server = client(credentials)
    caps = server.capabilities(model, Task.CHAT)
    messages = [Message("user", (*media, TextPart(question)))]
    chunks = chat.open_chat(server, model, messages, ChatParams(max_tokens=max_tokens), caps)
    return (chunk.text for chunk in chunks)
