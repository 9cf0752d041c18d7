"""The image-text match engine on the tiny CLIP build (random weights, the real code path), no Triton."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.media_fixtures import bomb_png, jpeg, png
from tritonmm.contract import CONTENT_IMAGE, CONTENT_TEXT
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.match import HEATMAP_SIDE, MAX_LABELS, MatchEngine, parse_labels

LABELS = ["a red square", "a blue disc", "a photo of a cat", "a gradient", "a dog"]


@pytest.fixture(scope="module")
def engine(tiny_model: Callable[[str], Path]) -> MatchEngine:
    engine = MatchEngine(tiny_model("clip"), num_threads=2)
    engine.warm_up()
    return engine


def heatmap(png_bytes: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png_bytes))
    assert image.format == "PNG" and image.mode == "RGB"
    return image


def test_scores_are_a_distribution_over_the_labels_in_order(engine: MatchEngine) -> None:
    result = engine.match(png(96, 64), LABELS)

    assert result.scores.shape == result.similarities.shape == (len(LABELS),)
    assert result.scores.dtype == result.similarities.dtype == np.float32
    assert result.scores.sum() == pytest.approx(1.0, abs=1e-5) and (result.scores > 0).all()
    assert (np.abs(result.similarities) <= 1.0).all()
    assert result.best == int(np.argmax(result.scores))
    # Zero-shot classification: softmax of the scaled cosines, in label order.
    logits = engine.logit_scale * result.similarities.astype(np.float64)
    np.testing.assert_allclose(result.scores, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    reversed_result = engine.match(png(96, 64), LABELS[::-1])
    np.testing.assert_allclose(reversed_result.scores, result.scores[::-1], rtol=1e-5)


def test_similarities_are_the_embedding_models_cosines(engine: MatchEngine) -> None:
    image = png(96, 64)
    vectors, _ = engine.clip.embed([image, *LABELS], [CONTENT_IMAGE] + [CONTENT_TEXT] * len(LABELS))

    result = engine.match(image, LABELS)

    np.testing.assert_allclose(result.similarities, vectors[1:] @ vectors[0], atol=1e-5)


def test_the_model_temperature_is_used(engine: MatchEngine) -> None:
    # The tiny build keeps CLIP's initial logit_scale, ln(1 / 0.07); openai's checkpoints end at 100.
    assert engine.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)


def test_an_identical_label_twice_scores_the_same(engine: MatchEngine) -> None:
    result = engine.match(png(96, 64), ["a blue disc", "a dog", "a blue disc"])

    assert result.scores[0] == result.scores[2] and result.similarities[0] == result.similarities[2]


@pytest.mark.parametrize(("width", "height"), [(96, 64), (1600, 900), (300, 1200)])
def test_heatmap_is_the_downscaled_image(engine: MatchEngine, width: int, height: int) -> None:
    result = engine.match(jpeg(width, height), LABELS[:2])

    image = heatmap(result.heatmap_png)
    scale = min(1.0, HEATMAP_SIDE / max(width, height))
    assert image.size == (round(width * scale), round(height * scale))


def test_heatmap_colours_the_seen_square_and_dims_the_rest(engine: MatchEngine) -> None:
    grey = io.BytesIO()
    Image.new("RGB", (300, 100), (128, 128, 128)).save(grey, format="PNG")

    image = heatmap(engine.match(grey.getvalue(), ["a cat", "a dog"]).heatmap_png)

    # CLIP sees the centre 100x100 square of a 300x100 image: coloured there, dimmed grey outside.
    assert image.getpixel((10, 50)) == image.getpixel((290, 50)) == (64, 64, 64)
    centre = np.asarray(image)[:, 100:200].astype(int)
    assert (centre.max(axis=2) - centre.min(axis=2)).max() > 40  # the colour ramp, not grey
    assert engine.clip.seen_box(300, 100) == (100.0, 0.0, 200.0, 100.0)


def test_the_heatmap_follows_the_best_label(engine: MatchEngine) -> None:
    image = png(96, 64)
    first = engine.match(image, LABELS)
    again = engine.match(image, LABELS)
    assert first.heatmap_png == again.heatmap_png  # deterministic
    other = next(i for i in range(len(LABELS)) if i != first.best)
    assert engine.match(image, [LABELS[other]]).heatmap_png != first.heatmap_png


def test_exif_orientation_is_applied(engine: MatchEngine) -> None:
    # Orientation 6: stored landscape, shown portrait.
    assert heatmap(engine.match(jpeg(120, 80, exif_orientation=6), ["a"]).heatmap_png).size == (80, 120)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"", r"IMAGE: the image is empty \(0 bytes\)"),
        (b"not an image at all", "IMAGE: not an image file PIL can read"),
        (png()[:60], "IMAGE: cannot decode the image"),
        (bomb_png(), "IMAGE: cannot decode the image: Image size"),
    ],
    ids=["empty", "junk", "truncated", "bomb"],
)
def test_bad_images_are_input_errors(engine: MatchEngine, image: bytes, message: str) -> None:
    with pytest.raises(InputError, match=f"^{message}"):
        engine.match(image, LABELS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[]", f"LABELS_JSON must hold 1 to {MAX_LABELS} labels, got 0"),
        (json.dumps(["x"] * (MAX_LABELS + 1)), f"LABELS_JSON must hold 1 to {MAX_LABELS} labels, got 65"),
        ('["a cat", ""]', "label 1 must be a non-empty string, got ''"),
        ('["a cat", "   "]', "label 1 must be a non-empty string"),
        ('["a cat", 3]', "label 1 must be a non-empty string, got 3"),
        ('["a", "\\ud800"]', "label 1 is not valid Unicode text"),
        (json.dumps(["x" * 1001]), "label 0 is 1001 characters long, more than 1000"),
        ('{"labels": ["a"]}', "LABELS_JSON must be a JSON list of texts, got dict"),
        ("a cat, a dog", "LABELS_JSON is not valid JSON"),
        (b'["\xff"]', "LABELS_JSON is not valid UTF-8"),
    ],
)
def test_bad_labels_are_input_errors(raw: str | bytes, message: str) -> None:
    with pytest.raises(InputError, match=f"^{message}"):
        parse_labels(raw)


def test_labels_parse_from_bytes_and_keep_their_order() -> None:
    assert parse_labels(json.dumps(LABELS).encode()) == LABELS
    assert parse_labels('["東京の猫", "🚀"]') == ["東京の猫", "🚀"]
    assert len(parse_labels(json.dumps(["x"] * MAX_LABELS))) == MAX_LABELS
