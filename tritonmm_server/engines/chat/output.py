"""What a generation shows the user, and the tool calls it made.

:class:`ChatOutput` wraps a generation (``token_stream.Generation`` or
``batching.BatchedGeneration``): iterating it gives the text that is safe to show,
piece by piece; afterwards ``tool_calls`` holds the calls the model made and
``finish_reason`` says ``tool_calls`` when there are any.

* With tools offered, every piece goes through the family's streaming filter
  (:class:`tritonmm.tool_calls.ToolCallStream`): call markup never comes out as text,
  and a malformed call comes out as the text the model wrote, with a warning.
  The filter sees the text after stop sequences are handled (the generation's own).
* A template that opens the reasoning block in the prompt itself (the generation
  prompt ends with ``<think>``) leaves the model writing only its end; the output then
  starts with the opener, so that Dify sees ``<think>`` … ``</think>`` at the start of
  the content, the form it renders as thinking.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tritonmm.contract import FINISH_CANCELLED, FINISH_TOOL_CALLS
from tritonmm.tool_calls import ToolCall, ToolCallFamily, ToolCallStream

__all__ = ["THINK_OPENER", "ChatOutput"]

THINK_OPENER = "<think>"


class ChatOutput:
    """A generation as the user reads it. ``tool_names``: the tools offered (None: no tools, no filter)."""

    def __init__(
        self,
        generation: Any,
        *,
        family: ToolCallFamily | None = None,
        tool_names: Iterable[str] | None = None,
        opens_thinking: bool = False,
    ) -> None:
        self._generation = generation
        self._stream = ToolCallStream(family, tool_names) if family is not None and tool_names is not None else None
        self._opens_thinking = opens_thinking
        self.tool_calls: tuple[ToolCall, ...] = ()

    @property
    def prompt_tokens(self) -> int:
        return self._generation.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self._generation.completion_tokens

    @property
    def finish_reason(self) -> str | None:
        reason = self._generation.finish_reason
        return FINISH_TOOL_CALLS if self.tool_calls and reason != FINISH_CANCELLED else reason

    def close(self) -> None:
        self._generation.close()

    def __iter__(self) -> Iterator[str]:
        if self._opens_thinking:
            yield THINK_OPENER + "\n"
        if self._stream is None:
            yield from self._generation  # one piece per token, "" included
            return
        for piece in self._generation:
            text = self._stream.feed(piece)
            if text:
                yield text
        end = self._stream.finish()
        self.tool_calls = end.calls
        if end.text:
            yield end.text
