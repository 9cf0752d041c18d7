"""The key/value cache of the sequences that decode together, as left-padded tensors.

Each layer's keys and values are one ``[batch, kv_heads, length, head_dim]``
tensor. A sequence that joins is left-padded to the batch's length (or the batch
to its length), and its padding is masked out by the attention mask, so every
row attends to exactly its own tokens; positions are tracked per row, so a
padded row sees the same rotary positions as it would alone. A row that leaves
is dropped, and columns that have become padding in every row are cut off.

This is the layout of transformers' own left-padded batched ``generate``; with
it the decoding step is one ordinary forward pass of the checkpoint, for any
architecture whose positions are plain token counts (Llama, Mistral, Qwen2 text
models). Architectures with multi-axis rotary positions (Qwen2-VL's M-RoPE)
are not batched this way (:func:`supports_batched_decoding`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional
from transformers import DynamicCache


def supports_batched_decoding(model: Any) -> bool:
    """Whether decoding positions are plain token counts, so rows can be padded and batched."""
    inner = getattr(model, "model", model)
    if hasattr(inner, "get_rope_index") or hasattr(model, "get_rope_index"):  # M-RoPE: positions depend on media
        return False
    text_config = model.config.get_text_config()
    if getattr(text_config, "cross_attention_layers", None):  # Mllama: image states live in the cache too
        return False
    window = getattr(text_config, "sliding_window", None)
    return not (window and getattr(text_config, "use_sliding_window", False))


def kv_bytes_per_token(model: Any) -> int:
    """Bytes one token occupies in the cache, keys and values of every layer."""
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = torch.finfo(model.dtype).bits // 8 if model.dtype.is_floating_point else 4
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


class KvBatch:
    """Keys, values, attention mask and next position of each row."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # [batch, length], 1 = a real token
        self.positions: torch.Tensor | None = None  # [batch], the position of each row's next token

    @property
    def size(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return 0 if self.mask is None else int(self.mask.shape[1])

    def add(self, cache: DynamicCache, prompt_length: int) -> None:
        """Append one sequence whose prefill left ``cache`` (batch of one, ``prompt_length`` tokens)."""
        device = cache.layers[0].keys.device
        self.add_rows(cache, torch.ones(1, prompt_length, dtype=torch.long, device=device), [0])

    def add_rows(self, cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> None:
        """Append ``rows`` of a prefill that ran several left-padded prompts together (``mask``: [n, length])."""
        index = torch.tensor(rows, dtype=torch.long, device=mask.device)
        mask = mask.index_select(0, index)
        start = int(mask.any(dim=0).long().argmax())  # columns that are padding in every kept row go
        mask = mask[:, start:]
        keys = [layer.keys.index_select(0, index)[:, :, start:] for layer in cache.layers]
        values = [layer.values.index_select(0, index)[:, :, start:] for layer in cache.layers]
        positions = mask.sum(dim=1)
        if self.mask is None:
            self.keys, self.values, self.mask, self.positions = keys, values, mask, positions
            return
        length = max(self.length, int(mask.shape[1]))
        self._pad_to(length)
        pad = length - int(mask.shape[1])
        self.keys = [torch.cat([mine, _pad_left(k, pad)]) for mine, k in zip(self.keys, keys, strict=True)]
        self.values = [torch.cat([mine, _pad_left(v, pad)]) for mine, v in zip(self.values, values, strict=True)]
        self.mask = torch.cat([self.mask, functional.pad(mask, (pad, 0))])
        self.positions = torch.cat([self.positions, positions])

    def step_inputs(self, tokens: torch.Tensor) -> dict[str, Any]:
        """Model inputs for one decoding step: ``tokens`` is each row's last token, ``[batch]``."""
        assert self.mask is not None and self.positions is not None
        cache = DynamicCache()
        for index, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(keys, values, index)
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        inputs = {
            "input_ids": tokens[:, None],
            "attention_mask": self.mask,
            "position_ids": self.positions[:, None],
            "past_key_values": cache,
            "use_cache": True,
        }
        self.positions = self.positions + 1
        return inputs

    def absorb(self, cache: DynamicCache) -> None:
        """Keep the cache the step extended by one token per row."""
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order); cut the columns no remaining row uses."""
        if not rows:
            self.__init__()
            return
        assert self.mask is not None and self.positions is not None
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        start = int(mask.any(dim=0).long().argmax())  # first column some row still uses
        self.mask = mask[:, start:]
        self.positions = self.positions.index_select(0, index)
        self.keys = [k.index_select(0, index)[:, :, start:] for k in self.keys]
        self.values = [v.index_select(0, index)[:, :, start:] for v in self.values]

    def _pad_to(self, length: int) -> None:
        pad = length - self.length
        if pad <= 0:
            return
        assert self.mask is not None
        self.keys = [_pad_left(k, pad) for k in self.keys]
        self.values = [_pad_left(v, pad) for v in self.values]
        self.mask = functional.pad(self.mask, (pad, 0))


def _pad_left(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    """Zeros before the sequence axis (dim 2) of a ``[batch, heads, length, dim]`` tensor."""
    return functional.pad(tensor, (0, 0, pad, 0)) if pad else tensor
