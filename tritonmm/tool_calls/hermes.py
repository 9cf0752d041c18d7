"""The ``<tool_call>`` family: Qwen2.5 and Qwen3 (and the VL models that use their templates), Hermes 2 Pro.

Each call is its own block, and a turn may hold several, with text before them::

    Let me check.
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>
    <tool_call>
    {"name": "get_time", "arguments": {}}
    </tool_call>

A block the generation cut off before ``</tool_call>`` still counts when its JSON is
complete (the stream's end closes it).
"""

from __future__ import annotations

from tritonmm.tool_calls.calls import CallFormat, MalformedCall, RawCall, ToolCallFamily, decode_json, require_end

OPENER = "<tool_call>"
CLOSER = "</tool_call>"


def parse_block(body: str) -> list[RawCall]:
    """The one call between ``<tool_call>`` and ``</tool_call>``."""
    call, end = decode_json(body)
    require_end(body, end)
    if not isinstance(call, dict):
        raise MalformedCall("the tool call is not a JSON object")
    return [(call.get("name"), call.get("arguments"))]


FORMAT = CallFormat(
    family=ToolCallFamily.HERMES,
    openers=(OPENER,),
    closer=CLOSER,
    opens_with_json=False,
    parse=parse_block,
)
