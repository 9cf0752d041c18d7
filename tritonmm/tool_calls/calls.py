"""What every tool-call family shares: the parsed call, the section grammar, validation.

A family's parser turns the text of one tool-call section (the markup between its
opener and closer, or to the end of the output) into raw ``(name, arguments)`` pairs
and raises :class:`MalformedCall` when it cannot. :func:`validate_call` then holds
every family to the same rules, so that a call is either whole and valid or not a
call at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

RawCall = tuple[Any, Any]  # (name, arguments) as the model wrote them, before validation
_NAME_SHOWN = 64  # characters of an unknown function name quoted in a warning


class ToolCallFamily(StrEnum):
    """How a template family writes tool calls in the generated text."""

    HERMES = "hermes"  # <tool_call>{"name": …, "arguments": {…}}</tool_call>, one block per call
    LLAMA3 = "llama3"  # {"name": …, "parameters": {…}} as the message, after <|python_tag|> or ";"-separated
    MISTRAL = "mistral"  # [TOOL_CALLS][{…}, …] (tokenizers up to v7) or [TOOL_CALLS]name[ARGS]{…} (v11 and later)


class MalformedCall(ValueError):
    """The model's tool-call markup is not a valid call; ``str(e)`` says why (no model text in it)."""


@dataclass(frozen=True)
class ToolCall:
    """One call the model made: ``arguments_json`` is always the JSON text of an object."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class ParsedOutput:
    """A whole generated text split into what the user reads and the calls the model made."""

    content: str
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class CallFormat:
    """The markup of one family, as the streaming filter needs it.

    ``openers`` open a call section anywhere in the text; ``closer`` ends it (``None``:
    the section runs to the end of the output). ``opens_with_json``: an output whose
    first non-space character is ``{`` is a call section too (Llama 3 writes the call
    as the whole message). ``parse`` gets the section's body, openers and closer cut off.
    """

    family: ToolCallFamily
    openers: tuple[str, ...]
    closer: str | None
    opens_with_json: bool
    parse: Callable[[str], list[RawCall]]


def new_call_id() -> str:
    """A fresh call id, ``call_`` and 24 hex digits (the OpenAI shape Dify passes back)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def validate_call(name: Any, arguments: Any, tool_names: frozenset[str] | None) -> tuple[str, str]:
    """``(name, arguments_json)`` of a valid call; :class:`MalformedCall` otherwise.

    A missing ``arguments`` means a call without arguments (``{}``); arguments written
    as a JSON string are accepted when the string holds an object. With ``tool_names``
    the name must be one of them.
    """
    if not isinstance(name, str) or not name:
        raise MalformedCall("the call has no function name")
    if tool_names is not None and name not in tool_names:
        raise MalformedCall(f"the model called {name[:_NAME_SHOWN]!r}, which is not one of the tools offered")
    if arguments is None:
        arguments = {}
    elif isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            raise MalformedCall(f"the arguments of {name!r} are a string that is not JSON") from None
    if not isinstance(arguments, dict):
        raise MalformedCall(f"the arguments of {name!r} are not a JSON object")
    return name, json.dumps(arguments, ensure_ascii=False)


def decode_json(text: str, start: int = 0) -> tuple[Any, int]:
    """The JSON value at ``text[start:]`` (leading whitespace skipped) and the index after it."""
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        return json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise MalformedCall(f"the call is not valid JSON: {exc.msg} (character {exc.pos - start})") from None


def require_end(text: str, end: int) -> None:
    """Only whitespace may follow a call's JSON."""
    if text[end:].strip():
        raise MalformedCall("text follows the call's JSON")
