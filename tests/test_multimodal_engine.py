"""The multimodal-embedding engine on the tiny CLIP build (random weights, the real code path)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.media_fixtures import bomb_png, jpeg, png
from tritonmm.contract import CONTENT_IMAGE, CONTENT_TEXT
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.multimodal import MultimodalEngine

TEXT, IMAGE = CONTENT_TEXT, CONTENT_IMAGE
WINDOW, DIMENSIONS, GRID = 77, 32, 4  # the tiny build: CLIP's text window, 32 px images in 8 px patches
LONG_TEXT = " ".join(f"word{i}" for i in range(400))


@pytest.fixture(scope="module")
def clip_dir(tiny_model: Callable[[str], Path]) -> Path:
    return tiny_model("clip")


@pytest.fixture(scope="module")
def engine(clip_dir: Path) -> MultimodalEngine:
    return MultimodalEngine(clip_dir, num_threads=2)


@pytest.fixture(scope="module")
def tokenizer(clip_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(clip_dir)


def mixed_rows() -> tuple[list[str | bytes], list[str]]:
    contents: list[str | bytes] = [
        "a red disc on a blue square",
        png(96, 64),
        png(40, 200, (10, 200, 10)),
        "",
        "naïve café — 東京 🚀",
        jpeg(120, 80),
    ]
    return contents, [TEXT, IMAGE, IMAGE, TEXT, TEXT, IMAGE]


def assert_unit(vectors: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_texts_and_images_share_one_normalised_space(engine: MultimodalEngine, tokenizer) -> None:
    assert (engine.architecture, engine.context_size, engine.dimensions) == ("clip", WINDOW, DIMENSIONS)
    assert (engine.grid_side, engine.image_tokens) == (GRID, GRID * GRID)
    contents, kinds = mixed_rows()
    vectors, tokens = engine.embed(contents, kinds)
    assert vectors.shape == (6, DIMENSIONS) and vectors.dtype == np.float32
    assert_unit(vectors)
    text_rows = [0, 3, 4]
    expected = [len(ids) for ids in tokenizer([contents[i] for i in text_rows], verbose=False)["input_ids"]]
    assert [tokens[i] for i in text_rows] == expected
    assert tokens[3] == 2  # the empty text: start and end token
    assert [tokens[i] for i in (1, 2, 5)] == [GRID * GRID] * 3  # an image counts its patches, whatever its size
    assert len({tuple(np.round(v, 5)) for v in vectors}) == 6  # every row has a vector of its own


def test_mixed_rows_keep_order_and_batch_independence(engine: MultimodalEngine) -> None:
    contents, kinds = mixed_rows()
    batch, batch_tokens = engine.embed(contents, kinds)
    for i, (content, kind) in enumerate(zip(contents, kinds, strict=True)):
        alone, tokens = engine.embed([content], [kind])
        np.testing.assert_allclose(alone[0], batch[i], atol=1e-5)
        assert tokens == [batch_tokens[i]]
    backwards, backwards_tokens = engine.embed(contents[::-1], kinds[::-1])
    np.testing.assert_allclose(backwards[::-1], batch, atol=1e-5)
    assert backwards_tokens[::-1] == batch_tokens


def test_rows_as_triton_hands_them_over(engine: MultimodalEngine) -> None:
    text = "a photo of a cat"
    as_bytes, _ = engine.embed([text.encode(), png()], [TEXT.encode(), IMAGE.encode()])
    as_str, _ = engine.embed([text, png()], [TEXT, IMAGE])
    np.testing.assert_allclose(as_bytes, as_str, atol=1e-6)
    vectors, tokens = engine.embed_prepared([])
    assert vectors.shape == (0, DIMENSIONS) and tokens.shape == (0,)


def test_exif_orientation_is_applied(engine: MultimodalEngine) -> None:
    rotated = jpeg(64, 32, exif_orientation=6)  # stored landscape, shown portrait
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(rotated))).convert("RGB")
    assert upright.size == (32, 64)
    out = io.BytesIO()
    upright.save(out, format="PNG")
    vectors, _ = engine.embed([rotated, out.getvalue()], [IMAGE, IMAGE])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)


def test_long_text_is_cut_at_the_window(engine: MultimodalEngine, tokenizer) -> None:
    assert len(tokenizer(LONG_TEXT, verbose=False)["input_ids"]) > 2 * WINDOW
    shorter = " ".join(LONG_TEXT.split()[:200])  # still far past the window: the same first 77 tokens
    vectors, tokens = engine.embed([LONG_TEXT, shorter], [TEXT, TEXT])
    assert tokens == [WINDOW, WINDOW]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    [row] = engine.prepare([LONG_TEXT], [TEXT])
    assert row.input_ids[-1] == tokenizer.eos_token_id  # kept: CLIP's text tower pools at the end token


def test_bad_rows_are_named(engine: MultimodalEngine) -> None:
    with pytest.raises(InputError, match=r"row 2: not an image file PIL can read"):
        engine.embed(["ok", png(), b"this is not an image"], [TEXT, IMAGE, IMAGE])
    with pytest.raises(InputError, match=r"row 1: the image is empty"):
        engine.embed(["ok", b""], [TEXT, IMAGE])
    with pytest.raises(InputError, match=r"row 0: cannot decode the image"):
        engine.embed([png()[:60]], [IMAGE])  # truncated
    with pytest.raises(InputError, match=r"row 0: cannot decode the image: .*decompression bomb"):
        engine.embed([bomb_png()], [IMAGE])
    with pytest.raises(InputError, match=r"row 1: content type 'video' is not one of 'text', 'image'"):
        engine.embed(["ok", b"\x00"], [TEXT, "video"])
    with pytest.raises(InputError, match=r"row 0: the text is not valid UTF-8"):
        engine.embed([b"\xff\xfe"], [TEXT])
    with pytest.raises(InputError, match=r"2 content row\(s\) but 1 content type"):
        engine.embed(["a", "b"], [TEXT])


def test_patch_similarity_is_a_grid_of_cosines(engine: MultimodalEngine) -> None:
    grid = engine.patch_similarity(png(96, 64), "a blue disc")
    assert grid.shape == (GRID, GRID) and grid.dtype == np.float32
    assert np.isfinite(grid).all() and (np.abs(grid) <= 1.0 + 1e-5).all()
    np.testing.assert_allclose(engine.patch_similarity(png(96, 64), "a blue disc"), grid)  # deterministic
    assert not np.allclose(engine.patch_similarity(png(96, 64), "a red square"), grid)  # depends on the text
    with pytest.raises(InputError, match=r"the image: not an image file"):
        engine.patch_similarity(b"nope", "a blue disc")
