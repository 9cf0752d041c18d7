"""The grammar libraries behind one interface, for ``devtools.bench_grammar``.

Each adapter compiles a JSON schema for a tokenizer into a factory of
:class:`Matcher` objects (mask the allowed tokens of one logits row, accept a
token, say when only end-of-sequence is left), set to the layout ``json.dumps``
writes. A library that is not installed is simply not in the comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode


class Matcher:
    """One request's constraint as each library exposes it: fill the mask, apply it, accept a token."""

    def fill(self) -> None:
        raise NotImplementedError

    def apply(self, logits: torch.Tensor) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> None:
        raise NotImplementedError

    def allowed(self, token: int) -> bool:
        self.fill()
        row = torch.zeros(1, self.vocab)
        self.apply(row)
        return bool(torch.isfinite(row[0, token]))


class _BitmaskMatcher(Matcher):
    """Libraries that write a 32-bit-word bitmask; applied as the server does (numpy unpacking)."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.bitmask = torch.zeros(1, (vocab + 31) // 32, dtype=torch.int32)

    def apply(self, logits: torch.Tensor) -> None:
        allowed = np.unpackbits(self.bitmask.numpy().view(np.uint8), count=self.vocab, bitorder="little")
        logits[0].masked_fill_(torch.from_numpy(allowed == 0), -torch.inf)


Compile = Callable[[str], Callable[[], Matcher]]


def _llguidance(tokenizer: PreTrainedTokenizerBase) -> Compile:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    lltok = llguidance.hf.from_tokenizer(tokenizer)
    layout = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

    def compile_schema(schema: str) -> Callable[[], Matcher]:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=layout)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
        if is_error:
            raise ValueError("; ".join(messages))

        class LlgMatcher(_BitmaskMatcher):
            def __init__(self) -> None:
                super().__init__(len(tokenizer))
                self.m = llguidance.LLMatcher(lltok, grammar, log_level=0)

            def fill(self) -> None:
                llguidance.torch.fill_next_token_bitmask(self.m, self.bitmask)

            def accept(self, token: int) -> None:
                assert self.m.consume_token(token), self.m.get_error()

        return LlgMatcher

    return compile_schema


def _xgrammar(tokenizer: PreTrainedTokenizerBase) -> Compile:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile_schema(schema: str) -> Callable[[], Matcher]:
        compiled = compiler.compile_json_schema(schema, any_whitespace=False)  # separators ", " and ": "

        class XgrMatcher(Matcher):
            def __init__(self) -> None:
                self.vocab = info.vocab_size
                self.m = xgr.GrammarMatcher(compiled)
                self.bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)

            def fill(self) -> None:
                self.m.fill_next_token_bitmask(self.bitmask)

            def apply(self, logits: torch.Tensor) -> None:
                xgr.apply_token_bitmask_inplace(logits, self.bitmask)

            def accept(self, token: int) -> None:
                assert self.m.accept_token(token)

        return XgrMatcher

    return compile_schema


def _token_bytes(tokenizer: PreTrainedTokenizerBase) -> dict[bytes, list[int]]:
    """Every non-special token's bytes (byte-level BPE), as outlines-core's vocabulary takes them."""
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids)
    vocab: dict[bytes, list[int]] = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id not in special and all(c in decoder for c in token):
            vocab.setdefault(bytes(decoder[c] for c in token), []).append(token_id)
    return vocab


def _outlines_core(tokenizer: PreTrainedTokenizerBase) -> Compile:
    import outlines_core

    vocabulary = outlines_core.Vocabulary(tokenizer.eos_token_id, _token_bytes(tokenizer))

    def compile_schema(schema: str) -> Callable[[], Matcher]:
        index = outlines_core.Index(outlines_core.json_schema.build_regex_from_schema(schema), vocabulary)

        class OcMatcher(_BitmaskMatcher):
            def __init__(self) -> None:
                super().__init__(len(tokenizer))
                self.g = outlines_core.Guide(index)

            def fill(self) -> None:
                self.g.write_mask_into(self.bitmask.data_ptr(), self.bitmask.numel(), 4)

            def accept(self, token: int) -> None:
                self.g.advance(token)

        return OcMatcher

    return compile_schema


ADAPTERS = {
    "llguidance": _llguidance,
    "xgrammar": _xgrammar,
    "outlines_core": _outlines_core,
}
