"""The generation step: one call of the checkpoint's ``model.generate``, with its token ids.

:class:`Generator` is the seam between the chat engine, which loads the checkpoint,
and :mod:`.token_stream`, which runs a generation in a worker thread and streams its
text: the stream needs only ``run`` and the tokenizer facts, never the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import BatchFeature, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

__all__ = ["Generator"]


@dataclass(frozen=True)
class Generator:
    """A loaded chat checkpoint as a generation step; shared by concurrent requests (``generate`` is re-entrant)."""

    model: Any
    tokenizer: Any
    eos_token_ids: frozenset[int]
    pad_token_id: int
    context_size: int

    @classmethod
    def for_checkpoint(cls, model: Any, tokenizer: Any, context_size: int) -> Generator:
        """The generator of a loaded model and its tokenizer; ValueError when the checkpoint has no end token."""
        eos_ids = _eos_token_ids(model, tokenizer)
        return cls(model, tokenizer, eos_ids, _pad_token_id(model, tokenizer, eos_ids), context_size)

    def run(
        self,
        inputs: BatchFeature,
        max_new: int,
        sampler: LogitsProcessor,
        stopping: StoppingCriteria,
        *,
        constraint: LogitsProcessor | None = None,
    ) -> None:
        """Generate up to ``max_new`` tokens after ``inputs``.

        Greedy search over what ``sampler`` leaves finite (it does the sampling, with its
        own RNG); ``constraint`` (structured output) masks the scores before the sampler
        sees them; ``stopping`` sees every new token before the next forward pass and
        decides when to stop. Blocks until generation ends.
        """
        processors = [sampler] if constraint is None else [constraint, sampler]
        with torch.inference_mode():
            self.model.generate(
                **inputs,
                max_new_tokens=max_new,
                do_sample=False,
                num_beams=1,
                eos_token_id=sorted(self.eos_token_ids),
                pad_token_id=self.pad_token_id,
                logits_processor=LogitsProcessorList(processors),
                stopping_criteria=StoppingCriteriaList([stopping]),
            )


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    if not ids:
        raise ValueError("the checkpoint defines no end-of-sequence token")
    return frozenset(ids)


def _pad_token_id(model: Any, tokenizer: Any, eos_ids: frozenset[int]) -> int:
    for candidate in (model.generation_config.pad_token_id, tokenizer.pad_token_id):
        if candidate is not None:
            return candidate
    return min(eos_ids)
