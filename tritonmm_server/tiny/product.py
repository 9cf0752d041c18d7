"""The two tiny builds the product serves when no real checkpoint is given.

``idefics3`` is the chat model, of the HuggingFaceTB/SmolVLM-256M-Instruct kind: an
``Idefics3ForConditionalGeneration`` with its ``Idefics3Processor`` and SmolVLM's chat
template, loaded through ``AutoProcessor`` / ``AutoModelForMultimodalLM``.

``clip`` is the multimodal-embedding and image-text match model, an image-text dual
encoder of the openai/clip-vit-base-patch32 kind (a ``CLIPModel`` with a
``CLIPProcessor``: PIL image processor, byte-level BPE tokenizer that wraps each text in
``<|startoftext|>`` / ``<|endoftext|>``, a 77-token window), loaded through ``AutoModel``
with ``AutoTokenizer`` / ``AutoProcessor``.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import processors
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)

from tritonmm_server.tiny.common import (
    ChatArch,
    build_chat,
    save,
    seeded,
    text_config,
    train_bpe_tokenizer,
    vision_config,
)

# --- idefics3: the chat model -------------------------------------------------------------

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

_IDEFICS3_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)


def _idefics3_model(tokenizer: PreTrainedTokenizerFast, template: str) -> tuple[PreTrainedModel, ProcessorMixin]:
    # 64 px images in 8 px patches, pixel-shuffled by 2: 16 tokens per image.
    # Splitting is off, so an image costs 16 + 3 wrapper tokens whatever its size.
    image_size, patch_size, scale_factor = 64, 8, 2
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    config = Idefics3Config(
        vision_config=vision_config(image_size, patch_size),
        text_config=text_config(tokenizer),
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


IDEFICS3 = ChatArch(
    special_tokens=_IDEFICS3_SPECIALS,
    eos_token="<end_of_utterance>",
    pad_token="<|endoftext|>",
    chat_template=_IDEFICS3_TEMPLATE,
    build=_idefics3_model,
)


def build_idefics3(dest: Path) -> None:
    build_chat(IDEFICS3, dest)


# --- clip: the image-text dual encoder (multimodal embedding, image-text match) ---------------

_CLIP_WINDOW = 77  # CLIP's text positions, special tokens included
_CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _clip_tokenizer() -> PreTrainedTokenizerFast:
    """CLIP's text side: byte-level BPE, every text wrapped in start and end tokens.

    Trained like the chat tokenizers; only the post-processor differs, because the
    text tower pools at the end token (CLIP's ``eos_token_id``), which must be there.
    """
    start, end = _CLIP_SPECIALS
    # Not a chat model: no chat template is saved.
    tokenizer = train_bpe_tokenizer(
        _CLIP_SPECIALS, eos_token=end, pad_token=end, bos_token=start, model_max_length=_CLIP_WINDOW
    )
    ids = [(start, tokenizer.convert_tokens_to_ids(start)), (end, tokenizer.convert_tokens_to_ids(end))]
    tokenizer.backend_tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{start} $A {end}", pair=f"{start} $A {end} $B {end}", special_tokens=ids
            ),
        ]
    )
    return tokenizer


def build_clip(dest: Path) -> None:
    tokenizer = _clip_tokenizer()
    # 32 px images in 8 px patches: a 4x4 grid (plus CLIP's class token), like ViT-B/32's 7x7 at 224 px.
    image_size, patch_size = 32, 8
    text_tower = {
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
    config = CLIPConfig(text_config=text_tower, vision_config=vision_config(image_size, patch_size), projection_dim=32)
    model = seeded(lambda: CLIPModel(config))
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    save(dest, model, CLIPProcessor(image_processor, tokenizer))
