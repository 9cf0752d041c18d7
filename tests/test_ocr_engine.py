"""The OCR engine on RapidOCR's real PP-OCRv6 weights (from the rapidocr wheel), in process.

Text is rendered with a TrueType font, so the expected text is known exactly.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

from tests import media_fixtures as fx
from tests.text_images import LINES, encode, font, render, three_lines
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.ocr import OcrEngine, OcrLine, reading_order
from tritonmm_server.media.image import decode_image


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    ocr = OcrEngine()
    ocr.warm_up()
    return ocr


def assert_well_formed(lines: list[OcrLine], width: int, height: int) -> None:
    for line in lines:
        assert 0.0 < line.score <= 1.0, line
        assert len(line.box) == 4, line
        assert all(0 <= x <= width and 0 <= y <= height for x, y in line.box), line


def test_reads_three_lines_exactly_in_order(engine: OcrEngine) -> None:
    result = engine.read(encode(three_lines()))
    assert [line.text for line in result.lines] == LINES
    assert result.text == "\n".join(LINES)
    assert (result.width, result.height) == (900, 260)
    assert_well_formed(result.lines, 900, 260)
    # Each box sits around its rendered line: line i was drawn at y = 20 + 80 i.
    for i, line in enumerate(result.lines):
        assert 20 + 80 * i - 10 <= line.top < line.bottom <= 20 + 80 * i + 60, line
    parsed = json.loads(result.lines_json())
    assert [entry["text"] for entry in parsed] == LINES
    assert all(set(entry) == {"text", "score", "box"} for entry in parsed)


def test_same_row_in_mixed_sizes_reads_left_to_right(engine: OcrEngine) -> None:
    """A label and a larger value beside it: one row, label first.

    The value's top edge is 14 px above the label's, more than the 10 px RapidOCR's
    own sort tolerates, so its order would put the value first.
    """
    image = render(
        [
            ((30, 44), "Invoice number:", 28),
            ((420, 30), "INV-2024-0042", 40),
            ((30, 124), "Due date:", 28),
            ((420, 110), "12 March 2025", 40),
        ],
        size=(900, 200),
    )
    result = engine.read(encode(image))
    assert result.text == "Invoice number: INV-2024-0042\nDue date: 12 March 2025"
    assert [line.text for line in result.lines] == ["Invoice number:", "INV-2024-0042", "Due date:", "12 March 2025"]
    assert_well_formed(result.lines, 900, 200)


def test_blank_image_gives_no_text(engine: OcrEngine) -> None:
    result = engine.read(encode(Image.new("RGB", (640, 480), "white")))
    assert result.text == ""
    assert result.lines == []
    assert result.lines_json() == "[]"


def test_exif_rotated_jpeg_is_read_upright(engine: OcrEngine) -> None:
    # Stored sideways (rotated 90 degrees counter-clockwise) with orientation 6
    # ("rotate 90 clockwise to display"), as a phone held sideways saves it.
    upright = three_lines()
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    result = engine.read(data)
    assert [line.text for line in result.lines] == LINES
    assert (result.width, result.height) == upright.size  # boxes are in the displayed image's pixels
    assert_well_formed(result.lines, *upright.size)


def test_transparent_png_text_is_read(engine: OcrEngine) -> None:
    # Black text on a fully transparent background: flattened onto white, not black.
    image = Image.new("RGBA", (900, 100), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((30, 20), LINES[0], fill=(0, 0, 0, 255), font=font(36))
    assert engine.read(encode(image)).text == LINES[0]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", r"IMAGE: the image is empty \(0 bytes\)"),
        (b"this is not an image at all, just some text", "IMAGE: not an image file"),
        (fx.png()[:60] + b"\0garbage" * 40, "corrupt PNG data"),
        (fx.bomb_png(), "decompression bomb"),
    ],
    ids=["empty", "text", "truncated png", "bomb"],
)
def test_bad_bytes_raise_input_error(engine: OcrEngine, data: bytes, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        engine.read(data)


def test_decode_image_flattens_to_rgb() -> None:
    image = decode_image(encode(Image.new("LA", (8, 4), (0, 0))), "IMAGE")
    assert (image.mode, image.size) == ("RGB", (8, 4))
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent becomes white


def box(left: int, top: int, right: int, bottom: int, text: str) -> OcrLine:
    return OcrLine(text, 1.0, ((left, top), (right, top), (right, bottom), (left, bottom)))


def test_reading_order_groups_rows_by_vertical_overlap() -> None:
    lines = [
        box(400, 100, 600, 130, "row2-right"),
        box(10, 100, 200, 130, "row2-left"),
        box(420, 8, 700, 60, "row1-tall-right"),  # taller and starts 22 px higher
        box(10, 30, 300, 58, "row1-left"),
        box(10, 140, 300, 170, "row3"),  # touches row 2 (10 px apart): a new row
    ]
    rows = reading_order(lines)
    assert [[line.text for line in row] for row in rows] == [
        ["row1-left", "row1-tall-right"],
        ["row2-left", "row2-right"],
        ["row3"],
    ]


def test_reading_order_keeps_consecutive_lines_apart() -> None:
    # Tight line spacing: boxes overlap by 4 px of 30, far below half a line.
    lines = [box(10, 0, 300, 30, "first"), box(10, 26, 300, 56, "second"), box(10, 52, 300, 82, "third")]
    assert [[line.text for line in row] for row in reading_order(lines)] == [["first"], ["second"], ["third"]]
    assert reading_order([]) == []
