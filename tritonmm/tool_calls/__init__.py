"""Tool calls in generated text: one parser per template family, streamed or whole.

* :func:`detect_tool_support` reads a chat template: does it render tools, and which
  family's markup does it write (:class:`ToolCallFamily`: hermes, llama3, mistral)?
* :class:`ToolCallStream` splits a generation into safe text deltas and
  :class:`ToolCall` objects as it streams; :func:`parse_tool_calls` does the same on
  a whole text.
* :func:`mistral_call_id` turns any call id into one Mistral's templates accept.

Pure Python (no torch, no Jinja): the server parses its own streams with it, and the
plugin can parse the raw text of backends that return it.
"""

from tritonmm.tool_calls.calls import MalformedCall, ParsedOutput, ToolCall, ToolCallFamily, new_call_id
from tritonmm.tool_calls.detect import TemplateToolSupport, detect_tool_support
from tritonmm.tool_calls.mistral import mistral_call_id
from tritonmm.tool_calls.stream import StreamEnd, ToolCallStream, call_format, parse_tool_calls

__all__ = [
    "MalformedCall",
    "ParsedOutput",
    "StreamEnd",
    "TemplateToolSupport",
    "ToolCall",
    "ToolCallFamily",
    "ToolCallStream",
    "call_format",
    "detect_tool_support",
    "mistral_call_id",
    "new_call_id",
    "parse_tool_calls",
]
