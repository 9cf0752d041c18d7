"""The chat request on the wire, one module for both ends.

A chat request is ``MESSAGES_JSON`` (a JSON list of ``{"role", "content": [parts]}``)
plus one BYTES tensor per media kind (``IMAGES``, ``VIDEOS``, ``AUDIOS``, ``DOCUMENTS``).
A media part points into its kind's tensor: ``{"type": "image", "index": 0}`` is
element 0 of ``IMAGES``. The plugin encodes with :func:`encode_messages`, the server
decodes with :func:`decode_messages`; neither spells the format anywhere else.

An agent's history rides along: an assistant message may carry the calls it made,
``"tool_calls": [{"id", "name", "arguments": JSON text of an object}]``, and a ``tool``
message carries one call's result, ``{"role": "tool", "tool_call_id", "name", "content"}``.

One numbering rule for people: media are counted **from 1, per kind, in the order
they appear in the request** (all messages, in order). Wire index 0 of ``IMAGES``
is "image 1" in every message a user can see, from either side
(:func:`media_label`).

One counting rule for caps: ``tmm.max_images`` caps the number of parts of *each*
media kind in one request (at most N images, N videos and N audio clips), checked
by :func:`check_media_counts` on both sides.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tritonmm.tool_calls import ToolCall

ROLES = ("system", "user", "assistant", "tool")
TEXT = "text"
MEDIA_KINDS = ("image", "video", "audio", "document")


class WireError(ValueError):
    """The payload breaks the wire format; ``str(e)`` names the message and part."""


@dataclass(frozen=True)
class WirePart:
    kind: str  # "text" or one of MEDIA_KINDS
    text: str = ""
    index: int = -1  # media parts: position in the kind's tensor, from 0

    @property
    def label(self) -> str:
        """How a person is told which part this is ("image 1"); text parts have no label."""
        return media_label(self.kind, self.index) if self.kind in MEDIA_KINDS else "text"


@dataclass(frozen=True)
class WireMessage:
    role: str
    parts: tuple[WirePart, ...]
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it made, in order
    tool_call_id: str = ""  # tool: the call this is the result of
    name: str = ""  # tool: the function called


def media_label(kind: str, index: int) -> str:
    """The user-facing name of wire index ``index`` of ``kind``: counted from 1."""
    return f"{kind} {index + 1}"


def text_part(text: str) -> WirePart:
    return WirePart(TEXT, text=text)


def media_part(kind: str, index: int) -> WirePart:
    if kind not in MEDIA_KINDS:
        raise ValueError(f"unknown media kind {kind!r}")
    return WirePart(kind, index=index)


def encode_messages(messages: Sequence[WireMessage]) -> bytes:
    """``MESSAGES_JSON`` for ``messages`` (UTF-8 bytes)."""
    return json.dumps([_encode_message(m) for m in messages], ensure_ascii=False).encode("utf-8")


def _encode_message(message: WireMessage) -> dict[str, Any]:
    content = [
        {"type": TEXT, "text": p.text} if p.kind == TEXT else {"type": p.kind, "index": p.index} for p in message.parts
    ]
    encoded: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        encoded["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments_json} for c in message.tool_calls
        ]
    if message.role == "tool":
        encoded.update(tool_call_id=message.tool_call_id, name=message.name)
    return encoded


def decode_messages(raw: bytes | str) -> list[WireMessage]:
    """Parse and validate ``MESSAGES_JSON``; raises :class:`WireError` naming what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"MESSAGES_JSON is not valid UTF-8: {exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise WireError(f"MESSAGES_JSON is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise WireError("MESSAGES_JSON must be a non-empty JSON list of messages")
    return [_decode_message(i, m) for i, m in enumerate(data)]


def _decode_message(i: int, raw: Any) -> WireMessage:
    where = f"message {i + 1}"
    if not isinstance(raw, dict):
        raise WireError(f"{where} must be an object, got {type(raw).__name__}")
    role = raw.get("role")
    if role not in ROLES:
        raise WireError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    content = raw.get("content")
    if isinstance(content, str):
        parts: tuple[WirePart, ...] = (text_part(content),)
    elif isinstance(content, list):
        parts = tuple(_decode_part(f"{where} part {j + 1}", p) for j, p in enumerate(content))
    else:
        raise WireError(f"{where}: content must be a string or a list of parts")
    calls = raw.get("tool_calls") or []
    if calls and role != "assistant":
        raise WireError(f"{where}: only an assistant message carries tool_calls, not a {role} message")
    if not isinstance(calls, list):
        raise WireError(f"{where}: tool_calls must be a list")
    tool_call_id, name = raw.get("tool_call_id", ""), raw.get("name", "")
    if role == "tool" and not (isinstance(tool_call_id, str) and isinstance(name, str)):
        raise WireError(f"{where}: a tool message needs a string tool_call_id and name")
    tool_calls = tuple(_decode_call(f"{where} tool call {j + 1}", c) for j, c in enumerate(calls))
    if role != "tool":
        return WireMessage(role, parts, tool_calls)
    return WireMessage(role, parts, tool_call_id=tool_call_id, name=name)


def _decode_call(where: str, raw: Any) -> ToolCall:
    if not isinstance(raw, dict):
        raise WireError(f"{where} must be an object, got {type(raw).__name__}")
    call_id, name, arguments = raw.get("id", ""), raw.get("name"), raw.get("arguments") or "{}"
    if not isinstance(call_id, str) or not isinstance(name, str) or not name:
        raise WireError(f"{where} needs a string id and a non-empty name")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else None
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise WireError(f"{where} ({name}): arguments must be the JSON text of an object")
    return ToolCall(call_id, name, arguments)


def _decode_part(where: str, raw: Any) -> WirePart:
    if not isinstance(raw, dict):
        raise WireError(f"{where} must be an object, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind == TEXT:
        text = raw.get("text")
        if not isinstance(text, str):
            raise WireError(f"{where}: a text part needs a string 'text'")
        return text_part(text)
    if kind in MEDIA_KINDS:
        index = raw.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise WireError(f"{where}: a part of type {kind!r} needs an integer 'index' >= 0, got {index!r}")
        return WirePart(kind, index=index)
    raise WireError(f"{where}: unknown part type {kind!r} (expected text, {', '.join(MEDIA_KINDS)})")


def media_counts(messages: Iterable[WireMessage]) -> Counter[str]:
    """How many parts of each media kind the messages carry."""
    return Counter(p.kind for m in messages for p in m.parts if p.kind in MEDIA_KINDS)


def check_media_counts(messages: Iterable[WireMessage], max_per_kind: int, model: str) -> None:
    """Refuse more than ``max_per_kind`` parts of any one media kind (the ``tmm.max_images`` rule)."""
    for kind, count in sorted(media_counts(messages).items()):
        if count > max_per_kind:
            raise WireError(
                f"{count} {kind} parts in one request; model '{model}' takes at most {max_per_kind} of each media kind"
            )


def check_media_refs(messages: Iterable[WireMessage], sizes: dict[str, int]) -> None:
    """Every media part points at an element that exists in its tensor (``sizes``: kind -> elements)."""
    for message in messages:
        for part in message.parts:
            if part.kind in MEDIA_KINDS and part.index >= sizes.get(part.kind, 0):
                have = sizes.get(part.kind, 0)
                raise WireError(f"{part.label} is missing: the request carries {have} {part.kind}(s)")
