"""The Mistral / Pixtral ``[TOOL_CALLS]`` family, in both of its layouts.

Tokenizers up to v7 (Mistral-7B-Instruct-v0.3, Mistral Nemo, Pixtral, Mistral Small 3.1)
write one JSON list after the token::

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]

Tokenizers v11 and later (Mistral Small 3.2 and newer) write each call after its own
token, the arguments after ``[ARGS]`` (v11 may put ``[CALL_ID]id`` before it)::

    [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}

Text may come before the first ``[TOOL_CALLS]``; the section runs to the end of the
output. Decoding must keep these tokens: they are special tokens of the tokenizer.
"""

from __future__ import annotations

import hashlib
import re

from tritonmm.tool_calls.calls import (
    CallFormat,
    MalformedCall,
    RawCall,
    ToolCallFamily,
    decode_json,
    require_end,
)

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
_ID_LENGTH = 9  # Mistral's templates refuse other call ids
_JSON_LIST = re.compile(r"\s*\[\s*[{\]]")  # "[{" or "[]", not a "[ARGS]" token


def parse_section(body: str) -> list[RawCall]:
    """Every call after the first ``[TOOL_CALLS]``, in either layout."""
    if _JSON_LIST.match(body):
        return _parse_list(body)
    return [_parse_named(piece) for piece in body.split(TOOL_CALLS)]


def _parse_list(body: str) -> list[RawCall]:
    calls, end = decode_json(body)
    require_end(body, end)
    if not isinstance(calls, list) or not calls:
        raise MalformedCall("the tool calls are not a non-empty JSON list")
    if not all(isinstance(call, dict) for call in calls):
        raise MalformedCall("a tool call in the list is not a JSON object")
    return [(call.get("name"), call.get("arguments")) for call in calls]


def _parse_named(piece: str) -> RawCall:
    """``name[CALL_ID]id[ARGS]{…}``; without ``[ARGS]`` (dropped by a decoder) the name ends at ``{``."""
    if ARGS in piece:
        head, arguments = piece.split(ARGS, 1)
    else:
        brace = piece.find("{")
        if brace < 0:
            raise MalformedCall("the tool call has no arguments")
        head, arguments = piece[:brace], piece[brace:]
    name = head.split(CALL_ID, 1)[0].strip()
    value, end = decode_json(arguments)
    require_end(arguments, end)
    return name, value


def mistral_call_id(call_id: str) -> str:
    """``call_id`` as Mistral's templates accept it: 9 letters or digits, the same for the same id.

    Their templates raise on any other id, so a history rendered through them needs
    this for both the assistant's ``tool_calls[].id`` and the tool message's ``tool_call_id``.
    """
    if len(call_id) == _ID_LENGTH and call_id.isascii() and call_id.isalnum():
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:_ID_LENGTH]


FORMAT = CallFormat(
    family=ToolCallFamily.MISTRAL,
    openers=(TOOL_CALLS,),
    closer=None,
    opens_with_json=False,
    parse=parse_section,
)
