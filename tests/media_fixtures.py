"""Media made on the fly for tests: images, a decompression bomb, a video, PDF documents."""

from __future__ import annotations

import io
from fractions import Fraction

from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter


def png(width: int = 96, height: int = 64, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(20, 20, 220))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int, height: int, exif_orientation: int | None = None) -> bytes:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(out, format="JPEG", quality=85, exif=exif.tobytes())
    return out.getvalue()


def bomb_png(side: int = 20_000) -> bytes:
    """A small PNG whose header declares side*side pixels (hundreds of megapixels)."""
    image = Image.new("1", (side, side), 0)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def mp4(seconds: float = 3.0, fps: int = 10, size: int = 64) -> bytes:
    import av  # server-side test dependency only

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            shade = int(255 * i / (seconds * fps))
            frame = av.VideoFrame.from_image(Image.new("RGB", (size, size), (shade, 80, 255 - shade)))
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def mp4_gop(
    seconds: float = 4.0,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    gop: int = 10,
    codec: str = "mpeg4",
    fmt: str = "mp4",
) -> bytes:
    """A clip with a keyframe exactly every ``gop`` frames (scene-cut keyframes turned off).

    Its keyframes are at ``k * gop / fps`` seconds from its first frame; frame i has
    the grey level 6*i (up to 255) so a decoded frame tells its own time. ``fmt`` is the
    container (mp4, or mpegts, which seeks only approximately).
    """
    import av  # server-side test dependency only

    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = 20_000_000  # near-lossless, so that a frame's grey level still names it
        # The encoder adds keyframes at scene cuts unless told not to; x264 and FFmpeg's own encoders differ.
        stream.options = {"sc_threshold": "0"} if codec == "libx264" else {"sc_threshold": "1000000000"}
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_image(Image.new("RGB", (width, height), (min(6 * i, 255),) * 3))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def pdf(pages: int = 3, size: tuple[int, int] = (612, 792)) -> bytes:
    """A PDF of ``pages`` letter-sized pages, each a different colour."""
    images = [Image.new("RGB", size, (60 * i % 256, 120, 200)) for i in range(pages)]
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:], resolution=72.0)
    return out.getvalue()


def encrypted_pdf(pages: int = 1) -> bytes:
    """A PDF that needs a password to open."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(pages))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
