"""A chat request as the checkpoint's chat template takes it: messages, media, tools, an agent's history.

:class:`Conversation` turns decoded wire messages (:mod:`tritonmm.chat_wire`) and their
decoded media into the message dicts of ``apply_chat_template``:

* text is kept text: control tokens written in it are broken up (:meth:`Conversation.defuse`);
* images go in as images; a video as its sampled frames and a PDF document as its
  rendered pages, each after a line that says what follows (video processors need
  torchvision, and no processor reads PDF);
* an assistant turn that called tools carries ``tool_calls`` in the layout Hugging
  Face templates read (``{"id", "type": "function", "function": {"name", "arguments"}}``),
  the arguments as JSON text or as a mapping, whichever the template expects; a tool
  result is a ``tool`` message with its call's id and the function's name;
* Mistral's templates accept only 9-character call ids (:func:`mistral_call_id`, the
  same for a call and its result); Llama 3's refuse two calls in one assistant turn, so
  such a turn is rendered as one turn per call, each followed by its own result.

:func:`parse_tools` reads ``TOOLS_JSON`` into the ``tools`` argument of the template.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from tritonmm.chat_wire import WireMessage
from tritonmm.contract import CHAT_TOOLS
from tritonmm.tool_calls import ToolCall, ToolCallFamily, mistral_call_id
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.chat.media import DecodedMedia

__all__ = ["DOCUMENT_MARKER", "VIDEO_MARKER", "Conversation", "parse_tools"]

VIDEO_MARKER = "Video frames:"
DOCUMENT_MARKER = "Document pages:"
_ZERO_WIDTH_SPACE = "\u200b"
_EMPTY_PARAMETERS = {"type": "object", "properties": {}}


class Conversation:
    """How one checkpoint's template takes messages: its control tokens and its tool-call family."""

    def __init__(
        self, tokenizer: Any, chat_template: str, family: ToolCallFamily | None, string_arguments: bool
    ) -> None:
        self._control_tokens = _control_token_pattern(tokenizer, chat_template)
        self._family = family
        self._string_arguments = string_arguments

    def messages(self, messages: Sequence[WireMessage], media: DecodedMedia) -> list[dict[str, Any]]:
        """The template's messages for the wire ``messages`` (whose media ``media`` holds decoded)."""
        converted = [self._message(m, media) for m in messages]
        if self._family is ToolCallFamily.LLAMA3:
            converted = _one_call_per_turn(converted)
        return converted

    def defuse(self, text: str) -> str:
        """Break control tokens written in message text, so they stay text.

        Without this, a user could write "<image>" (breaking the placeholder
        count) or an end-of-turn token (faking a turn). transformers' own
        ``sanitize_control_tokens`` does this job but fails with Idefics3's
        processor in 5.23, hence a zero-width space after the first character.
        """
        if self._control_tokens is None:
            return text
        return self._control_tokens.sub(lambda m: m[0][0] + _ZERO_WIDTH_SPACE + m[0][1:], text)

    def _message(self, message: WireMessage, media: DecodedMedia) -> dict[str, Any]:
        if message.role == "tool":
            # Tool results are text; Llama 3's template JSON-encodes anything that is not a string.
            text = "".join(self.defuse(p.text) for p in message.parts if p.kind == "text")
            return {
                "role": "tool",
                "tool_call_id": self._call_id(message.tool_call_id),
                "name": message.name,
                "content": text,
            }
        converted: dict[str, Any] = {"role": message.role, "content": self._content(message, media)}
        if message.tool_calls:  # only then: templates test the key's presence ('tool_calls' in message)
            converted["tool_calls"] = [self._call(call) for call in message.tool_calls]
        return converted

    def _content(self, message: WireMessage, media: DecodedMedia) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if part.kind == "text":
                content.append({"type": "text", "text": self.defuse(part.text)})
            elif part.kind == "image":
                content.append({"type": "image", "image": media.images[part.index]})
            elif part.kind == "audio":
                # Decoded already, at the extractor's rate: apply_chat_template passes arrays through.
                content.append({"type": "audio", "audio": media.audios[part.index]})
            else:
                frames = media.videos[part.index] if part.kind == "video" else media.documents[part.index]
                content.append({"type": "text", "text": VIDEO_MARKER if part.kind == "video" else DOCUMENT_MARKER})
                content.extend({"type": "image", "image": frame} for frame in frames)
        return content

    def _call(self, call: ToolCall) -> dict[str, Any]:
        arguments = call.arguments_json if self._string_arguments else json.loads(call.arguments_json)
        return {
            "id": self._call_id(call.id),
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        }

    def _call_id(self, call_id: str) -> str:
        return mistral_call_id(call_id) if self._family is ToolCallFamily.MISTRAL else call_id


def _one_call_per_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An assistant turn with several calls and the results after it, as one turn and result per call.

    Results are matched to calls by id (in the order of the calls); a result that
    matches no call keeps its place after them.
    """
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        calls = message.get("tool_calls") or []
        i += 1
        if message["role"] != "assistant" or len(calls) < 2:
            out.append(message)
            continue
        results = []
        while i < len(messages) and messages[i]["role"] == "tool":
            results.append(messages[i])
            i += 1
        for n, call in enumerate(calls):
            out.append({**message, "content": message["content"] if n == 0 else [], "tool_calls": [call]})
            match = next((r for r in results if r["tool_call_id"] == call["id"]), None)
            if match is not None:
                results.remove(match)
                out.append(match)
        out.extend(results)
    return out


def parse_tools(raw: str | bytes | None) -> list[dict[str, Any]]:
    """``TOOLS_JSON`` as the template's ``tools``: ``[{"type": "function", "function": {...}}]``; [] when absent.

    An empty parameter schema becomes an object with no properties (the form templates
    and models expect). Raises InputError naming the tool that is malformed.
    """
    if raw is None or (isinstance(raw, bytes | str) and not raw.strip()):
        return []
    try:
        tools = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{CHAT_TOOLS.name} is not valid JSON: {exc}") from None
    if not isinstance(tools, list):
        raise InputError(f"{CHAT_TOOLS.name} must be a JSON list of tools")
    parsed = []
    for n, tool in enumerate(tools, 1):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{CHAT_TOOLS.name}: tool {n} needs a non-empty 'name'")
        description, parameters = tool.get("description") or "", tool.get("parameters") or _EMPTY_PARAMETERS
        if not isinstance(description, str) or not isinstance(parameters, dict):
            raise InputError(
                f"{CHAT_TOOLS.name}: tool {name!r} needs a string 'description' and an object 'parameters'"
            )
        function = {"name": name, "description": description, "parameters": parameters}
        parsed.append({"type": "function", "function": function})
    names = [t["function"]["name"] for t in parsed]
    if len(set(names)) < len(names):
        raise InputError(f"{CHAT_TOOLS.name}: two tools have the same name; each needs its own")
    return parsed


def _control_token_pattern(tokenizer: Any, chat_template: str) -> re.Pattern | None:
    """Special tokens, plus added tokens the template writes itself (as transformers defines control tokens)."""
    tokens = {
        t.content
        for t in tokenizer.added_tokens_decoder.values()
        if len(t.content) > 1 and (t.special or (t.content in chat_template and not t.content.isspace()))
    }
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
