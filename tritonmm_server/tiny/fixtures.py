"""Tiny builds the tests use and the product never plans: other checkpoint kinds the engines take.

``llava`` is a second vision chat architecture (llava-hf/llava-1.5-7b-hf's kind: a CLIP
tower in front of the decoder, ``LlavaProcessor``), so the chat engine is tested on more
than one processor and template.

``qwen2-audio`` is a chat model that hears audio natively, of the
Qwen/Qwen2-Audio-7B-Instruct kind: a Whisper-style audio encoder in front of a
Qwen2 decoder, with a ``Qwen2AudioProcessor`` (128-bin ``WhisperFeatureExtractor``,
byte-level BPE, the instruct chat template), loaded through ``AutoProcessor`` /
``AutoModelForMultimodalLM``. It takes no images; a config serving it declares
``tmm.features`` ``audio`` (``ChatArch.features``).

``bert-cross-encoder`` is a reranker of the cross-encoder/ms-marco-MiniLM-L-6-v2
kind: a ``BertForSequenceClassification`` with one label and a WordPiece tokenizer
whose pair template gives the document token type 1, loaded through
``AutoModelForSequenceClassification`` / ``AutoTokenizer``. ``bert-embed`` is a
sentence-embedding checkpoint of the all-MiniLM-L6-v2 kind (a ``BertModel`` with the
same WordPiece tokenizer, 32-dimensional, and the sentence-transformers files that
declare mean pooling and a 128-token window).

``whisper`` is a speech recogniser of the openai/whisper-tiny kind: a
``WhisperForConditionalGeneration`` (80 mel bins, the real 30 s window) with a
``WhisperProcessor`` (``WhisperFeatureExtractor``, a byte-level BPE
``WhisperTokenizer`` with Whisper's control tokens) and a generation config with the
language and task tokens of a multilingual model (eight languages), loaded through
``AutoProcessor`` / ``AutoModelForSpeechSeq2Seq``.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    CLIPImageProcessorPil,
    GenerationConfig,
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

from tritonmm_server.tiny.common import (
    BPE_VOCAB_SIZE,
    CORPUS,
    ChatArch,
    save,
    seeded,
    text_config,
    vision_config,
    write_json,
)

# --- llava: a second vision chat architecture -------------------------------------------

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


def _llava_model(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    # A 32 px CLIP tower in 8 px patches: 16 patch tokens (the CLS token is dropped).
    image_size, patch_size = 32, 8
    config = LlavaConfig(
        vision_config=vision_config(image_size, patch_size, model_type="clip_vision_model", projection_dim=32),
        text_config=text_config(tokenizer),
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


LLAVA = ChatArch(
    special_tokens=("<s>", "</s>", "<pad>", "<image>"),
    eos_token="</s>",
    pad_token="<pad>",
    bos_token="<s>",
    chat_template=_LLAVA_TEMPLATE,
    build=_llava_model,
)


# --- qwen2-audio: chat with native audio ------------------------------------------------

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


def _qwen2_audio_model(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
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
        text_config={**text_config(tokenizer), "model_type": "qwen2"},
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000, chunk_length=30)
    processor = Qwen2AudioProcessor(feature_extractor, tokenizer, chat_template=template)
    return Qwen2AudioForConditionalGeneration(config), processor


QWEN2_AUDIO = ChatArch(
    special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"),
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    chat_template=_QWEN2_AUDIO_TEMPLATE,
    build=_qwen2_audio_model,
    features="audio",
)


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
        {word for text in CORPUS for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
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


def build_bert_cross_encoder(dest: Path) -> None:
    tokenizer = _train_wordpiece()
    config = _bert_config(tokenizer, type_vocab_size=2, num_labels=1)
    save(dest, seeded(lambda: BertForSequenceClassification(config)), tokenizer)


# --- the sentence embedder ---------------------------------------------------------------------

_EMBED_WINDOW = 128  # sentence_bert_config.json's max_seq_length, below the 512 positions as in MiniLM


def build_bert_embed(dest: Path) -> None:
    tokenizer = _train_wordpiece()
    config = _bert_config(tokenizer)
    # Sentence embedders mean-pool: no pooler weights.
    save(dest, seeded(lambda: BertModel(config, add_pooling_layer=False)), tokenizer)
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
    write_json(dest / "modules.json", modules)
    write_json(dest / "sentence_bert_config.json", {"max_seq_length": _EMBED_WINDOW, "do_lower_case": False})
    write_json(dest / "1_Pooling" / "config.json", pooling)
    (dest / "2_Normalize").mkdir(exist_ok=True)


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
        vocab_size=BPE_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(CORPUS, trainer)
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


def build_whisper(dest: Path) -> None:
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
    model = seeded(lambda: WhisperForConditionalGeneration(config))
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
    save(dest, model, processor)
