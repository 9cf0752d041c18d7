"""Pictures of known text, drawn with a TrueType font: what OCR must read back exactly."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

LINES = ["Hello World 2024", "The quick brown fox", "jumps over the lazy dog."]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow >= 10.1 ships a scalable default font when DejaVu is not installed.
    return ImageFont.truetype(str(DEJAVU), size) if DEJAVU.is_file() else ImageFont.load_default(size=size)


def render(lines: list[tuple[tuple[int, int], str, int]], size: tuple[int, int] = (900, 260)) -> Image.Image:
    """A white image with each (position, text, font size) drawn in black."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for position, text, points in lines:
        draw.text(position, text, fill="black", font=font(points))
    return image


def three_lines() -> Image.Image:
    return render([((30, 20 + i * 80), text, 36) for i, text in enumerate(LINES)])


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()
