# SPDX-License-Identifier: Apache-2.0
"""Engine of the bundled image_text_match model: which of several labels fits an image, and where.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/image_text_match/1/model.py`` only moves tensors in and out of it.

CLIP's zero-shot classification, on the same CLIP-family checkpoint and code as the
multimodal-embedding model (:class:`~tritonmm_server.engines.multimodal.MultimodalEngine`;
each Triton model loads its own copy, about 600 MB for ViT-B/32 in float32):

* ``similarities``: the cosine of the image's vector with each label's vector,
  what the multimodal-embedding model's vectors give (up to resampling: the
  towers see the image already scaled to :data:`HEATMAP_SIDE`);
* ``scores``: ``softmax(exp(logit_scale) * cosines)`` over the labels, the
  probabilities CLIP was trained to produce (``exp(logit_scale)`` is 100 for the
  openai checkpoints; :data:`FALLBACK_LOGIT_SCALE` for a model without one);
* ``heatmap_png``: the image, scaled down to :data:`HEATMAP_SIDE`, overlaid with the
  patch-level cosines of the best-scoring label (a blue-to-red ramp, min-max
  normalised over the grid, upsampled smoothly). CLIP sees only the centre square
  of an image (its processor crops), so the heat covers that square and the rest
  of the picture is shown dimmed: the model did not look there.

The image is decoded once, for both the towers and the picture. Bad input (no
image, undecodable bytes, labels that are not 1..64 non-empty strings) raises
:class:`~tritonmm_server.backend.errors.InputError`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tritonmm.contract import MATCH_IMAGE, MATCH_LABELS
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.multimodal import MultimodalEngine

__all__ = ["MatchEngine", "MatchResult", "parse_labels"]

MAX_LABELS = 64
MAX_LABEL_CHARS = 1000  # CLIP reads 77 tokens; a longer label is cut there anyway
HEATMAP_SIDE = 768  # the longest side of the heat-map picture
HEAT_ALPHA = 0.5  # how much of the colour ramp covers the image
OUTSIDE_DIM = 0.5  # brightness kept where the model did not look
# openai CLIP's learned exp(logit_scale) ends at this value (the training clamps it there).
FALLBACK_LOGIT_SCALE = 100.0
# The colour ramp, cold to hot: blue, cyan, green, yellow, red at evenly spaced stops.
_RAMP = np.array([[0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]], dtype=np.float32)


@dataclass(frozen=True)
class MatchResult:
    scores: np.ndarray  # float32 [n]: zero-shot probabilities over the labels, summing to 1
    similarities: np.ndarray  # float32 [n]: cosine of the image and each label, in [-1, 1]
    best: int  # index of the best-scoring label (the first of equals)
    heatmap_png: bytes  # the image with the best label's patch similarity over it


def parse_labels(raw: bytes | str) -> list[str]:
    """LABELS_JSON as a list of 1..64 non-empty strings; InputError naming what is wrong."""
    name = MATCH_LABELS.name
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{name} is not valid UTF-8: {exc}") from None
    try:
        labels = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(
            f'{name} is not valid JSON: {exc}; send a JSON list of texts, e.g. ["a cat", "a dog"]'
        ) from None
    if not isinstance(labels, list):
        raise InputError(f"{name} must be a JSON list of texts, got {type(labels).__name__}")
    if not 1 <= len(labels) <= MAX_LABELS:
        raise InputError(f"{name} must hold 1 to {MAX_LABELS} labels, got {len(labels)}")
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"label {index} must be a non-empty string, got {label!r}")
        if len(label) > MAX_LABEL_CHARS:
            raise InputError(f"label {index} is {len(label)} characters long, more than {MAX_LABEL_CHARS}")
        try:
            label.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
            raise InputError(f"label {index} is not valid Unicode text") from None
    return labels


class MatchEngine:
    """A CLIP checkpoint, loaded once; calls are serialised by the embedding engine's lock."""

    def __init__(self, model_dir: str | Path, *, num_threads: int | None = None) -> None:
        self.clip = MultimodalEngine(model_dir, num_threads=num_threads)
        scale = self.clip.logit_scale
        self.logit_scale = FALLBACK_LOGIT_SCALE if scale is None else scale

    def warm_up(self) -> None:
        """One match, so that the first request does not pay for torch's start-up.

        Also refuses a dual encoder without patch outputs (SigLIP): ValueError.
        """
        blank = io.BytesIO()
        Image.new("RGB", (8, 8), (255, 255, 255)).save(blank, format="PNG")
        self.match(blank.getvalue(), ["warm up"])

    def match(self, image: bytes, labels: Sequence[str]) -> MatchResult:
        """Score the labels against the image and draw the best one's heat map."""
        picture = self.clip.decode_image(image, MATCH_IMAGE.name, min_side=HEATMAP_SIDE)
        picture.thumbnail((HEATMAP_SIDE, HEATMAP_SIDE))  # bicubic: the picture is a backdrop for the colours
        cosines, patch_cosines = self.clip.image_text_cosines(picture, labels)
        similarities = np.clip(cosines, -1.0, 1.0)
        scores = _softmax(self.logit_scale * similarities.astype(np.float64)).astype(np.float32)
        best = int(np.argmax(scores))
        heat = _overlay(picture, patch_cosines[best], self.clip.seen_box(*picture.size))
        return MatchResult(scores, similarities, best, _png(heat))


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max())  # shifted: exp(100) overflows float32
    return exp / exp.sum()


def _overlay(picture: Image.Image, grid: np.ndarray, box: tuple[float, float, float, float]) -> Image.Image:
    """The picture, dimmed outside ``box``, with the grid coloured over ``box``."""
    left, top, right, bottom = (round(v) for v in box)
    width, height = max(1, right - left), max(1, bottom - top)
    low, high = float(grid.min()), float(grid.max())
    # Min-max over the grid: the map says where the label fits best within this image, not how well.
    norm = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
    smooth = Image.fromarray(norm.astype(np.float32)).resize((width, height), Image.Resampling.BICUBIC)
    colours = _colour(np.clip(np.asarray(smooth), 0.0, 1.0))
    base = np.asarray(picture, dtype=np.float32)
    out = base * OUTSIDE_DIM
    window = (slice(top, top + height), slice(left, left + width))
    region = base[window]  # the box clipped to the picture
    heat = colours[: region.shape[0], : region.shape[1]]
    out[window] = (1 - HEAT_ALPHA) * region + HEAT_ALPHA * heat
    return Image.fromarray(np.round(out).astype(np.uint8))


def _colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as RGB along the ramp, linearly between its stops: ``[h, w, 3]`` float32."""
    stops = np.linspace(0.0, 1.0, len(_RAMP))
    return np.stack([np.interp(values, stops, _RAMP[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
