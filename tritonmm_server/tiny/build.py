"""Build a tiny checkpoint by arch name: the product's two and the test-only ones, one registry.

    python -m tritonmm_server.tiny --arch tool-caller --out /tmp/tiny-tool-caller
    python -m tritonmm_server.tiny --arch bert-cross-encoder --out /tmp/tiny-cross-encoder

:data:`PRODUCT_ARCHS` are what the launcher serves without a checkpoint: the
tool-calling chat model (:mod:`.tool_caller`, an agent can use it out of the box) and
CLIP (:mod:`.product`); :data:`FIXTURE_ARCHS` exist for the tests (:mod:`.fixtures`,
and ``idefics3``, SmolVLM's own template, which renders no tools).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tritonmm_server.tiny import fixtures, product
from tritonmm_server.tiny.common import ChatArch, build_chat
from tritonmm_server.tiny.tool_caller import build_tool_caller

__all__ = [
    "ALL_ARCHS",
    "ARCHS",
    "AUDIO_ARCHS",
    "FEATURES",
    "FIXTURE_ARCHS",
    "PRODUCT_ARCHS",
    "build_tiny_model",
]

log = logging.getLogger(__name__)

# The chat architectures, and the tmm.features a config serving each declares.
_CHAT: dict[str, ChatArch] = {
    "idefics3": product.IDEFICS3,
    "llava": fixtures.LLAVA,
    "qwen2-audio": fixtures.QWEN2_AUDIO,
}
_BUILDERS: dict[str, Callable[[Path], None]] = {
    **{name: partial(build_chat, spec) for name, spec in _CHAT.items()},
    "tool-caller": build_tool_caller,
    "clip": product.build_clip,
    "bert-cross-encoder": fixtures.build_bert_cross_encoder,
    "bert-embed": fixtures.build_bert_embed,
    "whisper": fixtures.build_whisper,
}
PRODUCT_ARCHS = ("tool-caller", "clip")
FIXTURE_ARCHS = tuple(name for name in _BUILDERS if name not in PRODUCT_ARCHS)
ALL_ARCHS = tuple(_BUILDERS)
AUDIO_ARCHS = tuple(name for name, spec in _CHAT.items() if "audio" in spec.features)  # chat with native audio
ARCHS = tuple(name for name in _CHAT if name not in AUDIO_ARCHS)  # the vision-language chat models
# tmm.features per chat arch (the tool caller is an Idefics3 with the same image path).
FEATURES = {**{name: spec.features for name, spec in _CHAT.items()}, "tool-caller": "vision,video"}


def build_tiny_model(arch: str, dest: Path) -> Path:
    """Build the tiny ``arch`` model and save it as a checkpoint directory at ``dest``.

    Returns ``dest``. Raises ``ValueError`` for an unknown arch.
    """
    builder = _BUILDERS.get(arch)
    if builder is None:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ALL_ARCHS)}")
    dest = Path(dest)
    builder(dest)
    return dest


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonmm_server.tiny", description=__doc__.split("\n\n")[0])
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
