"""The media of one chat request, decoded for the checkpoint: pictures, video frames, audio clips, PDF pages.

Each media part points into its kind's tensor (``{"type": "video", "index": 0}`` is
``VIDEOS[0]``); every element a request refers to is decoded once, however many parts
refer to it. Errors name the media the way people count them, from 1 per kind
(:func:`tritonmm.chat_wire.media_label`: ``VIDEOS[0]`` is "video 1").

Videos are sampled into frames on the server (:mod:`tritonmm_server.media.video`) and go
to the model as images, since video processors need torchvision. Audio is decoded to
mono at the checkpoint's feature-extractor rate and refused, never cut, outside the
clip length the model hears whole. PDF documents are rendered page by page
(:mod:`tritonmm_server.media.pdf`) within a page cap, at a resolution and a size cap
from the model's config; a longer, encrypted or broken document is refused.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import Image

from tritonmm.chat_wire import WireMessage, media_label
from tritonmm_server.backend.errors import InputError
from tritonmm_server.media.audio import AudioTooLong, decode_audio
from tritonmm_server.media.image import decode_image
from tritonmm_server.media.pdf import DEFAULT_DPI, DEFAULT_MAX_PAGES, DEFAULT_MAX_SIDE, render_pdf_pages
from tritonmm_server.media.video import sample_video_frames

__all__ = ["DEFAULT_DOCUMENT_LIMITS", "MIN_AUDIO_SECONDS", "ChatMedia", "DecodedMedia", "DocumentLimits", "silent_wav"]

# Shorter clips give Qwen2-Audio's encoder fewer than two frames, which its
# placeholder expansion cannot handle (it then fails inside generate).
MIN_AUDIO_SECONDS = 0.1
MediaT = TypeVar("MediaT")  # what one image, video or audio decodes to


@dataclass(frozen=True)
class DecodedMedia:
    """The decoded elements a request refers to, by wire index."""

    images: dict[int, Image.Image]
    videos: dict[int, list[Image.Image]]  # the sampled frames, in time order
    audios: dict[int, np.ndarray]  # mono float32 at the checkpoint's rate
    documents: dict[int, list[Image.Image]] = field(default_factory=dict)  # the rendered pages, in order


@dataclass(frozen=True)
class DocumentLimits:
    """How PDF documents are rendered: pages per document (more is refused), dots per inch, longest side."""

    max_pages: int = DEFAULT_MAX_PAGES
    dpi: float = DEFAULT_DPI
    max_side: int = DEFAULT_MAX_SIDE


DEFAULT_DOCUMENT_LIMITS = DocumentLimits()


class ChatMedia:
    """How one checkpoint takes media: frames per video, audio rate and clip length."""

    def __init__(
        self,
        *,
        video_max_frames: int,
        video_fps: float,
        audio_rate: int,
        max_audio_seconds: float,
        documents: DocumentLimits = DEFAULT_DOCUMENT_LIMITS,
    ) -> None:
        self.documents = documents
        self.video_max_frames = video_max_frames
        self.video_fps = video_fps
        self.audio_rate = audio_rate
        self.max_audio_seconds = max_audio_seconds

    def decode(
        self,
        messages: Sequence[WireMessage],
        images: Sequence[bytes],
        videos: Sequence[bytes],
        audios: Sequence[bytes],
        documents: Sequence[bytes] = (),
    ) -> DecodedMedia:
        """Decode every element the messages refer to (the references are already checked to exist)."""
        return DecodedMedia(
            images=_decode_each(messages, "image", images, self._image),
            videos=_decode_each(messages, "video", videos, self._video),
            audios=_decode_each(messages, "audio", audios, self._audio),
            documents=_decode_each(messages, "document", documents, self._document),
        )

    def _document(self, label: str, data: bytes) -> list[Image.Image]:
        limits = self.documents
        return render_pdf_pages(data, max_pages=limits.max_pages, dpi=limits.dpi, max_side=limits.max_side, what=label)

    def _image(self, label: str, data: bytes) -> Image.Image:
        return decode_image(data, label)

    def _video(self, label: str, data: bytes) -> list[Image.Image]:
        try:
            return sample_video_frames(data, max_frames=self.video_max_frames, fps=self.video_fps)
        except ValueError as exc:
            raise InputError(f"{label}: {exc}") from None

    def _audio(self, label: str, data: bytes) -> np.ndarray:
        too_long = (
            f"{label} is longer than {self.max_audio_seconds:g} s, the most this model hears in one clip; "
            f"cut it into shorter clips"
        )
        try:
            # Decoding stops at the window, so a long file costs no more than a clip that fits.
            samples = decode_audio(data, rate=self.audio_rate, max_seconds=self.max_audio_seconds)
        except AudioTooLong:
            raise InputError(too_long) from None
        except ValueError as exc:
            raise InputError(f"{label}: {exc}") from None
        # The resampler's flush can add a few samples past the check inside decode_audio.
        if samples.size > self.max_audio_seconds * self.audio_rate:
            raise InputError(too_long)
        if samples.size < MIN_AUDIO_SECONDS * self.audio_rate:
            raise InputError(
                f"{label} is {1000 * samples.size / self.audio_rate:.0f} ms long; "
                f"this model needs at least {1000 * MIN_AUDIO_SECONDS:.0f} ms"
            )
        return samples


def _decode_each(
    messages: Sequence[WireMessage], kind: str, blobs: Sequence[bytes], decode: Callable[[str, bytes], MediaT]
) -> dict[int, MediaT]:
    """Each element of ``kind`` the messages refer to, decoded once, by wire index."""
    indices = dict.fromkeys(p.index for m in messages for p in m.parts if p.kind == kind)
    return {index: decode(media_label(kind, index), blobs[index]) for index in indices}


def silent_wav(rate: int, seconds: float = 1.0) -> bytes:
    """A WAV file of silence: what the warm-up lets a native-audio model hear."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * int(rate * seconds)))
    return buf.getvalue()
