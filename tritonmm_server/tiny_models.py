"""Tiny random-init models (vision-language chat, a cross-encoder), built offline from configs.

No pretrained VLM can be downloaded here, so the bundled chat model ships with
weights built on the spot. They produce gibberish, but the directory they are
saved to has exactly the layout of a real Hugging Face checkpoint (config,
safetensors, generation config, tokenizer, image processor, chat template), and
it is loaded through the same ``AutoProcessor`` / ``AutoModelForImageTextToText``
calls as, e.g., HuggingFaceTB/SmolVLM-256M-Instruct (``idefics3``) or
llava-hf/llava-1.5-7b-hf (``llava``). Everything the server does with them is
therefore what it would do with a real checkpoint.

``bert-cross-encoder`` is a reranker of the cross-encoder/ms-marco-MiniLM-L-6-v2
kind: a ``BertForSequenceClassification`` with one label and a WordPiece tokenizer
whose pair template gives the document token type 1, loaded through
``AutoModelForSequenceClassification`` / ``AutoTokenizer``.

Builds are deterministic: the same arch gives byte-identical weights.

    python -m tritonmm_server.tiny_models --arch idefics3 --out /tmp/tiny-idefics3
    python -m tritonmm_server.tiny_models --arch bert-cross-encoder --out /tmp/tiny-cross-encoder
"""

from __future__ import annotations

import argparse
import logging
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    CLIPImageProcessorPil,
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)
from transformers.utils import logging as transformers_logging

__all__ = ["ALL_ARCHS", "ARCHS", "CONTEXT_SIZE", "RERANK_ARCHS", "build_tiny_model"]

log = logging.getLogger(__name__)

SEED = 20261121
CONTEXT_SIZE = 2048
_BPE_VOCAB_SIZE = 512  # plus the special tokens

# A shared decoder: a 2-layer Llama, 64 wide. Rotary positions cost no weights,
# so a realistic context size is free.
_TEXT_CONFIG = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": CONTEXT_SIZE,
    "tie_word_embeddings": False,
}

# BPE training text. Only its statistics matter: every byte stays encodable
# because the trainer starts from the full byte alphabet.
_CORPUS = (
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
class _Arch:
    """What differs between architectures: the tokens the processor needs and the prompt format."""

    special_tokens: tuple[str, ...]
    eos_token: str
    pad_token: str
    chat_template: str
    build: Callable[[PreTrainedTokenizerFast, str], tuple[PreTrainedModel, ProcessorMixin]]
    bos_token: str | None = None  # prepended by the tokenizer itself, as Llama tokenizers do


# SmolVLM-Instruct's prompt format ("<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:"),
# extended to accept plain-string content.
_IDEFICS3_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}"
    "{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'] and message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<end_of_utterance>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# llava-1.5's prompt format ("USER: <image>\nHi ASSISTANT:"), but keeping images
# where they are in the message instead of hoisting them to the front.
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'] | upper + ': ' }}{% endif %}"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}{{ '<image>\n' }}{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _train_tokenizer(arch: _Arch) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)
    if arch.bos_token is None:
        tok.post_processor = byte_level
    else:
        bos = (arch.bos_token, arch.special_tokens.index(arch.bos_token))  # trainer ids follow list order
        add_bos = processors.TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B", special_tokens=[bos])
        tok.post_processor = processors.Sequence([byte_level, add_bos])
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE + len(arch.special_tokens),
        special_tokens=list(arch.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    named = (arch.eos_token, arch.pad_token, arch.bos_token)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=arch.bos_token,
        eos_token=arch.eos_token,
        pad_token=arch.pad_token,
        additional_special_tokens=[t for t in arch.special_tokens if t not in named],
        chat_template=arch.chat_template,
        model_max_length=CONTEXT_SIZE,
    )


def _text_config(tokenizer: PreTrainedTokenizerFast) -> dict:
    return {
        **_TEXT_CONFIG,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }


def _build_idefics3(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    # 64 px images in 8 px patches, pixel-shuffled by 2: 16 tokens per image.
    # Splitting is off, so an image costs 16 + 3 wrapper tokens whatever its size.
    image_size, patch_size, scale_factor = 64, 8, 2
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    config = Idefics3Config(
        vision_config=_vision_config(image_size, patch_size),
        text_config=_text_config(tokenizer),
        scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=template)
    return Idefics3ForConditionalGeneration(config), processor


def _vision_config(image_size: int, patch_size: int, **extra: object) -> dict[str, object]:
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


def _build_llava(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    # A 32 px CLIP tower in 8 px patches: 16 patch tokens (the CLS token is dropped).
    image_size, patch_size = 32, 8
    config = LlavaConfig(
        vision_config=_vision_config(image_size, patch_size, model_type="clip_vision_model", projection_dim=32),
        text_config=_text_config(tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor,
        tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    return LlavaForConditionalGeneration(config), processor


_IDEFICS3_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)

_ARCHS: dict[str, _Arch] = {
    "idefics3": _Arch(
        special_tokens=_IDEFICS3_SPECIALS,
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        chat_template=_IDEFICS3_TEMPLATE,
        build=_build_idefics3,
    ),
    "llava": _Arch(
        special_tokens=("<s>", "</s>", "<pad>", "<image>"),
        eos_token="</s>",
        pad_token="<pad>",
        bos_token="<s>",
        chat_template=_LLAVA_TEMPLATE,
        build=_build_llava,
    ),
}


# --- the cross-encoder -------------------------------------------------------------------------

_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CROSS_ENCODER_CONTEXT = 512  # BERT's position table, as in the real MiniLM cross-encoders


def _train_wordpiece() -> PreTrainedTokenizerFast:
    """A BERT tokenizer: lower-casing WordPiece, ``[CLS] query [SEP] document [SEP]`` for pairs.

    The vocabulary is spelled out rather than trained (tokenizers' WordPiece trainer
    orders it differently from run to run): the specials, every printable ASCII
    character and each corpus character, alone and as a ``##`` continuation, then the
    corpus words. Any English text therefore tokenizes without ``[UNK]``.
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = sorted(
        {word for text in _CORPUS for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
    )
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation).union(*words))
    pieces = [*_BERT_SPECIALS, *chars, *(f"##{c}" for c in chars), *(w for w in words if len(w) > 1)]
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls, sep = (("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]")))
    # ":1" marks the document's tokens as token type 1, which BERT's pair models rely on.
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=_CROSS_ENCODER_CONTEXT,
        # A plain tokenizers backend would leave token_type_ids out of its outputs.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _build_bert_cross_encoder(dest: Path) -> None:
    tokenizer = _train_wordpiece()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=_CROSS_ENCODER_CONTEXT,
        type_vocab_size=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        # BERT's 0.02 gives every pair the same score to four digits; wider weights tell pairs apart.
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = BertForSequenceClassification(config)
    dest.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


# Archs that are not chat models: built by a function of their own.
_OTHER_ARCHS: dict[str, Callable[[Path], None]] = {"bert-cross-encoder": _build_bert_cross_encoder}
ARCHS = tuple(_ARCHS)  # the chat models
RERANK_ARCHS = tuple(_OTHER_ARCHS)
ALL_ARCHS = (*ARCHS, *RERANK_ARCHS)


def build_tiny_model(arch: str, dest: Path) -> Path:
    """Build the tiny ``arch`` model and save it as a checkpoint directory at ``dest``.

    Returns ``dest``. Raises ``ValueError`` for an unknown arch.
    """
    dest = Path(dest)
    if arch in _OTHER_ARCHS:
        _OTHER_ARCHS[arch](dest)
        return dest
    spec = _ARCHS.get(arch)
    if spec is None:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ALL_ARCHS)}")
    tokenizer = _train_tokenizer(spec)
    # fork_rng keeps the caller's global RNG untouched while making the init reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model, processor = spec.build(tokenizer, spec.chat_template)
    # An explicit generation config (not derived from the model config) so that
    # a reload sees exactly these ids.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        _from_model_config=False,
    )
    dest.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()  # a one-shard bar is noise in launcher output
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=ALL_ARCHS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the checkpoint to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    start = time.perf_counter()
    out = build_tiny_model(args.arch, args.out)
    log.info(
        "built tiny %s model in %s (%.1f KiB) in %.2f s",
        args.arch,
        out.resolve(),
        _dir_size(out) / 1024,
        time.perf_counter() - start,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
