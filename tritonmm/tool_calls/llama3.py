"""The Llama 3.1 / 3.2 / 3.3 JSON tool calls.

Meta's templates ask for ``{"name": function name, "parameters": {…}}`` as the whole
reply; the model may put ``<|python_tag|>`` first (then text may come before it), and
writes several calls separated by ``;``::

    <|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {}}

``"arguments"`` is accepted in place of ``"parameters"`` (the models write both). The
section runs to the end of the output: Llama ends a call turn with ``<|eom_id|>`` or
``<|eot_id|>``, never with text. (The built-in tools' ``name.call(…)`` syntax is not
JSON and is returned as text.)
"""

from __future__ import annotations

from tritonmm.tool_calls.calls import CallFormat, MalformedCall, RawCall, ToolCallFamily, decode_json

PYTHON_TAG = "<|python_tag|>"
SEPARATOR = ";"


def parse_section(body: str) -> list[RawCall]:
    """Every call of a section: JSON objects separated by ``;``."""
    calls: list[RawCall] = []
    pos = 0
    while True:
        call, pos = decode_json(body, pos)
        if not isinstance(call, dict):
            raise MalformedCall("the tool call is not a JSON object")
        arguments = call["parameters"] if "parameters" in call else call.get("arguments")
        calls.append((call.get("name"), arguments))
        rest = body[pos:].lstrip()
        if not rest:
            return calls
        if not rest.startswith(SEPARATOR):
            raise MalformedCall("text follows a call's JSON")
        pos = len(body) - len(rest) + len(SEPARATOR)


FORMAT = CallFormat(
    family=ToolCallFamily.LLAMA3,
    openers=(PYTHON_TAG,),
    closer=None,
    opens_with_json=True,
    parse=parse_section,
)
