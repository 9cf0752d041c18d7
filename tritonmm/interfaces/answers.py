"""A backend's responses turned into what Dify shows: text deltas, then the outcome.

Each interface answers in its own way and :class:`AnswerReader` evens them out:

* the text of a response is new text (vLLM; the TensorRT-LLM ensemble, which decodes
  each step's tokens alone) or, with ``cumulative``, the whole text so far (TensorRT-LLM's
  BLS with ``accumulate_tokens``): only what is new is passed on, and a trailing U+FFFD
  (a character whose bytes have not all come yet, which the next decode completes) waits
  for the next response;
* a prompt echo (a blocking answer from a model without ``exclude_input_in_output``)
  is cut off;
* stop sequences end the answer here whatever the backend did with them (vLLM leaves
  them out, TensorRT-LLM's ``stop_words`` keep them in): text that may be the start
  of one is held back until it is not, and the caller closes the stream on a stop;
* token counts, when the model returns them, are per response (``num_output_tokens``
  is the tokens of that response, so they are summed); the prompt count repeats;
* the finish reason is the model's own (vLLM's ``finish_reason``) or, for TensorRT-LLM,
  ``length`` when the answer used every token it was allowed.

Outputs come as the gRPC stream decodes them (lists, bytes) or as the generate
endpoint's JSON (strings, numbers, lists); both are read alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tritonmm.contract import FINISH_LENGTH, FINISH_STOP
from tritonmm.interfaces.recognise import ModelInterface


class StopFilter:
    """Cuts the text at the first stop sequence; holds back what may still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        text = self._held + text
        found = [i for i in (text.find(stop) for stop in self._stops) if i >= 0]
        if found:
            self.hit = True
            self._held = ""
            return text[: min(found)]
        keep = max((self._prefix_at_end(text, stop) for stop in self._stops), default=0)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.hit else held

    @staticmethod
    def _prefix_at_end(text: str, stop: str) -> int:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                return size
        return 0


class AnswerReader:
    """The responses of one request: ``feed`` each one's outputs, then read the outcome."""

    def __init__(
        self, iface: ModelInterface, *, stops: Sequence[str], max_tokens: int | None, prompt: str, echo: bool
    ) -> None:
        self._iface = iface
        self._stops = StopFilter(stops)
        self._max_tokens = max_tokens
        self._prompt = prompt if echo else ""
        self._total = ""  # cumulative models: the whole text so far
        self._shown = ""  # cumulative models: what of it was passed on
        self._first = True
        self._reason = ""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.counts_known = False

    @property
    def stopped(self) -> bool:
        """A stop sequence came: the caller should end the request."""
        return self._stops.hit

    def feed(self, outputs: Mapping[str, Any]) -> str:
        """This response's new text that is safe to show ("" if none)."""
        self._counts(outputs)
        reason = _text(outputs.get("finish_reason"))
        if reason and reason != "None":  # vLLM writes str(None) on responses that are not the last
            self._reason = reason
        raw = outputs.get(self._iface.text_output)
        if raw is None:
            return ""
        text = _text(raw)
        if self._iface.cumulative:
            self._total = text
            stable = text.rstrip("\ufffd")
            text = stable[len(self._shown) :] if len(stable) > len(self._shown) else ""
            self._shown += text
        if self._first and self._prompt and text.startswith(self._prompt):
            text = text[len(self._prompt) :]
        self._first = False
        return self._stops.feed(text)

    def finish(self) -> str:
        """The text still held back."""
        rest = ""
        if self._iface.cumulative and self._total.startswith(self._shown):
            rest = self._stops.feed(self._total[len(self._shown) :])
        return rest + self._stops.flush()

    @property
    def finish_reason(self) -> str:
        if self._reason == FINISH_LENGTH:
            return FINISH_LENGTH
        if self._reason or self.stopped:
            return FINISH_STOP
        if self._max_tokens and self.counts_known and self.completion_tokens >= self._max_tokens:
            return FINISH_LENGTH
        return FINISH_STOP

    def _counts(self, outputs: Mapping[str, Any]) -> None:
        prompt = _number(outputs.get("num_input_tokens"))
        if prompt is not None:
            self.prompt_tokens = max(self.prompt_tokens, prompt)
            self.counts_known = True
        completion = _number(outputs.get("num_output_tokens"))
        if completion is not None:
            self.completion_tokens += completion
            self.counts_known = True


def _first(value: Any) -> Any:
    while isinstance(value, (list, tuple)):
        if not value:
            return None
        value = value[0]
    return value


def _text(value: Any) -> str:
    value = _first(value)
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _number(value: Any) -> int | None:
    value = _first(value)
    if value is None or isinstance(value, (bytes, str)) and not str(value).strip().isdigit():
        return None
    return int(value)
