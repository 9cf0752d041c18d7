"""A real-size chat checkpoint with random weights, for benchmarks: SmolVLM-256M-Instruct's shape.

The sizes are those of HuggingFaceTB/SmolVLM-256M-Instruct's published configuration
(an Idefics3 model): a SigLIP base-patch16-512 vision tower (768 wide, 12 layers,
12 heads), pixel shuffle by 4 (64 image tokens per 512-pixel image), and the
SmolLM2-135M decoder (576 wide, 30 layers, 9 query / 3 key-value heads, 1536 MLP,
49 280-token vocabulary, RoPE theta 100 000). Only the weights are random, so
every forward pass costs what the real checkpoint's costs. The tokenizer is the
tiny build's (the answers are gibberish either way), filled up to the 49 280 ids
with one added token per id, so that every generated token decodes to text: a
stream then shows each token as a chunk, as a real checkpoint's does.

    .venv-server/bin/python -m devtools.realsize_chat DEST [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import GenerationConfig, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor

try:  # transformers >= 5.20 names the PIL image processors apart
    from transformers import Idefics3ImageProcessorPil as ImageProcessor
except ImportError:  # an older transformers, e.g. on a GPU machine's own image
    from transformers import Idefics3ImageProcessor as ImageProcessor

from tritonmm_server.tiny.common import save, seeded, train_bpe_tokenizer
from tritonmm_server.tiny.product import IDEFICS3

IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR = 512, 16, 4
VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
TEXT = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49280,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}

# Written last: a folder without it (an interrupted or older build) is built again.
STAMP, BUILD = "realsize.stamp", "2: every id decodes to text"


def build_smolvlm_256m_shape(dest: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Build (once) the checkpoint at ``dest``; returns ``dest``."""
    if (dest / STAMP).exists() and (dest / STAMP).read_text() == BUILD:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    spec = IDEFICS3
    tokenizer = train_bpe_tokenizer(
        spec.special_tokens, eos_token=spec.eos_token, pad_token=spec.pad_token, chat_template=spec.chat_template
    )
    tokenizer.add_tokens([f"⟨{i}⟩" for i in range(len(tokenizer), TEXT["vocab_size"])])
    text = {**TEXT, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = Idefics3Config(
        vision_config={**VISION, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
        text_config=text,
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = ImageProcessor(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}
    )
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=spec.chat_template
    )
    model = seeded(lambda: Idefics3ForConditionalGeneration(config)).to(dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, _from_model_config=False
    )
    save(dest, model, processor)
    (dest / STAMP).write_text(BUILD)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    build_smolvlm_256m_shape(args.dest, getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
