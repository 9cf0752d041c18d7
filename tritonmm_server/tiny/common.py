"""What every tiny build shares: the seeded init, the BPE tokenizer, the tiny towers, saving.

A tiny build has exactly the layout of a real Hugging Face checkpoint (config,
safetensors, generation config, tokenizer, processor, chat template) and loads through
the same ``Auto*`` calls, so everything the server does with it is what it would do
with a real checkpoint; only the weights are random (and the answers gibberish).
Builds are deterministic: the same arch gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin
from transformers.utils import logging as transformers_logging

SEED = 20261121
BuiltT = TypeVar("BuiltT")
CONTEXT_SIZE = 2048
BPE_VOCAB_SIZE = 512  # plus the special tokens

# The decoder every chat build shares: a 2-layer Llama, 64 wide. Rotary positions cost
# no weights, so a realistic context size is free.
TEXT_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": CONTEXT_SIZE,
    "tie_word_embeddings": False,
}

# Tokenizer training text. Only its statistics matter: every byte stays encodable
# because the BPE trainer starts from the full byte alphabet.
CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "A picture of a cat sitting on a red chair next to the window.",
    "Describe this image in detail, please.",
    "What is shown in the video? The video shows a person walking in a park.",
    "There are two people in the photo, and one of them is holding an umbrella.",
    "The chart shows sales growing from 2019 to 2024, with a dip in 2020.",
    "Please summarise the document in three sentences.",
    "The weather today is sunny with a light breeze from the west.",
    "Question: how many apples are on the table? Answer: there are four apples.",
    "You are a helpful assistant that answers questions about images and videos.",
    "Le chat est sur la table. Der Hund schläft im Garten. El perro come pan.",
    "数字 1234567890, symbols: ()[]{}<>!?@#$%^&*-+=_/\\|~`'\";:,.",
    "def main():\n    return 0\n",
)


@dataclass(frozen=True)
class ChatArch:
    """A chat architecture: the tokens its processor needs, its prompt format and its model."""

    special_tokens: tuple[str, ...]
    eos_token: str
    pad_token: str
    chat_template: str
    build: Callable[[PreTrainedTokenizerFast, str], tuple[PreTrainedModel, ProcessorMixin]]
    bos_token: str | None = None  # prepended by the tokenizer itself, as Llama tokenizers do
    features: str = "vision,video"  # the tmm.features of a config that serves it


def train_bpe_tokenizer(
    special_tokens: tuple[str, ...],
    *,
    eos_token: str,
    pad_token: str,
    bos_token: str | None = None,
    chat_template: str | None = None,
    model_max_length: int = CONTEXT_SIZE,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on :data:`CORPUS`; special tokens get the first ids, in order."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)
    if bos_token is None:
        tok.post_processor = byte_level
    else:
        bos = (bos_token, special_tokens.index(bos_token))  # trainer ids follow list order
        add_bos = processors.TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos])
        tok.post_processor = processors.Sequence([byte_level, add_bos])
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE + len(special_tokens),
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    named = (eos_token, pad_token, bos_token)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        additional_special_tokens=[t for t in special_tokens if t not in named],
        chat_template=chat_template,
        model_max_length=model_max_length,
    )


def text_config(tokenizer: PreTrainedTokenizerFast) -> dict:
    """The shared decoder's config for ``tokenizer``'s vocabulary and special ids."""
    return {
        **TEXT_CONFIG,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }


def vision_config(image_size: int, patch_size: int, **extra: object) -> dict[str, object]:
    """A two-layer vision tower: the smallest that still runs the real code path."""
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
        **extra,
    }


def build_chat(spec: ChatArch, dest: Path) -> None:
    """Train the arch's tokenizer, build its seeded model and processor, save them at ``dest``."""
    tokenizer = train_bpe_tokenizer(
        spec.special_tokens,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        bos_token=spec.bos_token,
        chat_template=spec.chat_template,
    )
    model, processor = seeded(lambda: spec.build(tokenizer, spec.chat_template))
    # An explicit generation config (not derived from the model config) so that
    # a reload sees exactly these ids.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        _from_model_config=False,
    )
    save(dest, model, processor)


def seeded(build: Callable[[], BuiltT]) -> BuiltT:
    """``build()`` with torch's RNG seeded: a reproducible init.

    fork_rng keeps the caller's global RNG untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def save(dest: Path, model: PreTrainedModel, processor: Any) -> None:
    """Write the checkpoint directory: the model and its tokenizer or processor."""
    dest.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()  # a one-shard bar is noise in launcher output
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
