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

``bert-embed`` is a sentence-embedding checkpoint of the all-MiniLM-L6-v2 kind (a
``BertModel`` with the same WordPiece tokenizer, 32-dimensional, and the
sentence-transformers files that declare mean pooling and a 128-token window), and
``clip`` an image-text dual encoder of the openai/clip-vit-base-patch32 kind (a
``CLIPModel`` with a ``CLIPProcessor``: PIL image processor, byte-level BPE tokenizer
that wraps each text in ``<|startoftext|>`` / ``<|endoftext|>``, a 77-token window),
loaded through ``AutoModel`` with ``AutoTokenizer`` / ``AutoProcessor``.

``qwen2-audio`` is a chat model that hears audio natively, of the
Qwen/Qwen2-Audio-7B-Instruct kind: a Whisper-style audio encoder in front of a
Qwen2 decoder, with a ``Qwen2AudioProcessor`` (128-bin ``WhisperFeatureExtractor``,
byte-level BPE, the instruct chat template), loaded through ``AutoProcessor`` /
``AutoModelForMultimodalLM``. It takes no images; a config serving it declares
``tmm.features`` ``audio`` (``FEATURES`` says so per arch).

``whisper`` is a speech recogniser of the openai/whisper-tiny kind: a
``WhisperForConditionalGeneration`` (80 mel bins, the real 30 s window) with a
``WhisperProcessor`` (``WhisperFeatureExtractor``, a byte-level BPE
``WhisperTokenizer`` with Whisper's control tokens) and a generation config with the
language and task tokens of a multilingual model (eight languages), loaded through
``AutoProcessor`` / ``AutoModelForSpeechSeq2Seq``.

Builds are deterministic: the same arch gives byte-identical weights.

    python -m tritonmm_server.tiny.build --arch idefics3 --out /tmp/tiny-idefics3
    python -m tritonmm_server.tiny.build --arch bert-cross-encoder --out /tmp/tiny-cross-encoder
    python -m tritonmm_server.tiny.build --arch clip --out /tmp/tiny-clip
"""

from __future__ import annotations

import argparse
import json
import logging
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
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
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES as WHISPER_LANGUAGES
from transformers.utils import logging as transformers_logging

__all__ = [
    "ALL_ARCHS",
    "ARCHS",
    "AUDIO_ARCHS",
    "CONTEXT_SIZE",
    "EMBEDDING_ARCHS",
    "FEATURES",
    "RERANK_ARCHS",
    "SPEECH_ARCHS",
    "build_tiny_model",
]

log = logging.getLogger(__name__)

SEED = 20261121
BuiltT = TypeVar("BuiltT")
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
    features: str = "vision,video"  # the tmm.features of a config that serves it


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


# Qwen2-Audio-7B-Instruct's chat template (also Qwen2AudioProcessor's built-in default):
# an audio part becomes "Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>", and the
# processor expands <|AUDIO|> to one token per 40 ms of sound.
_QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _build_qwen2_audio(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    # The real 30 s window of 128-bin mel frames stays: the encoder's 1500 positions
    # and the processor's 25 audio tokens per second follow from it, and both are
    # what a request exercises. Only the widths are tiny.
    audio_config = {
        "model_type": "qwen2_audio_encoder",
        "d_model": 32,
        "encoder_layers": 2,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "num_mel_bins": 128,
        "max_source_positions": 1500,
    }
    config = Qwen2AudioConfig(
        audio_config=audio_config,
        text_config={**_text_config(tokenizer), "model_type": "qwen2"},
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000, chunk_length=30)
    processor = Qwen2AudioProcessor(feature_extractor, tokenizer, chat_template=template)
    return Qwen2AudioForConditionalGeneration(config), processor


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
    "qwen2-audio": _Arch(
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=_QWEN2_AUDIO_TEMPLATE,
        build=_build_qwen2_audio,
        features="audio",
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


def _bert_config(tokenizer: PreTrainedTokenizerFast, **extra: object) -> BertConfig:
    """The tiny BERT of both the cross-encoder and the sentence embedder."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=_CROSS_ENCODER_CONTEXT,
        pad_token_id=tokenizer.pad_token_id,
        # BERT's 0.02 gives every pair the same score to four digits, and every text
        # nearly the same vector; wider weights tell them apart.
        initializer_range=0.2,
        **extra,
    )


def _build_bert_cross_encoder(dest: Path) -> None:
    tokenizer = _train_wordpiece()
    config = _bert_config(tokenizer, type_vocab_size=2, num_labels=1)
    _save(dest, _seeded(lambda: BertForSequenceClassification(config)), tokenizer)


# --- the sentence embedder ---------------------------------------------------------------------

_EMBED_WINDOW = 128  # sentence_bert_config.json's max_seq_length, below the 512 positions as in MiniLM


def _build_bert_embed(dest: Path) -> None:
    tokenizer = _train_wordpiece()
    config = _bert_config(tokenizer)
    # Sentence embedders mean-pool: no pooler weights.
    _save(dest, _seeded(lambda: BertModel(config, add_pooling_layer=False)), tokenizer)
    # The sentence-transformers layout of all-MiniLM-L6-v2: transformer, mean pooling, normalisation.
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    _write_json(dest / "modules.json", modules)
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": _EMBED_WINDOW, "do_lower_case": False})
    _write_json(dest / "1_Pooling" / "config.json", pooling)
    (dest / "2_Normalize").mkdir(exist_ok=True)


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


# --- the image-text dual encoder ------------------------------------------------------------

_CLIP_WINDOW = 77  # CLIP's text positions, special tokens included
_CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _clip_tokenizer() -> PreTrainedTokenizerFast:
    """CLIP's text side: byte-level BPE, every text wrapped in start and end tokens.

    Trained like the chat tokenizers; only the post-processor differs, because the
    text tower pools at the end token (CLIP's ``eos_token_id``), which must be there.
    """
    start, end = _CLIP_SPECIALS
    spec = _Arch(_CLIP_SPECIALS, eos_token=end, pad_token=end, chat_template="", build=_no_build, bos_token=start)
    tokenizer = _train_tokenizer(spec)
    ids = [(start, tokenizer.convert_tokens_to_ids(start)), (end, tokenizer.convert_tokens_to_ids(end))]
    tokenizer.backend_tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{start} $A {end}", pair=f"{start} $A {end} $B {end}", special_tokens=ids
            ),
        ]
    )
    tokenizer.model_max_length = _CLIP_WINDOW
    tokenizer.chat_template = None  # not a chat model: save no template
    return tokenizer


def _no_build(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    raise NotImplementedError("built by _build_clip")


def _build_clip(dest: Path) -> None:
    tokenizer = _clip_tokenizer()
    # 32 px images in 8 px patches: a 4x4 grid (plus CLIP's class token), like ViT-B/32's 7x7 at 224 px.
    image_size, patch_size = 32, 8
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": _CLIP_WINDOW,
        # CLIP pools at the first eos_token_id (unless it is the legacy 2): it must be the tokenizer's end token.
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = CLIPConfig(
        text_config=text_config, vision_config=_vision_config(image_size, patch_size), projection_dim=32
    )
    model = _seeded(lambda: CLIPModel(config))
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    _save(dest, model, CLIPProcessor(image_processor, tokenizer))


# --- the speech recogniser ---------------------------------------------------------------------

# The first languages of Whisper's own list, in its order: WhisperTokenizer finds the
# token of a language at <|startoftranscript|> + 1 + its index there, so the order matters.
_WHISPER_LANGUAGES = tuple(WHISPER_LANGUAGES)[:8]
_WHISPER_EOT, _WHISPER_SOT = "<|endoftext|>", "<|startoftranscript|>"
# Whisper's control tokens after the text vocabulary, in Whisper's order (no timestamp tokens:
# the server decodes without them).
_WHISPER_CONTROLS = (
    _WHISPER_EOT,
    _WHISPER_SOT,
    *(f"<|{code}|>" for code in _WHISPER_LANGUAGES),
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
# The decoder's window (448 in the real models). Random weights rarely emit the end
# token, so this is also what bounds each generate call.
_WHISPER_TEXT_POSITIONS = 128


def _whisper_tokenizer() -> WhisperTokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_CORPUS, trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    for token in _WHISPER_CONTROLS:
        vocab[token] = len(vocab)
    # tokenizers writes a merge as ["a", "b"] (older versions as "a b"); WhisperTokenizer wants tuples.
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=_WHISPER_EOT,
        bos_token=_WHISPER_EOT,
        eos_token=_WHISPER_EOT,
        pad_token=_WHISPER_EOT,
        model_max_length=_WHISPER_TEXT_POSITIONS,
    )
    tokenizer.add_tokens(list(_WHISPER_CONTROLS), special_tokens=True)  # special: dropped when decoding text
    return tokenizer


def _build_whisper(dest: Path) -> None:
    tokenizer = _whisper_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _WHISPER_CONTROLS}
    eot, sot = ids[_WHISPER_EOT], ids[_WHISPER_SOT]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # 3000 mel frames (30 s) halved by the strided conv: the real window
        max_target_positions=_WHISPER_TEXT_POSITIONS,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    model = _seeded(lambda: WhisperForConditionalGeneration(config))
    # Built explicitly, with _from_model_config=False: a generation config derived from
    # the model config loses lang_to_id and task_to_id when it is saved and reloaded.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=_WHISPER_TEXT_POSITIONS,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in _WHISPER_LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        # As in the real checkpoints: control tokens never appear in the text, and
        # the text starts with neither a bare space nor the end token.
        suppress_tokens=[i for token, i in ids.items() if token != _WHISPER_EOT],
        begin_suppress_tokens=[tokenizer.convert_tokens_to_ids("Ġ"), eot],
        _from_model_config=False,
    )
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    _save(dest, model, processor)


# Archs that are not chat models: built by a function of their own.
_OTHER_ARCHS: dict[str, Callable[[Path], None]] = {
    "bert-cross-encoder": _build_bert_cross_encoder,
    "bert-embed": _build_bert_embed,
    "clip": _build_clip,
    "whisper": _build_whisper,
}
AUDIO_ARCHS = tuple(name for name, spec in _ARCHS.items() if "audio" in spec.features)  # chat with native audio
ARCHS = tuple(name for name in _ARCHS if name not in AUDIO_ARCHS)  # the vision-language chat models
FEATURES = {name: spec.features for name, spec in _ARCHS.items()}  # tmm.features per chat arch
RERANK_ARCHS = ("bert-cross-encoder",)
EMBEDDING_ARCHS = ("bert-embed", "clip")  # text_embedding and multimodal_embedding
SPEECH_ARCHS = ("whisper",)  # speech_to_text
ALL_ARCHS = (*_ARCHS, *_OTHER_ARCHS)


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
    model, processor = _seeded(lambda: spec.build(tokenizer, spec.chat_template))
    # An explicit generation config (not derived from the model config) so that
    # a reload sees exactly these ids.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        _from_model_config=False,
    )
    _save(dest, model, processor)
    return dest


def _seeded(build: Callable[[], BuiltT]) -> BuiltT:
    """``build()`` with torch's RNG seeded: a reproducible init.

    fork_rng keeps the caller's global RNG untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def _save(dest: Path, model: PreTrainedModel, processor: Any) -> None:
    """Write the checkpoint directory: the model and its tokenizer or processor."""
    dest.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()  # a one-shard bar is noise in launcher output
    model.save_pretrained(dest)
    processor.save_pretrained(dest)


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
