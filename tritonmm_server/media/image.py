"""Image files from requests, decoded for the bundled models (chat, multimodal embedding, match, OCR).

One function, :func:`decode_image`: the file's bytes in, an upright RGB image out
(EXIF orientation applied, transparency flattened onto white by
:func:`tritonmm.images.to_rgb`), or an :class:`~tritonmm_server.backend.errors.InputError`
that names the image (``where``) and the problem: empty, not an image file,
too many pixels, or corrupt data. PIL's own decompression-bomb guard applies to
every image; ``max_pixels`` sets a lower limit, checked from the header before
anything is decoded. ``draft_side`` lets a JPEG decode at 1/2 to 1/8 scale when
that still covers the side a model needs, which is much faster for photos.

Plain Python (no Triton imports), testable without a server.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from tritonmm.images import to_rgb
from tritonmm_server.backend.errors import InputError

__all__ = ["decode_image"]


def decode_image(
    data: bytes | str,
    where: str,
    *,
    draft_side: int | None = None,
    max_pixels: int | None = None,
    hint: str = "",
) -> Image.Image:
    """The image file in ``data`` as upright RGB; InputError starting with ``where`` otherwise.

    ``hint`` is added to the message for bytes that are not an image file (what
    else the caller could have sent).
    """
    if isinstance(data, str):
        raise InputError(f"{where}: an image must be sent as the file's bytes, not as text")
    data = bytes(data)
    if not data:
        raise InputError(f"{where}: the image is empty (0 bytes)")
    try:
        opened = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise InputError(
            f"{where}: not an image file PIL can read (first bytes {data[:8]!r}); "
            f"send PNG, JPEG, GIF, WebP, BMP or TIFF bytes{hint}"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # PIL's own bomb guard refuses an image of more than twice Image.MAX_IMAGE_PIXELS here.
        raise InputError(f"{where}: cannot decode the image: {exc}") from None
    with opened:
        width, height = opened.size
        if max_pixels is not None and width * height > max_pixels:
            raise InputError(
                f"{where}: {width}x{height} is {width * height / 1e6:.0f} megapixels, above the "
                f"{max_pixels / 1e6:.0f}-megapixel limit (decompression bomb guard)"
            )
        if draft_side:
            opened.draft("RGB", (draft_side, draft_side))
        try:
            opened.load()
            # exif_transpose reads the orientation tag and returns a rotated copy when needed.
            return to_rgb(ImageOps.exif_transpose(opened))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # PIL reports truncated or corrupt data with these.
            raise InputError(
                f"{where}: cannot decode the image: corrupt {opened.format or 'image'} data ({exc})"
            ) from None
