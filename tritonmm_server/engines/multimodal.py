"""Engine of the bundled multimodal-embedding model: texts and images in one vector space.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/multimodal_embedding/1/model.py`` only moves tensors in and out of it.

The checkpoint is a CLIP-family dual encoder (openai/clip-vit-base-patch32; SigLIP
loads through the same calls), read with ``AutoModel`` / ``AutoProcessor``. A text's
vector is ``get_text_features``, an image's ``get_image_features``, both
L2-normalised, so the cosine of a text and an image is their dot product: what the
plugin's multimodal rerank and the image-text matching tool rely on.

Two steps, like the text-embedding engine, so that a Triton model can reject one
request of a dynamic batch and still serve the others at once:

* :meth:`MultimodalEngine.prepare` validates one request's rows: the content type
  (``text`` or ``image``), UTF-8 for texts, a decodable image file for images.
  Anything wrong raises :class:`InputError` naming the row. Texts are tokenized
  here, cut to the text window (77 tokens for CLIP: its position table ends
  there, and CLIP has no long-text mode; the end token is kept, since the text
  tower pools there).
* :meth:`MultimodalEngine.embed_prepared` embeds any number of prepared rows:
  all texts in one forward pass of the text tower, all images in one of the vision
  tower (each in chunks that bound memory), the vectors put back in row order.

Token counts: a text counts the tokens the text tower read (special tokens
included, so a cut text counts exactly the window); an image counts the patches
of the vision tower's grid, ``(image_size / patch_size)^2`` (49 for ViT-B/32),
whatever the image's size, since every image is resized to the tower's input.

:meth:`MultimodalEngine.patch_similarity` scores each patch of an image against a
text, for a heat map of where the text matches; :meth:`MultimodalEngine.image_text_cosines`
scores a decoded image and its patches against several texts in one pass of each
tower (the image_text_match model, ``tritonmm_server.engines.match``).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from tritonmm.contract import CONTENT_IMAGE, CONTENT_TEXT, CONTENT_TYPES
from tritonmm_server.backend.errors import InputError
from tritonmm_server.checkpoints.context import encoder_window
from tritonmm_server.engines.embedding import row_text
from tritonmm_server.media.image import decode_image

__all__ = ["MultimodalEngine", "PreparedRow"]

# Rows per forward pass: bounds activation memory for large calls to the engine
# (Triton's max_batch_size already bounds what one execute() gets).
TEXT_CHUNK = 256
IMAGE_CHUNK = 32
# SigLIP's text tower pools the last position and was trained on texts padded to
# the full window, so its texts must be padded that way; CLIP pools at the end token.
_PAD_TO_WINDOW = ("siglip",)


@dataclass(frozen=True)
class PreparedRow:
    """One validated row, ready for :meth:`MultimodalEngine.embed_prepared`.

    A text row carries its token ids (special tokens included, cut to the window),
    an image row the decoded RGB image. ``tokens`` is what the row reports.
    """

    kind: str  # CONTENT_TEXT or CONTENT_IMAGE
    tokens: int
    input_ids: tuple[int, ...] = ()
    image: Image.Image | None = None


class MultimodalEngine:
    """A CLIP-family checkpoint, loaded once; calls are serialised."""

    def __init__(self, model_dir: str | Path, *, num_threads: int | None = None) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)  # process-wide: one engine per stub process
        self._dir = Path(model_dir)
        self._processor = AutoProcessor.from_pretrained(self._dir)
        self._model = AutoModel.from_pretrained(self._dir, dtype=torch.float32).eval()
        config = self._model.config
        if not all(hasattr(self._model, m) for m in ("get_text_features", "get_image_features")):
            raise ValueError(
                f"{config.model_type} is not an image-text dual encoder (no get_text_features / "
                f"get_image_features): use a CLIP-family checkpoint such as openai/clip-vit-base-patch32"
            )
        self._tokenizer = self._processor.tokenizer
        self._image_processor = self._processor.image_processor
        window = encoder_window(self._dir)
        if window is None:
            raise ValueError("the checkpoint states no text window (text_config.max_position_embeddings)")
        self._context_size = window
        vision = config.vision_config
        self._grid = int(vision.image_size) // int(vision.patch_size)
        self._pad_to_window = config.model_type in _PAD_TO_WINDOW
        self._lock = threading.Lock()  # the Rust tokenizer and torch's thread pool are shared

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def architecture(self) -> str:
        return str(self._model.config.model_type)

    @property
    def context_size(self) -> int:
        """The most tokens (special tokens included) the text tower reads; longer texts are cut."""
        return self._context_size

    @property
    def dimensions(self) -> int:
        config = self._model.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)

    @property
    def grid_side(self) -> int:
        """Patches per side of the vision tower's input (7 for ViT-B/32 at 224 px)."""
        return self._grid

    @property
    def image_tokens(self) -> int:
        """What an image row reports as its token count: the patches of the grid."""
        return self._grid * self._grid

    @property
    def logit_scale(self) -> float | None:
        """The learned temperature of the contrastive loss, ``exp(logit_scale)`` (100 for openai CLIP); None if absent."""
        scale = getattr(self._model, "logit_scale", None)
        return None if scale is None else float(scale.detach().exp())

    def warm_up(self) -> None:
        """One text and one image, so the first request does not pay for torch's start-up."""
        blank = io.BytesIO()
        Image.new("RGB", (8, 8), (255, 255, 255)).save(blank, format="PNG")
        self.embed([b"warm up", blank.getvalue()], [CONTENT_TEXT, CONTENT_IMAGE])

    # --- the two steps -------------------------------------------------------------------

    def prepare(self, contents: Sequence[str | bytes], content_types: Sequence[str | bytes]) -> list[PreparedRow]:
        """Validate one request's rows, decode images and tokenize texts.

        Raises InputError naming the first bad row (0-based, within this call).
        """
        if len(content_types) != len(contents):
            raise InputError(
                f"{len(contents)} content row(s) but {len(content_types)} content type(s): give one per row"
            )
        kinds = [_content_type(row, raw) for row, raw in enumerate(content_types)]
        prepared: dict[int, PreparedRow] = {}
        texts: list[tuple[int, str]] = []
        for row, (kind, raw) in enumerate(zip(kinds, contents, strict=True)):
            if kind == CONTENT_TEXT:
                texts.append((row, row_text(row, raw)))
            else:
                prepared[row] = PreparedRow(CONTENT_IMAGE, self.image_tokens, image=self._decode(f"row {row}", raw))
        if texts:
            with self._lock:
                encoded = self._tokenizer(
                    [text for _, text in texts], truncation=True, max_length=self._context_size, verbose=False
                )["input_ids"]
            for (row, _), ids in zip(texts, encoded, strict=True):
                prepared[row] = PreparedRow(CONTENT_TEXT, len(ids), input_ids=tuple(ids))
        return [prepared[row] for row in range(len(contents))]

    def embed_prepared(self, rows: Sequence[PreparedRow]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors ``[len(rows), dimensions]`` (float32) and token counts (int32), in row order."""
        vectors = np.zeros((len(rows), self.dimensions), dtype=np.float32)
        texts = [i for i, row in enumerate(rows) if row.kind == CONTENT_TEXT]
        images = [i for i, row in enumerate(rows) if row.kind == CONTENT_IMAGE]
        with self._lock:
            for chunk in _chunks(texts, TEXT_CHUNK):
                vectors[chunk] = self._text_vectors([rows[i].input_ids for i in chunk])
            for chunk in _chunks(images, IMAGE_CHUNK):
                vectors[chunk] = self._image_vectors([rows[i].image for i in chunk])
        return vectors, np.array([row.tokens for row in rows], dtype=np.int32)

    def embed(
        self, contents: Sequence[str | bytes], content_types: Sequence[str | bytes]
    ) -> tuple[np.ndarray, list[int]]:
        """Unit vectors ``[len(contents), dimensions]`` and each row's token count."""
        vectors, tokens = self.embed_prepared(self.prepare(contents, content_types))
        return vectors, tokens.tolist()

    # --- the heat map -------------------------------------------------------------------------

    def patch_similarity(self, image: bytes, text: str) -> np.ndarray:
        """Cosine of each image patch with the text: a ``[grid_side, grid_side]`` float32 grid.

        Each patch token of the vision tower's last layer goes through the same
        layer norm and projection as CLIP's pooled class token, which puts it in
        the shared space (the usual CLIP patch-relevance map). CLIP only: SigLIP
        pools with an attention head that has no per-patch equivalent.
        """
        self._patch_layers()  # refuse a non-CLIP checkpoint before decoding anything
        picture = self._decode("the image", image)
        return self.image_text_cosines(picture, [text])[1][0]

    def image_text_cosines(self, picture: Image.Image, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cosine of the image with each text ``[n]`` and of each patch with each text ``[n, grid, grid]``.

        One pass of each tower: the image's vector (what ``get_image_features``
        gives) and the patch vectors come out of the same vision pass. Texts longer
        than the window are cut as in :meth:`prepare`. CLIP only, as
        :meth:`patch_similarity`.
        """
        post_layernorm, projection = self._patch_layers()
        rows = self.prepare(list(texts), [CONTENT_TEXT] * len(texts))
        with self._lock, torch.inference_mode():
            text_vectors = torch.from_numpy(self._text_vectors([row.input_ids for row in rows]))
            pixels = self._image_processor(images=[picture], return_tensors="pt")["pixel_values"]
            vision = self._model.vision_model(pixel_values=pixels)
            # CLIP's pooled output is post_layernorm(class token); the projection puts both in the shared space.
            image = torch.nn.functional.normalize(projection(vision.pooler_output[0]), dim=-1)
            patches = projection(post_layernorm(vision.last_hidden_state[0, -self.image_tokens :]))  # no class token
            patches = torch.nn.functional.normalize(patches, dim=-1)
            cosines = text_vectors @ image
            patch_cosines = (text_vectors @ patches.T).reshape(len(rows), self._grid, self._grid)
        return cosines.numpy().astype(np.float32), patch_cosines.numpy().astype(np.float32)

    def seen_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The part of a ``width`` x ``height`` image that the vision tower sees, as (left, top, right, bottom).

        CLIP's processor resizes the shortest side and crops the centre square, so
        the patch grid covers that square only; a processor that resizes to a fixed
        size without cropping sees the whole image.
        """
        processor = self._image_processor
        shortest = _size_value(processor.size, "shortest_edge") if getattr(processor, "do_resize", True) else None
        crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None
        if not shortest or crop is None:
            return 0.0, 0.0, float(width), float(height)
        scale = min(width, height) / shortest  # original pixels per resized pixel
        seen_w = min(float(width), (_size_value(crop, "width") or shortest) * scale)
        seen_h = min(float(height), (_size_value(crop, "height") or shortest) * scale)
        left, top = (width - seen_w) / 2, (height - seen_h) / 2
        return left, top, left + seen_w, top + seen_h

    def decode_image(self, raw: bytes, where: str, *, min_side: int | None = None) -> Image.Image:
        """An image file as an upright RGB image, or InputError naming ``where``.

        A JPEG decodes at a reduced scale that still covers ``min_side`` pixels a
        side (default: the vision tower's input), which is much faster for photos.
        """
        return self._decode(where, raw, draft_side=min_side)

    def _patch_layers(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        post_layernorm = getattr(self._model.vision_model, "post_layernorm", None)
        projection = getattr(self._model, "visual_projection", None)
        if post_layernorm is None or projection is None:
            raise ValueError(f"patch similarity needs a CLIP checkpoint, this one is {self.architecture}")
        return post_layernorm, projection

    # --- internals --------------------------------------------------------------------------

    @torch.inference_mode()
    def _text_vectors(self, ids: list[tuple[int, ...]]) -> np.ndarray:
        padding = "max_length" if self._pad_to_window else "longest"
        batch = self._tokenizer.pad(
            {"input_ids": [list(i) for i in ids]}, padding=padding, max_length=self._context_size, return_tensors="pt"
        )
        output = self._model.get_text_features(**batch)
        return _unit(output)

    @torch.inference_mode()
    def _image_vectors(self, images: list[Image.Image | None]) -> np.ndarray:
        pixels = self._image_processor(images=images, return_tensors="pt")["pixel_values"]
        return _unit(self._model.get_image_features(pixel_values=pixels))

    def _decode(self, where: str, raw: str | bytes, *, draft_side: int | None = None) -> Image.Image:
        """An image file as an upright RGB image; InputError naming ``where`` otherwise."""
        # JPEG decodes at 1/2..1/8 scale when that still covers the tower's input: much faster.
        side = draft_side or int(self._model.config.vision_config.image_size)
        return decode_image(raw, where, draft_side=side, hint=f", or use content type {CONTENT_TEXT!r}")


def _unit(features: object) -> np.ndarray:
    """L2-normalised float32 rows of ``get_*_features``' result.

    transformers 5 returns a model output whose ``pooler_output`` is the projected
    feature; 4.x returned the tensor itself.
    """
    tensor = features if isinstance(features, torch.Tensor) else features.pooler_output  # type: ignore[attr-defined]
    return torch.nn.functional.normalize(tensor.float(), p=2, dim=-1).numpy()


def _size_value(size: object, key: str) -> int | None:
    """One entry of an image processor's size: a dict in transformers 4, a ``SizeDict`` in 5."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    return [indices[start : start + size] for start in range(0, len(indices), size)]


def _content_type(row: int, raw: str | bytes) -> str:
    value = bytes(raw).decode("utf-8", errors="replace") if not isinstance(raw, str) else raw
    if value not in CONTENT_TYPES:
        raise InputError(f"row {row}: content type {value!r} is not one of {', '.join(map(repr, CONTENT_TYPES))}")
    return value
