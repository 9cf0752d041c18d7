"""One loader per media kind: a part's bytes, read, checked and made ready to send.

Chat, the audio cascade (``tritonmm.routing``), the workflow tools and the
embeddings all get their media through :func:`loader_for`, so a kind is read,
capped (``MediaLimits.max_bytes``) and checked the same way wherever it comes in:

* ``read``: the raw bytes of a part: bytes already held, Dify's base64, or a URL
  downloaded under the settings' URL policy, the kind's cap and the fetch timeout;
* ``check``: the bytes are of this kind (by content, never by name) and within the cap;
* ``prepare``: what a model is sent: checked, and for images downscaled;
* ``download``: a tool's file, with a timeout that grows with its declared size.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from tritonmm import fetch_guard, media
from tritonmm.errors import InvalidInput
from tritonmm.media import Modality
from tritonmm.messages import MediaPart
from tritonmm.settings import MediaLimits, ServerSettings

BASE_TIMEOUT = 30.0  # seconds: connection set-up and a small file
SLOWEST_BYTES_PER_SECOND = 1 * 1024 * 1024  # a download slower than 1 MiB/s is treated as stalled


def download_timeout(size: int) -> float:
    """Seconds allowed to download ``size`` bytes: Dify's own 5 s is too short for a video."""
    return BASE_TIMEOUT + size / SLOWEST_BYTES_PER_SECOND


class MediaLoader:
    modality: ClassVar[Modality]

    def check(self, data: bytes, what: str, limits: MediaLimits, claimed_mime: str = "") -> bytes:
        """``data`` unchanged when it is this kind within the cap; otherwise an error naming ``what``."""
        media.check_size(data, self.modality, what, limits)
        media.expect_modality(data, self.modality, claimed_mime, what)
        return data

    def prepare(self, data: bytes, what: str, limits: MediaLimits, *, low_detail: bool = False) -> bytes:
        """The bytes a model is sent."""
        return self.check(data, what, limits)

    def read(self, part: MediaPart, what: str, settings: ServerSettings) -> bytes:
        if part.data:
            return part.data
        if part.base64_data:
            return media.decode_base64(part.base64_data, what)
        if part.url:
            limits = settings.media
            return media.fetch_url(
                part.url,
                max_bytes=limits.max_bytes(self.modality),
                timeout=limits.fetch_timeout,
                what=what,
                policy=settings.url_policy,
            )
        raise InvalidInput(f"{what} has neither base64_data nor url")

    def load(self, part: MediaPart, what: str, settings: ServerSettings) -> bytes:
        """``read`` then ``prepare``: a chat or embedding part as the model gets it."""
        return self.prepare(self.read(part, what, settings), what, settings.media, low_detail=part.low_detail)

    def download(
        self,
        url: str,
        settings: ServerSettings,
        *,
        declared_size: int | None = None,
        claimed_mime: str = "",
        what: str = "the file",
    ) -> bytes:
        """A file handed to a tool (Dify's signed URL): refused early when its declared size is over
        the cap, fetched under the URL policy, checked by content. Not downscaled: tools that
        draw on an image (OCR boxes) need its own pixels."""
        cap = settings.media.max_bytes(self.modality)
        if declared_size and declared_size > cap:
            raise InvalidInput(f"{what} is {declared_size} bytes, above the {cap}-byte cap for {self.modality.value}")
        timeout = download_timeout(declared_size or cap)
        data = fetch_guard.fetch(url, settings.url_policy, max_bytes=cap, timeout=timeout, what=what)
        return self.check(data, what, settings.media, claimed_mime)


class ImageLoader(MediaLoader):
    modality = Modality.IMAGE

    def prepare(self, data: bytes, what: str, limits: MediaLimits, *, low_detail: bool = False) -> bytes:
        """Checked and downscaled to the longest side the limits allow (smaller for ``low_detail``)."""
        if low_detail:
            limits = replace(limits, image_max_side=min(limits.image_max_side, limits.low_detail_max_side))
        return media.prepare_image(data, what, limits)


class VideoLoader(MediaLoader):
    modality = Modality.VIDEO


class AudioLoader(MediaLoader):
    modality = Modality.AUDIO

    def check(self, data: bytes, what: str, limits: MediaLimits, claimed_mime: str = "") -> bytes:
        """Audio, or a video for its sound track: the server decodes either."""
        return media.check_audio(data, what, limits)


class DocumentLoader(MediaLoader):
    modality = Modality.DOCUMENT

    def check(self, data: bytes, what: str, limits: MediaLimits, claimed_mime: str = "") -> bytes:
        """A PDF file: the server renders its pages (and refuses one that is encrypted or too long)."""
        return media.check_pdf(data, what, limits)


LOADERS: dict[Modality, MediaLoader] = {
    loader.modality: loader for loader in (ImageLoader(), VideoLoader(), AudioLoader(), DocumentLoader())
}


def loader_for(modality: Modality) -> MediaLoader:
    return LOADERS[modality]
