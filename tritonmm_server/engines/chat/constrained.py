"""Grammar-constrained decoding: structured output that holds even for a weak model.

For ``response_format`` json_object or json_schema, every decoding step keeps only
the tokens that leave the output a prefix of a document the format accepts, so the
answer is valid JSON by construction, not by hoping. The grammar engine is
llguidance: of the four maintained libraries measured by ``devtools/bench_grammar.py``
(xgrammar, llguidance, outlines-core, lm-format-enforcer) it covers as many schema
features as the best, costs well under a millisecond per token at a 151k vocabulary,
and installs as one 3 MB wheel with no dependencies (xgrammar, with as many features
and masks computed in a third of the time, pulls in ``triton``, a 286 MB wheel, on
x86-64 Linux; outlines-core took 7 s to compile a schema at 151k and ignores integer
bounds; lm-format-enforcer took 10 ms per token and ignores string formats).

One :class:`StructuredOutput` per tokenizer (per engine) turns a
:class:`~tritonmm.structured_output.ResponseFormat` into a per-request
:class:`Constraint`. A schema is checked before any token is generated, and refused
with :class:`InputError` naming the problem: first against the JSON-schema
meta-schema (``jsonschema``), then for what the grammar engine cannot enforce
(e.g. ``uniqueItems``) or what no document can satisfy. Checked grammars are kept in
a bounded LRU keyed by the schema text (the cache belongs to one tokenizer).

A :class:`Constraint` works on one sequence, so several requests in one batch each
mask their own logits row (``mask_logits``, in place: inside the forward pass's
``torch.inference_mode`` or on a copy) before sampling, and take their own token
(``accept``) after it. :class:`ConstraintLogitsProcessor` wraps one for ``model.generate``.

The layout is fixed to what ``json.dumps`` writes (``", "`` and ``": "``, no other
whitespace): models write that naturally, and a weak model cannot spend its tokens
on whitespace. Object properties come in the schema's order.

When ``max_tokens`` runs out first, generation ends with finish reason ``length``
and the text is an unfinished document (a prefix of a valid one, not valid JSON),
as OpenAI's API does; the caller sees the finish reason and can raise the limit.
Stop sequences still apply and can cut a document short the same way.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import jsonschema
import llguidance
import llguidance.hf
import numpy as np
import torch
from transformers import LogitsProcessor

from tritonmm.contract import PARAM_JSON_SCHEMA, RESPONSE_JSON_OBJECT
from tritonmm.errors import InvalidInput
from tritonmm.structured_output import ResponseFormat, parse_response_format
from tritonmm_server.backend.errors import InputError

__all__ = ["Constraint", "ConstraintLogitsProcessor", "StructuredOutput", "parse_request_format"]

DEFAULT_CACHE_SIZE = 64
# The layout json.dumps writes; see the module docstring.
_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def parse_request_format(response_format: str | None, json_schema: str | dict | None) -> ResponseFormat | None:
    """The request's response format (None: free text); the core's rules, raising InputError."""
    try:
        return parse_response_format(response_format, json_schema)
    except InvalidInput as exc:
        raise InputError(str(exc)) from None


class Constraint:
    """One sequence's grammar state: which tokens may come next, and the tokens taken so far.

    Not thread-safe: one sequence, one decoding loop.
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        # llguidance writes 32-bit words; its llguidance.torch helpers would import
        # torch.compile's machinery (~3 s, and locale-sensitive in the python-backend stub).
        self._bitmask = np.zeros((1, (vocab_size + 31) // 32), dtype=np.int32)

    @property
    def is_finished(self) -> bool:
        """The document is complete: end-of-sequence is the only token left (or was taken)."""
        return self._matcher.is_stopped()

    def mask_logits(self, logits_row: torch.Tensor) -> None:
        """Set the logit of every token the grammar forbids now to -inf, in place (one row, any device)."""
        if logits_row.shape != (self._vocab_size,):
            raise ValueError(f"expected one row of {self._vocab_size} logits, got shape {tuple(logits_row.shape)}")
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        self._raise_if_failed()
        logits_row.masked_fill_(_forbidden(self._bitmask, self._vocab_size, logits_row.device)[0], -math.inf)

    def accept(self, token_id: int) -> None:
        """Advance past ``token_id``, which ``mask_logits`` must have allowed."""
        # A failure here is the server's bug (a token taken past the mask), not the user's.
        if not self._matcher.consume_token(token_id):
            raise RuntimeError(f"token {token_id} does not fit the response format: {self._error()}")

    def _raise_if_failed(self) -> None:
        if self._matcher.is_error():
            raise RuntimeError(f"the response format's grammar failed: {self._error()}")

    def _error(self) -> str:
        return (self._matcher.get_error() or "no error given").splitlines()[0]  # the rest dumps the parser state


def _forbidden(bitmask: np.ndarray, vocab: int, device: torch.device) -> torch.Tensor:
    """The ``[rows, vocab]`` booleans of the tokens a bitmask ``[rows, words]`` forbids, on ``device``.

    Unpacked on the CPU: per row, 0.1-0.2 ms at a 152k vocabulary with CUDA logits
    (measured on an H200, bf16, batches of 1 to 32), as little as llguidance's parallel
    executor with one masking operation per batch gave.
    """
    # Bit j of 32-bit word i allows token 32 * i + j; little-endian bytes read LSB first.
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, count=vocab, bitorder="little")
    return torch.from_numpy(allowed == 0).to(device)


class StructuredOutput:
    """Response formats compiled for one tokenizer, with the grammar of each schema cached.

    ``eos_token_ids``: the tokens that end generation (the engine's); the grammar
    allows them exactly when the document is complete. ``vocab_size``: the width of
    the model's logits (it may exceed the tokenizer's length; the extra ids are
    never allowed). Thread-safe: one instance serves every request of an engine.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        eos_token_ids: Iterable[int],
        vocab_size: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.vocab_size = vocab_size or len(tokenizer)
        # ~1-3 s for a 150k vocabulary: built once per engine.
        self._tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=self.vocab_size, eos_token=sorted(eos_token_ids)
        )
        self._grammars: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def constraint(self, response_format: ResponseFormat) -> Constraint:
        """A fresh constraint for one request; raises InputError for a schema that cannot be used."""
        matcher = llguidance.LLMatcher(self._tokenizer, self._grammar(response_format), log_level=0)
        if matcher.is_error():  # _grammar validated it: only resource limits are left
            raise InputError(f"{_what(response_format)} cannot be enforced: {matcher.get_error().splitlines()[0]}")
        return Constraint(matcher, self.vocab_size)

    def cached_schemas(self) -> int:
        """How many checked grammars the cache holds."""
        with self._lock:
            return len(self._grammars)

    def _grammar(self, response_format: ResponseFormat) -> str:
        key = response_format.schema_json or RESPONSE_JSON_OBJECT
        with self._lock:
            grammar = self._grammars.get(key)
            if grammar is not None:
                self._grammars.move_to_end(key)
                return grammar
        grammar = self._compile(response_format)  # outside the lock: a big schema takes a while
        with self._lock:
            self._grammars[key] = grammar
            self._grammars.move_to_end(key)
            while len(self._grammars) > self._cache_size:
                self._grammars.popitem(last=False)
        return grammar

    def _compile(self, response_format: ResponseFormat) -> str:
        schema = response_format.schema()
        what = _what(response_format)
        _check_meta_schema(schema, what)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=_LAYOUT)
        except ValueError as exc:
            raise InputError(f"{what} cannot be used: {exc}") from None
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._tokenizer)
        if is_error:
            # e.g. 'Unimplemented keys: ["uniqueItems"]', 'Unsatisfiable schema: minimum (5) is greater than ...'
            raise InputError(f"{what} cannot be enforced by structured output: {messages[0]}")
        return grammar


def _what(response_format: ResponseFormat) -> str:
    if response_format.kind == RESPONSE_JSON_OBJECT:
        return "the json_object response format"
    return f"{PARAM_JSON_SCHEMA} {response_format.name!r}" if response_format.name else PARAM_JSON_SCHEMA


def _check_meta_schema(schema: dict, what: str) -> None:
    """Refuse a schema that breaks its own dialect's meta-schema (2020-12 unless ``$schema`` says)."""
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InputError(f"{what} is not a valid JSON schema: at {exc.json_path}: {exc.message}") from None


class ConstraintLogitsProcessor(LogitsProcessor):
    """A constraint for ``model.generate`` on one sequence; put it before any sampler.

    Each call first accepts the tokens generated since the previous call (those past
    ``prompt_tokens`` in ``input_ids``), then masks the scores for the next one.
    """

    def __init__(self, constraint: Constraint, prompt_tokens: int) -> None:
        self._constraint = constraint
        self._next = prompt_tokens  # position in input_ids of the first token not yet accepted

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != 1:
            raise ValueError(f"a constraint guides one sequence, got a batch of {scores.shape[0]}")
        for token_id in input_ids[0, self._next :].tolist():
            self._constraint.accept(token_id)
        self._next = input_ids.shape[1]
        self._constraint.mask_logits(scores[0])
        return scores
