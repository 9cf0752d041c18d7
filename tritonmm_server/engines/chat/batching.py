"""Iteration-level batching: concurrent requests share every decoding step.

One scheduler thread per chat engine runs the loop that serving engines (vLLM,
TGI, TensorRT-LLM) run:

1. admit waiting requests while the batch has room (``max_sequences``) and the
   key/value cache stays within its budget: each is prefilled alone (its images,
   video frames and audio go through the full multimodal forward pass) and
   its first token is sampled;
2. run ONE forward pass for every active sequence (one new token each);
3. hand each sequence its token; a sequence that is finished, cancelled or
   closed by its consumer leaves the batch at once, and the next waiting request
   takes its place at the next step.

Sampling stays per request inside the batch: each sequence has its own
temperature, top-p, top-k, seed (its own RNG), stop sequences and token limit,
so a seeded or greedy request gives the same tokens alone and in a batch.
A request whose prefill fails fails alone; a waiting line longer than
``max_waiting`` is refused at once with :class:`Busy` (never an unbounded pile).

Why not transformers' own continuous batching (``init_continuous_batching``):
it takes token ids only (no pixel values or audio features for the prefill), and
has no per-request seed, stop-sequence or grammar hook.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from tritonmm.contract import FINISH_CANCELLED, FINISH_LENGTH
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.chat.kv_batch import KvBatch, kv_bytes_per_token
from tritonmm_server.engines.chat.params import GenerationParams
from tritonmm_server.engines.chat.token_stream import END, Sampler, TokenText, drain

if TYPE_CHECKING:  # the grammar engine is loaded by whoever builds a constraint, not by every batch
    from tritonmm_server.engines.chat.constrained import Constraint

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024
PREFILL_CHUNK = 8  # text-only prompts prefilled in one forward pass
_TEXT_ONLY = frozenset({"input_ids", "attention_mask"})


class Busy(Exception):
    """The waiting line is full: the client should retry later or elsewhere."""


@dataclass(frozen=True)
class BatchLimits:
    """How many sequences decode together, how many may wait, and the key/value cache budget."""

    max_sequences: int
    max_waiting: int
    kv_cache_bytes: int

    def __post_init__(self) -> None:
        if self.max_sequences < 1 or self.max_waiting < 0 or self.kv_cache_bytes < 1:
            raise ValueError("max_sequences and kv_cache_bytes must be >= 1, max_waiting >= 0")

    @classmethod
    def defaults(cls, device: torch.device) -> BatchLimits:
        """16 sequences and 1 GiB of cache on a CPU; 64 sequences and a quarter of free memory on a GPU."""
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            return cls(max_sequences=64, max_waiting=256, kv_cache_bytes=free // 4)
        return cls(max_sequences=16, max_waiting=64, kv_cache_bytes=1024 * MiB)


class BatchedGeneration:
    """One request inside the batch; the same interface as ``token_stream.Generation``.

    Iterate it (once) for the text of each generated token; afterwards
    ``finish_reason``, ``prompt_tokens`` and ``completion_tokens`` are set. An
    exception raised while serving it is re-raised by the iterator. ``close()``
    (or leaving the loop early) takes it out of the batch at the next step.
    """

    def __init__(self, prompt_tokens: int, is_cancelled: Callable[[], bool]) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.is_cancelled = is_cancelled
        self.closed = threading.Event()
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._started = False

    def close(self) -> None:
        self.closed.set()

    def put(self, item: str | BaseException) -> None:
        self._out.put(item)

    def end(self, finish_reason: str | None) -> None:
        self.finish_reason = finish_reason
        self._out.put(END)

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated only once")
        self._started = True
        try:
            for item in drain(self._out):
                self.completion_tokens += 1
                yield item
        finally:
            self.closed.set()  # a no-op unless the consumer left early


@dataclass(eq=False)
class _Sequence:
    prepared: Any  # engine.Prepared: inputs, prompt_tokens and hidden_ids (TokenText's)
    generation: BatchedGeneration
    text: TokenText
    sampler: Sampler
    greedy: bool
    reserved_tokens: int  # prompt + the most tokens it may generate: what the cache must hold for it
    constraint: Constraint | None = None
    last_token: int = -1

    def stopped(self) -> bool:
        return self.generation.closed.is_set() or self.generation.is_cancelled()


class BatchScheduler:
    """Runs every request of one chat engine through a shared decoding batch."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_token_ids: frozenset[int],
        context_size: int,
        limits: BatchLimits,
        name: str = "chat",
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._eos_ids = eos_token_ids
        self._context_size = context_size
        self.limits = limits
        self._name = name
        self._bytes_per_token = kv_bytes_per_token(model)
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._batch = KvBatch()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.peak_kv_bytes = 0  # the largest cache the batch has held (for tests and the log)

    # -- the client side ------------------------------------------------------

    def submit(
        self,
        prepared: Any,
        params: GenerationParams,
        is_cancelled: Callable[[], bool],
        constraint: Constraint | None = None,
    ) -> BatchedGeneration:
        """Queue one prepared request; raises :class:`Busy` when the waiting line is full.

        ``constraint`` (structured output) masks this sequence's logits before each
        token is picked and is told the token after.
        """
        generation = BatchedGeneration(prepared.prompt_tokens, is_cancelled)
        max_new = min(params.max_tokens, self._context_size - prepared.prompt_tokens)
        if max_new <= 0:
            generation.end(FINISH_LENGTH)
            return generation
        reserved = prepared.prompt_tokens + max_new
        if reserved * self._bytes_per_token > self.limits.kv_cache_bytes:
            raise InputError(
                f"the prompt ({prepared.prompt_tokens} tokens) plus max_tokens ({max_new}) needs "
                f"{reserved * self._bytes_per_token / MiB:.1f} MiB of key/value cache; this model's budget is "
                f"{self.limits.kv_cache_bytes / MiB:.1f} MiB (lower max_tokens or shorten the prompt)"
            )
        sequence = _Sequence(
            prepared=prepared,
            generation=generation,
            text=TokenText(self._tokenizer, self._eos_ids, params.stop, max_new, prepared.hidden_ids),
            sampler=Sampler(params),
            greedy=params.temperature == 0,
            reserved_tokens=reserved,
            constraint=constraint,
        )
        with self._wake:
            if self._stopping:
                raise Busy(f"model {self._name} is shutting down")
            if len(self._waiting) >= self.limits.max_waiting:
                raise Busy(
                    f"model {self._name} has {len(self._active)} requests running and {len(self._waiting)} waiting "
                    f"(tmm.batch_max_waiting); retry shortly or send it to another replica"
                )
            self._waiting.append(sequence)
            self._ensure_thread()
            self._wake.notify()
        return generation

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests, let the running ones finish (up to ``timeout``), then stop the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def load(self) -> tuple[int, int]:
        """(running, waiting) right now."""
        with self._wake:
            return len(self._active), len(self._waiting)

    # -- the scheduler thread ---------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"{self._name}-batch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._waiting or self._active or self._stopping)
                if self._stopping and not self._waiting and not self._active:
                    return
                admitted = self._take_admissible()
            try:
                with torch.inference_mode():
                    # Asked outside the lock: in Triton is_cancelled is a call to the server.
                    for sequence in admitted:
                        if sequence.stopped():
                            sequence.generation.end(FINISH_CANCELLED)
                    self._prefill_all([s for s in admitted if s.generation.finish_reason is None])
                    if self._active:
                        self._step()
            except Exception as exc:  # a bug here must not leave every caller waiting forever
                LOG.exception("%s: the batch loop failed; ending its %d sequences", self._name, len(self._active))
                for sequence in [*self._active, *(s for s in admitted if s.generation.finish_reason is None)]:
                    sequence.generation.put(exc)
                    sequence.generation.end(None)
                self._active = []
                self._batch = KvBatch()

    def _take_admissible(self) -> list[_Sequence]:
        """Waiting sequences (in arrival order) that fit the batch and the cache budget now (lock held)."""
        taken: list[_Sequence] = []
        while self._waiting and len(self._active) + len(taken) < self.limits.max_sequences:
            candidate = self._waiting[0]
            rows = [*self._active, *taken, candidate]
            # The padded cache holds every row at the longest row's length: the bound that keeps memory in budget.
            if len(rows) * max(s.reserved_tokens for s in rows) * self._bytes_per_token > self.limits.kv_cache_bytes:
                break  # it waits for a row to leave (it fits alone: submit checked that)
            taken.append(self._waiting.popleft())
        return taken

    def _prefill_all(self, sequences: list[_Sequence]) -> None:
        """Prefill text-only prompts together (left-padded, one forward pass per chunk); media prompts alone.

        A prompt's prefill costs several decoding steps on a CPU; done one by one, a
        burst of arrivals would stall every running sequence that long.
        """
        text_only = [s for s in sequences if set(s.prepared.inputs.keys()) <= _TEXT_ONLY]
        for sequence in sequences:
            if all(sequence is not t for t in text_only):  # identity: a sequence's fields hold tensors
                self._prefill(sequence)
        for start in range(0, len(text_only), PREFILL_CHUNK):
            chunk = text_only[start : start + PREFILL_CHUNK]
            if len(chunk) == 1:
                self._prefill(chunk[0])
            else:
                self._prefill_together(chunk)

    def _prefill_together(self, chunk: list[_Sequence]) -> None:
        lengths = [s.prepared.prompt_tokens for s in chunk]
        width = max(lengths)
        device = chunk[0].prepared.inputs["input_ids"].device
        ids = torch.full((len(chunk), width), min(self._eos_ids), dtype=torch.long, device=device)
        mask = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        for row, (sequence, length) in enumerate(zip(chunk, lengths, strict=True)):
            ids[row, width - length :] = sequence.prepared.inputs["input_ids"][0]
            mask[row, width - length :] = 1
        cache = DynamicCache()
        try:
            output = self._model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
                past_key_values=cache,
                use_cache=True,
            )
        except Exception as exc:  # which prompt broke it is unknown: each goes alone, so only that one fails
            LOG.warning(
                "%s: prefill of %d prompts together failed (%s); prefilling each alone", self._name, len(chunk), exc
            )
            for sequence in chunk:
                self._prefill(sequence)
            return
        logits = output.logits[:, -1]
        del output
        keep = [row for row, sequence in enumerate(chunk) if self._advance(sequence, logits[row])]
        if keep:
            self._batch.add_rows(cache, mask, keep)
            self._active.extend(chunk[row] for row in keep)
            self._note_memory()

    def _prefill(self, sequence: _Sequence) -> None:
        try:
            cache = DynamicCache()
            output = self._model(**sequence.prepared.inputs, past_key_values=cache, use_cache=True)
            logits = output.logits[0, -1]
            del output
        except Exception as exc:  # this request's media or length broke the model: it fails alone
            LOG.warning("%s: prefill failed: %s", self._name, exc)
            sequence.generation.put(exc)
            sequence.generation.end(None)
            return
        if self._advance(sequence, logits):
            self._batch.add(cache, sequence.prepared.prompt_tokens)
            self._active.append(sequence)
            self._note_memory()

    def _step(self) -> None:
        tokens = torch.tensor([s.last_token for s in self._active], device=self._batch.mask.device)
        inputs = self._batch.step_inputs(tokens)
        try:
            output = self._model(**inputs)
        except Exception as exc:  # nothing ties the failure to one row: every running request gets it
            LOG.error("%s: decoding step failed for %d sequences: %s", self._name, len(self._active), exc)
            for sequence in self._active:
                sequence.generation.put(exc)
                sequence.generation.end(None)
            self._active = []
            self._batch = KvBatch()
            return
        self._batch.absorb(inputs["past_key_values"])
        logits = output.logits[:, -1]
        keep = [row for row, sequence in enumerate(self._active) if self._advance(sequence, logits[row])]
        if len(keep) < len(self._active):
            with self._wake:
                self._active = [self._active[row] for row in keep]
            self._batch.keep(keep)
        self._note_memory()

    def _advance(self, sequence: _Sequence, logits: torch.Tensor) -> bool:
        """Pick and hand over the sequence's next token; False when it leaves the batch.

        Whatever goes wrong for one sequence (its grammar, its consumer) ends that
        sequence alone.
        """
        try:
            return self._pick(sequence, logits)
        except Exception as exc:
            LOG.warning("%s: a sequence failed: %s", self._name, exc)
            sequence.generation.put(exc)
            sequence.generation.end(None)
            return False

    def _pick(self, sequence: _Sequence, logits: torch.Tensor) -> bool:
        if sequence.stopped():
            sequence.generation.end(FINISH_CANCELLED)
            return False
        scores = logits.float()[None]
        if sequence.constraint is not None:
            sequence.constraint.mask_logits(scores[0])
        if not sequence.greedy:
            scores = sequence.sampler(None, scores)
        token = int(scores.argmax(dim=-1))
        if sequence.constraint is not None:
            sequence.constraint.accept(token)
        sequence.last_token = token
        sequence.generation.put(sequence.text.push(token))
        if sequence.text.finish_reason is not None:
            sequence.generation.end(sequence.text.finish_reason)
            return False
        return True

    def _note_memory(self) -> None:
        used = self._batch.size * self._batch.length * self._bytes_per_token
        self.peak_kv_bytes = max(self.peak_kv_bytes, used)
