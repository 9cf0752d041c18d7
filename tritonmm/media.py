"""Media in: bytes from base64 or URL, type by magic bytes, images made small.

The modality of a blob is decided by its content, never by a file name or a
claimed MIME type alone; the claimed type is only checked against the content.
Images are downscaled here, in the plugin, so a 60-megapixel photo costs the
bytes of the model's input size, not 40x that in transfer and server-side decoding.
Video and audio are passed through untouched: the server decodes them.

These are the checks; ``tritonmm.media_loaders`` picks the right ones for each kind.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, ImageOps, UnidentifiedImageError

from tritonmm import fetch_guard
from tritonmm.errors import InvalidInput, UnsupportedMedia
from tritonmm.images import to_rgb
from tritonmm.settings import DEFAULT_MEDIA_LIMITS, MediaLimits
from tritonmm.url_policy import UrlPolicy, dify_files_policy


class Modality(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"  # PDF: the server renders its pages into images


@dataclass(frozen=True)
class Sniffed:
    modality: Modality
    mime: str


def _ftyp_brand(data: bytes) -> bytes:
    return data[8:12] if data[4:8] == b"ftyp" else b""


# (predicate, result) pairs, most specific first.
_SIGNATURES: list[tuple[Callable[[bytes], bool], Sniffed]] = [
    (lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"), Sniffed(Modality.IMAGE, "image/png")),
    (lambda d: d.startswith(b"\xff\xd8\xff"), Sniffed(Modality.IMAGE, "image/jpeg")),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), Sniffed(Modality.IMAGE, "image/gif")),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", Sniffed(Modality.IMAGE, "image/webp")),
    (lambda d: d.startswith(b"BM"), Sniffed(Modality.IMAGE, "image/bmp")),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*"), Sniffed(Modality.IMAGE, "image/tiff")),
    (lambda d: _ftyp_brand(d) in (b"M4A ", b"M4B "), Sniffed(Modality.AUDIO, "audio/mp4")),
    (lambda d: _ftyp_brand(d) == b"qt  ", Sniffed(Modality.VIDEO, "video/quicktime")),
    (lambda d: _ftyp_brand(d) != b"", Sniffed(Modality.VIDEO, "video/mp4")),
    (lambda d: d.startswith(b"\x1a\x45\xdf\xa3"), Sniffed(Modality.VIDEO, "video/webm")),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"AVI ", Sniffed(Modality.VIDEO, "video/x-msvideo")),
    (lambda d: d[:1] == b"\x47" and d[188:189] == b"\x47", Sniffed(Modality.VIDEO, "video/mp2t")),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WAVE", Sniffed(Modality.AUDIO, "audio/wav")),
    (lambda d: d.startswith(b"fLaC"), Sniffed(Modality.AUDIO, "audio/flac")),
    (lambda d: d.startswith(b"OggS"), Sniffed(Modality.AUDIO, "audio/ogg")),
    # ADTS (raw AAC) sync word: 12 one-bits, layer 00; before the looser MPEG-audio frame sync.
    (lambda d: d[:1] == b"\xff" and d[1:2] and d[1] & 0xF6 == 0xF0, Sniffed(Modality.AUDIO, "audio/aac")),
    (
        lambda d: d.startswith(b"ID3") or (d[:1] == b"\xff" and d[1:2] and d[1] & 0xE0 == 0xE0),
        Sniffed(Modality.AUDIO, "audio/mpeg"),
    ),
]

SUPPORTED_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")


def sniff(data: bytes) -> Sniffed | None:
    head = data[:256]
    for matches, result in _SIGNATURES:
        if matches(head):
            return result
    return None


def decode_base64(text: str, what: str) -> bytes:
    """Decode Dify's ``base64_data``; tolerate a ``data:<mime>;base64,`` prefix."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what}: base64_data is not valid base64") from None


def fetch_url(url: str, *, max_bytes: int, timeout: float, what: str, policy: UrlPolicy | None = None) -> bytes:
    """Download ``url`` through the SSRF guard with a timeout and a size cap; raise rather than truncate.

    ``policy`` None: public addresses and Dify's own files URL only
    (:func:`tritonmm.url_policy.dify_files_policy`); callers holding settings pass
    ``settings.url_policy``, which the credentials may open to private networks.
    """
    policy = policy if policy is not None else dify_files_policy()
    return fetch_guard.fetch(url, policy, max_bytes=max_bytes, timeout=timeout, what=what)


def expect_modality(data: bytes, modality: Modality, claimed_mime: str, what: str) -> Sniffed:
    """Check that ``data`` really is of ``modality``; name both types if not."""
    if not data:
        raise InvalidInput(f"{what} is empty")
    found = sniff(data)
    if found is None:
        raise UnsupportedMedia(
            f"{what}: unsupported or unrecognised content (declared {claimed_mime or 'no type'}); "
            f"supported images: {', '.join(SUPPORTED_IMAGE_TYPES)}; videos: mp4, mov, webm, mkv, avi"
        )
    if found.modality is not modality:
        raise UnsupportedMedia(f"{what} was sent as {modality.value} but its content is {found.mime}")
    return found


def prepare_image(data: bytes, what: str, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> bytes:
    """Validate an image and downscale it to ``limits.image_max_side``.

    Returns the original bytes when nothing needs changing, else a JPEG (or PNG
    when the image has transparency worth keeping: none here, we flatten).
    """
    check_size(data, Modality.IMAGE, what, limits)
    found = expect_modality(data, Modality.IMAGE, "", what)
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # read from the header: nothing decoded yet
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"{what}: {exc} (decompression bomb guard)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"{what}: corrupt {found.mime} data ({exc})") from None
    if width * height > limits.image_max_pixels:
        raise InvalidInput(
            f"{what}: {width}x{height} = {width * height / 1e6:.0f} megapixels exceeds the "
            f"{limits.image_max_pixels / 1e6:.0f}-megapixel limit (decompression bomb guard)"
        )
    return _shrink(image, data, found.mime, what, limits.image_max_side)


def _shrink(image: Image.Image, data: bytes, mime: str, what: str, max_side: int) -> bytes:
    too_big = max(image.size) > max_side
    if mime == "image/jpeg" and too_big:
        image.draft("RGB", (max_side, max_side))  # decode at 1/2..1/8 scale: much faster
    _verify(image, mime, what)
    rotated = _needs_exif_rotation(image)
    if mime in ("image/png", "image/jpeg") and not too_big and not rotated:
        return data
    image = to_rgb(ImageOps.exif_transpose(image))
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _verify(image: Image.Image, mime: str, what: str) -> None:
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"{what}: corrupt {mime} data ({exc})") from None


def _needs_exif_rotation(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - malformed EXIF must not reject an otherwise fine image
        return False


def check_size(data: bytes, modality: Modality, what: str, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> None:
    """Refuse ``data`` above its kind's cap (``MediaLimits.max_bytes``)."""
    cap = limits.max_bytes(modality)
    if len(data) > cap:
        raise InvalidInput(f"{what}: {len(data)} bytes exceed the {cap}-byte cap for {modality.value}")


def check_audio(data: bytes, what: str, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> bytes:
    """Audio (or a video, for its sound track) recognised by content and within the size cap.

    Refused here so that 100 MB of something else is not shipped to the server;
    decoding itself happens on the server.
    """
    if not data:
        raise InvalidInput(f"{what} is empty (0 bytes)")
    check_size(data, Modality.AUDIO, what, limits)
    found = sniff(data)
    if found is None or found.modality is Modality.IMAGE:
        kind = found.mime if found else "unrecognised content"
        raise UnsupportedMedia(
            f"{what} is not audio ({kind}); supported: wav, mp3, m4a/aac, ogg/vorbis, opus, flac, webm"
        )
    return data


# PDF 1.x allows the "%PDF-" header anywhere in the first 1024 bytes.
PDF_HEADER = b"%PDF-"
PDF_HEADER_WINDOW = 1024


def check_pdf(data: bytes, what: str, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> bytes:
    """A PDF file (by its header, never by name) within the document cap; the server reads its pages."""
    if not data:
        raise InvalidInput(f"{what} is empty (0 bytes)")
    check_size(data, Modality.DOCUMENT, what, limits)
    if PDF_HEADER not in data[:PDF_HEADER_WINDOW]:
        found = sniff(data)
        kind = found.mime if found else "unrecognised content"
        raise UnsupportedMedia(f"{what} is not a PDF file ({kind}); documents are read from PDF files only")
    return data


def blank_png(side: int) -> bytes:
    """A small grey PNG: the image of probe requests."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(out, format="PNG")
    return out.getvalue()
