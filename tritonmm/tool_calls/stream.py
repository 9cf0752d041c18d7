"""Split generated text into what the user reads and the tool calls, as it streams.

:class:`ToolCallStream` is fed the text deltas of one generation (token by token, or
in any chunks) and returns at once the text that is safe to show. It holds back only
what may still turn into call markup: a suffix that could be the start of an opener
(``<tool_c``), whitespace that would touch a call, a whole call section. Markup of a
valid call never comes out as text, and neither does the whitespace around it.

A section that is not a valid call (broken JSON, no name, a function that is not one
of the tools offered, text after the call's JSON) comes out as plain text, exactly as
the model wrote it, with a warning in the log: never an exception, never half a call.
For the hermes family each ``<tool_call>`` block stands alone; for llama3 and mistral
the section holds all the calls of the turn and is taken or refused whole.

:func:`parse_tool_calls` is the same on a whole text, so a client that receives the
raw text of another backend splits it exactly as the server splits its stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tritonmm.tool_calls import hermes, llama3, mistral
from tritonmm.tool_calls.calls import (
    CallFormat,
    MalformedCall,
    ParsedOutput,
    ToolCall,
    ToolCallFamily,
    new_call_id,
    validate_call,
)

LOG = logging.getLogger(__name__)

FORMATS: dict[ToolCallFamily, CallFormat] = {f.family: f for f in (hermes.FORMAT, llama3.FORMAT, mistral.FORMAT)}


@dataclass(frozen=True)
class StreamEnd:
    """What :meth:`ToolCallStream.finish` returns.

    ``text``: the text still to show (held back until now); ``calls``: every call of the
    turn, in order; ``content``: the whole text shown, ``text`` included.
    """

    text: str
    calls: tuple[ToolCall, ...]
    content: str


def call_format(family: ToolCallFamily | str) -> CallFormat:
    """The markup of ``family``; ValueError naming the known families for anything else."""
    try:
        return FORMATS[ToolCallFamily(family)]
    except ValueError:
        known = ", ".join(f.value for f in ToolCallFamily)
        raise ValueError(f"unknown tool-call family {family!r}; known: {known}") from None


class ToolCallStream:
    """The tool calls of one generation, split from its text as it streams.

    ``tool_names``: the functions offered (a call of any other is text); ``None``
    accepts any name. ``new_id`` makes the call ids.
    """

    def __init__(
        self,
        family: ToolCallFamily | str,
        tool_names: Iterable[str] | None = None,
        *,
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        self._format = call_format(family)
        self._tool_names = None if tool_names is None else frozenset(tool_names)
        self._new_id = new_id
        self._pending = ""  # text fed and not yet shown or put in a section
        self._section: str | None = None  # the markup so far, opener included; None outside a section
        self._body_from = 0  # where the section's body starts (after the opener)
        self._space_before = ""  # the whitespace between the text and the section
        self._after_call = False  # drop the whitespace that follows a call
        self._at_start = True  # nothing but whitespace seen yet (Llama 3's bare "{" counts only here)
        self._calls: list[ToolCall] = []
        self._shown: list[str] = []
        self._finished = False

    @property
    def family(self) -> ToolCallFamily:
        return self._format.family

    def feed(self, delta: str) -> str:
        """Take the next text delta; return the text that is safe to show now (maybe "")."""
        if self._finished:
            raise RuntimeError("ToolCallStream.feed after finish")
        self._pending += delta
        return self._advance(final=False)

    def finish(self) -> StreamEnd:
        """End of generation: release what was held back and return the calls."""
        if self._finished:
            raise RuntimeError("ToolCallStream.finish called twice")
        text = self._advance(final=True)
        self._finished = True
        return StreamEnd(text=text, calls=tuple(self._calls), content="".join(self._shown))

    # -- internals --

    def _advance(self, final: bool) -> str:
        out: list[str] = []
        while self._scan_section(out, final) if self._section is not None else self._scan_text(out, final):
            pass
        text = "".join(out)
        self._shown.append(text)
        return text

    def _scan_text(self, out: list[str], final: bool) -> bool:
        """Show the text up to the next section; True when a section starts."""
        text = self._pending
        if self._after_call:
            text = text.lstrip()
            if not text:
                self._pending = ""
                return False
            self._after_call = False
        start, opener = self._find_opener(text)
        if start >= 0:
            before = text[:start]
            kept = before.rstrip()
            self._show(out, kept)
            self._space_before = before[len(kept) :]
            self._section = opener
            self._body_from = len(opener)
            self._pending = text[start + len(opener) :]
            return True
        held = 0 if final else self._held_back(text)
        self._show(out, text[: len(text) - held])
        self._pending = text[len(text) - held :]
        return False

    def _scan_section(self, out: list[str], final: bool) -> bool:
        """Collect the section; True when it closed and text follows."""
        assert self._section is not None
        self._section += self._pending
        self._pending = ""
        closer = self._format.closer
        if closer is not None:
            end = self._section.find(closer, self._body_from)
            if end >= 0:
                self._pending = self._section[end + len(closer) :]
                self._close(out, self._section[: end + len(closer)], self._section[self._body_from : end])
                return True
        if final:
            # A hermes block cut off before its closer still counts if its JSON is whole.
            self._close(out, self._section, self._section[self._body_from :])
        return False

    def _close(self, out: list[str], raw: str, body: str) -> None:
        try:
            named = [validate_call(name, args, self._tool_names) for name, args in self._format.parse(body)]
        except MalformedCall as exc:
            LOG.warning("a %s tool call from the model is malformed (%s): returned as text", self.family.value, exc)
            self._show(out, self._space_before + raw)
        else:
            self._calls.extend(ToolCall(self._new_id(), name, arguments) for name, arguments in named)
            self._after_call = True
        self._section = None
        self._space_before = ""

    def _find_opener(self, text: str) -> tuple[int, str]:
        """The first opener in ``text`` (index, opener); (-1, "") when there is none."""
        found = [(i, opener) for opener in self._format.openers if (i := text.find(opener)) >= 0]
        if self._format.opens_with_json and self._at_start:
            stripped = text.lstrip()
            if stripped.startswith("{"):
                found.append((len(text) - len(stripped), ""))
        return min(found, default=(-1, ""))

    def _held_back(self, text: str) -> int:
        """How many trailing characters may still become markup or touch it."""
        held = 0
        for opener in self._format.openers:
            for size in range(min(len(opener) - 1, len(text)), 0, -1):
                if text.endswith(opener[:size]):
                    held = max(held, size)
                    break
        shown = text[: len(text) - held]
        held += len(shown) - len(shown.rstrip())
        if self._format.opens_with_json and self._at_start and not text[: len(text) - held].strip():
            held = len(text)  # only whitespace yet: a "{" may follow
        return held

    def _show(self, out: list[str], text: str) -> None:
        if text:
            out.append(text)
            if not text.isspace():
                self._at_start = False


def parse_tool_calls(text: str, family: ToolCallFamily | str, tool_names: Iterable[str] | None = None) -> ParsedOutput:
    """The content and the calls of a whole generated ``text`` (as :class:`ToolCallStream` splits it)."""
    stream = ToolCallStream(family, tool_names)
    stream.feed(text)
    end = stream.finish()
    return ParsedOutput(content=end.content, calls=end.calls)
