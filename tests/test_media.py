"""The plugin-side media rules: sniffing, caps, bombs, downscaling, EXIF."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests import media_fixtures as fx
from tritonmm import media
from tritonmm.errors import InvalidInput, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.settings import MediaLimits
from tritonmm.url_policy import UrlPolicy


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (fx.png(), "image/png"),
        (fx.jpeg(32, 16), "image/jpeg"),
        (b"GIF89a" + b"\0" * 20, "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"\0\0\0\x18ftypisom" + b"\0" * 16, "video/mp4"),
        (b"\x1a\x45\xdf\xa3" + b"\0" * 16, "video/webm"),
        (b"RIFF\0\0\0\0WAVEfmt ", "audio/wav"),
    ],
)
def test_sniff_by_content(data: bytes, mime: str) -> None:
    assert media.sniff(data).mime == mime


def test_sniff_unknown_is_none() -> None:
    assert media.sniff(b"hello, not media") is None


def test_small_png_passes_through_unchanged() -> None:
    data = fx.png()
    assert media.prepare_image(data, "image 1") == data


def test_large_photo_is_downscaled_to_cap() -> None:
    data = fx.jpeg(9000, 6700)  # 60 megapixels
    out = media.prepare_image(data, "image 1", MediaLimits(image_max_side=1024))
    with Image.open(io.BytesIO(out)) as image:
        assert max(image.size) == 1024
        assert image.size[0] > image.size[1]  # aspect kept
    assert len(out) < len(data)


def test_exif_orientation_is_applied() -> None:
    data = fx.jpeg(40, 20, exif_orientation=6)  # rotated 90°: displays as 20x40
    with Image.open(io.BytesIO(media.prepare_image(data, "image 1"))) as image:
        assert image.size == (20, 40)


def test_decompression_bomb_refused_from_header() -> None:
    data = fx.bomb_png()
    assert len(data) < 1_000_000
    with pytest.raises(InvalidInput, match="image 1: .*decompression bomb"):
        media.prepare_image(data, "image 1")


def test_pixel_cap_below_pil_limit() -> None:
    with pytest.raises(InvalidInput, match=r"4 megapixels exceeds the 1-megapixel limit"):
        media.prepare_image(fx.jpeg(2000, 2000), "image 1", MediaLimits(image_max_pixels=1_000_000))


def test_corrupt_png_named() -> None:
    data = fx.png()[:60] + b"\x00garbage" * 20
    with pytest.raises(InvalidInput, match=r"image 2: corrupt image/png"):
        media.prepare_image(data, "image 2")


def test_text_sent_as_image_is_unsupported() -> None:
    with pytest.raises(UnsupportedMedia, match="unsupported or unrecognised content"):
        media.prepare_image(b"%PDF-1.7 not an image", "image 1")


def test_video_sent_as_image_names_both_types() -> None:
    with pytest.raises(UnsupportedMedia, match="sent as image but its content is video/mp4"):
        media.expect_modality(b"\0\0\0\x18ftypisom" + b"\0" * 16, Modality.IMAGE, "image/png", "image 1")


def test_oversize_video_refused() -> None:
    with pytest.raises(InvalidInput, match="exceed the 10-byte cap"):
        loader_for(Modality.VIDEO).check(b"\0\0\0\x18ftypisom" + b"\0" * 16, "video 1", MediaLimits(video_max_bytes=10))


def test_base64_with_data_uri_prefix() -> None:
    raw = fx.png()
    assert media.decode_base64("data:image/png;base64," + base64.b64encode(raw).decode(), "image 1") == raw


def test_bad_base64_named() -> None:
    with pytest.raises(InvalidInput, match="image 3: base64_data is not valid base64"):
        media.decode_base64("***", "image 3")


def test_fetch_refuses_other_schemes() -> None:
    with pytest.raises(InvalidInput, match="only http"):
        media.fetch_url("file:///etc/passwd", max_bytes=10, timeout=1, what="image 1")


def test_fetch_enforces_size_cap_and_names_http_errors() -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/missing":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()  # no Content-Length: the cap must hold while streaming
            self.wfile.write(b"x" * 5000)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    local = UrlPolicy(allow_private=True)  # the SSRF guard refuses loopback by default (tests/test_fetch_guard.py)
    try:
        with pytest.raises(InvalidInput, match="larger than the 1000-byte cap"):
            media.fetch_url(f"{base}/big", max_bytes=1000, timeout=5, what="image 1", policy=local)
        with pytest.raises(InvalidInput, match="returned HTTP 404"):
            media.fetch_url(f"{base}/missing", max_bytes=1000, timeout=5, what="image 1", policy=local)
        assert len(media.fetch_url(f"{base}/big", max_bytes=10_000, timeout=5, what="image 1", policy=local)) == 5000
        with pytest.raises(InvalidInput, match="loopback address"):
            media.fetch_url(f"{base}/big", max_bytes=10_000, timeout=5, what="image 1")
    finally:
        server.shutdown()
