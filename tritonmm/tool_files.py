"""Files handed to a workflow tool: downloaded under the SSRF policy, capped, typed by content.

Dify gives a tool signed URLs on its files endpoint; the SDK's own download has
a fixed 5-second timeout (too short for video) and no guard. Here the timeout
grows with the file's declared size, each media type has its own size cap, and
the type is decided by the bytes, never by the file name.
"""

from __future__ import annotations

from tritonmm import fetch_guard, media
from tritonmm.errors import InvalidInput
from tritonmm.fetch_guard import UrlPolicy
from tritonmm.media import Modality
from tritonmm.settings import MediaLimits

BASE_TIMEOUT = 30.0  # seconds: connection set-up and a small file
SLOWEST_BYTES_PER_SECOND = 1 * 1024 * 1024  # a download slower than 1 MiB/s is treated as stalled


def cap_for(modality: Modality, limits: MediaLimits) -> int:
    return {
        Modality.IMAGE: limits.image_max_bytes,
        Modality.AUDIO: limits.audio_max_bytes,
        Modality.VIDEO: limits.video_max_bytes,
    }[modality]


def timeout_for(size: int) -> float:
    return BASE_TIMEOUT + size / SLOWEST_BYTES_PER_SECOND


def download(
    url: str,
    modality: Modality,
    policy: UrlPolicy,
    limits: MediaLimits,
    *,
    declared_size: int | None = None,
    claimed_mime: str = "",
    what: str = "the file",
) -> bytes:
    """The file's bytes, checked to be ``modality`` (audio also accepts a video's sound track)."""
    cap = cap_for(modality, limits)
    if declared_size and declared_size > cap:
        raise InvalidInput(f"{what} is {declared_size} bytes, above the {cap}-byte cap for {modality.value}")
    data = fetch_guard.fetch(url, policy, max_bytes=cap, timeout=timeout_for(declared_size or cap), what=what)
    if modality is Modality.AUDIO:
        return media.check_audio(data, what, limits)
    media.expect_modality(data, modality, claimed_mime, what)
    return data
