"""Sampling and token streaming around ``model.generate``.

``generate`` offers neither a per-request RNG (threads share the global one) nor
a per-token hook that can stop before the next forward pass; these classes add
both, so that a seed reproduces under concurrent requests and stop sequences
and cancellation cost no extra forward pass.
"""

from __future__ import annotations

import math
import queue
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from transformers import BatchFeature, LogitsProcessor, StoppingCriteria

from tritonmm.contract import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP
from tritonmm_server.engines.chat.generator import Generator
from tritonmm_server.engines.chat.params import GenerationParams


class Sampler(LogitsProcessor):
    """Sampling inside greedy search, with a per-request RNG.

    ``generate(do_sample=True)`` draws from the global torch RNG, which requests
    running in parallel threads share, so a seed would not reproduce anything.
    This processor samples the token itself with its own ``torch.Generator`` and
    leaves only that token finite, so that greedy search picks it.
    """

    def __init__(self, params: GenerationParams) -> None:
        self._temperature = params.temperature
        self._top_k = params.top_k
        self._top_p = params.top_p
        self._seed = params.seed if params.seed is not None else secrets.randbits(64)
        self._rng: torch.Generator | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._temperature == 0:
            return scores
        if self._rng is None:
            self._rng = torch.Generator(device=scores.device).manual_seed(self._seed)
        logits = scores.float() / self._temperature
        if self._top_k:
            kth = torch.topk(logits, min(self._top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if self._top_p < 1:
            logits = _top_p_filter(logits, self._top_p)
        token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=self._rng)
        return torch.full_like(scores, -math.inf).scatter_(-1, token, 0.0)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    # Drop a token when the ones ranked above it already reach top_p; the best one always stays.
    drop = (probs.cumsum(dim=-1) - probs) >= top_p
    return logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)


class TokenText:
    """Turns generated token ids into per-token text and decides stop and length.

    Decoding is incremental over a two-token window (as in text-generation-inference):
    a token that ends inside a multi-byte character gives "" until the character
    is complete, and tokenizers that drop a leading space at the start of a decode
    still give the right text. Text that might be the start of a stop sequence is
    held back until it is known not to be.

    Special tokens are dropped from the text, unless ``hidden_ids`` is given: then
    exactly those ids are dropped, so that the special tokens some tool-call
    families write their calls with (``<|python_tag|>``, ``[TOOL_CALLS]``) reach the parser.
    """

    def __init__(
        self,
        tokenizer: Any,
        eos_ids: frozenset[int],
        stop: tuple[str, ...],
        max_new: int,
        hidden_ids: frozenset[int] | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._hidden_ids = hidden_ids
        self._eos_ids = eos_ids
        self._stop = stop
        self._max_new = max_new
        self._ids: list[int] = []
        self._prefix = 0  # window start: _ids[_prefix:_read] is already-emitted context
        self._read = 0
        self._held = ""
        self.count = 0
        self.finish_reason: str | None = None

    def push(self, token_id: int) -> str:
        """The text token ``token_id`` adds; sets ``finish_reason`` when it ends generation."""
        self.count += 1
        if token_id in self._eos_ids:
            self.finish_reason = FINISH_STOP
            return self._flush()
        self._ids.append(token_id)
        text = self._held + self._decode_new()
        cut = min((i for i in (text.find(stop) for stop in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.finish_reason = FINISH_STOP
            return text[:cut]  # the stop sequence and anything after it are dropped
        keep = _stop_prefix_len(text, self._stop)
        self._held = text[len(text) - keep :]
        emitted = text[: len(text) - keep]
        if self.count >= self._max_new:
            self.finish_reason = FINISH_LENGTH
            return emitted + self._flush()
        return emitted

    def _decode(self, ids: list[int]) -> str:
        if self._hidden_ids is None:
            return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        shown = [i for i in ids if i not in self._hidden_ids]
        return self._tokenizer.decode(shown, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _decode_new(self) -> str:
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def _flush(self) -> str:
        """Everything still held back, incomplete characters included: generation is over."""
        tail = self._decode(self._ids[self._prefix :])[len(self._decode(self._ids[self._prefix : self._read])) :]
        self._prefix = self._read = len(self._ids)
        text, self._held = self._held + tail, ""
        return text


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of a stop sequence."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


END = object()


def drain(out: queue.SimpleQueue) -> Iterator[str]:
    """The texts a generating thread puts on ``out`` until END; an exception put there is raised here."""
    while (item := out.get()) is not END:
        if isinstance(item, BaseException):
            raise item
        yield item


class Relay(StoppingCriteria):
    """Hands each new token's text to the consumer and decides when to stop.

    A stopping criterion rather than a ``BaseStreamer``: it is the one hook that
    ``generate`` calls after every token and before the next forward pass (since
    transformers 5 the criteria even run before ``streamer.put``), so stop
    sequences and cancellation cost no extra forward pass.
    """

    def __init__(
        self,
        text: TokenText,
        prompt_tokens: int,
        out: queue.SimpleQueue,
        is_cancelled: Callable[[], bool],
        abort: threading.Event,
    ) -> None:
        self._text = text
        self._prompt_tokens = prompt_tokens
        self._out = out
        self._is_cancelled = is_cancelled
        self._abort = abort
        self.cancelled = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        new_ids = input_ids[0, self._prompt_tokens + self._text.count :].tolist()
        for token_id in new_ids:
            if self._text.finish_reason is not None:
                break
            self._out.put(self._text.push(token_id))
        if self._text.finish_reason is None and (self._abort.is_set() or self._is_cancelled()):
            self.cancelled = True
        stop = self._text.finish_reason is not None or self.cancelled
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class Generation:
    """One generation. Iterate it (once) for the text of each generated token.

    Once iteration is over, ``finish_reason`` (FINISH_STOP, FINISH_LENGTH or
    FINISH_CANCELLED), ``prompt_tokens`` and ``completion_tokens`` are set. An
    exception raised while generating is re-raised by the iterator. Leaving the
    loop early stops the worker thread after its current token.
    """

    def __init__(
        self,
        generator: Generator,
        inputs: BatchFeature,
        prompt_tokens: int,
        params: GenerationParams,
        is_cancelled: Callable[[], bool],
        *,
        constraint: LogitsProcessor | None = None,
        hidden_ids: frozenset[int] | None = None,
    ) -> None:
        self._generator = generator
        self._inputs = inputs
        self._params = params
        self._constraint = constraint  # structured output: masks the scores before the sampler
        self._hidden_ids = hidden_ids  # TokenText's: special tokens dropped from the text
        self._is_cancelled = is_cancelled
        self._abort = threading.Event()
        self._started = False
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def close(self) -> None:
        """Stop generating at the next token boundary (the consumer went away)."""
        self._abort.set()

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        max_new = min(self._params.max_tokens, self._generator.context_size - self.prompt_tokens)
        if max_new <= 0:
            self.finish_reason = FINISH_LENGTH
            return
        if self._is_cancelled():
            self.finish_reason = FINISH_CANCELLED
            return
        yield from self._stream(max_new)

    def _stream(self, max_new: int) -> Iterator[str]:
        generator = self._generator
        text = TokenText(generator.tokenizer, generator.eos_token_ids, self._params.stop, max_new, self._hidden_ids)
        out: queue.SimpleQueue = queue.SimpleQueue()
        relay = Relay(text, self.prompt_tokens, out, self._is_cancelled, self._abort)
        worker = threading.Thread(
            target=self._work, args=(max_new, Sampler(self._params), relay, out), name="chat-generate", daemon=True
        )
        worker.start()
        try:
            for item in drain(out):
                self.completion_tokens += 1
                yield item
        finally:
            self._abort.set()  # a no-op unless the consumer left early
        worker.join()
        if text.finish_reason is not None:
            self.finish_reason = text.finish_reason
        elif relay.cancelled:
            self.finish_reason = FINISH_CANCELLED
        else:  # generate stopped on a criterion of its own
            self.finish_reason = FINISH_LENGTH if text.count >= max_new else FINISH_STOP

    def _work(self, max_new: int, sampler: Sampler, relay: Relay, out: queue.SimpleQueue) -> None:
        """The worker thread: the generation step, its tokens reaching ``out`` through ``relay``, then END."""
        try:
            self._generator.run(self._inputs, max_new, sampler, relay, constraint=self._constraint)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put(exc)
        finally:
            out.put(END)
