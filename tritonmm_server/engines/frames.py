# SPDX-License-Identifier: Apache-2.0
"""Engine of the bundled video_frames model: one video file in, JPEG frames and their times out.

Plain Python (no Triton imports) so that it can be tested without a server:
``model_repository/video_frames/1/model.py`` only moves tensors in and out of it.
No weights: the decoding is :func:`tritonmm_server.media.video.select_frames`
(PyAV); this module reads the request's parameters, names the video in errors and
encodes the frames as JPEG.

Two modes (``mode`` in PARAMS_JSON):

* ``uniform`` (the default): ``count`` frames evenly spaced over the duration,
  each the frame nearest to the centre of its slice of the video;
* ``keyframes``: the encoder's keyframes (GOP starts: scene cuts and its keyframe
  interval), at most ``count`` of them evenly picked, first and last included. A
  video encoded with one long GOP has a single keyframe and gets a single frame.

Bad input (no video, not a video, no video stream, bad parameters) raises
:class:`~tritonmm_server.backend.errors.InputError` with a message fit for the end user.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tritonmm.contract import (
    FRAMES_KEYFRAMES,
    FRAMES_UNIFORM,
    KEY_VIDEO_MAX_FRAMES,
    PARAM_COUNT,
    PARAM_MAX_SIDE,
    PARAM_MODE,
    VIDEO_FILE,
    VIDEO_PARAMS,
    positive_parameter,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.request_params import is_int, params_object
from tritonmm_server.media.video import select_frames

__all__ = ["ExtractedFrames", "FrameOptions", "extract_frames", "max_count", "parse_frame_options"]

MODES = (FRAMES_UNIFORM, FRAMES_KEYFRAMES)
DEFAULT_COUNT = 8
MAX_COUNT = 64  # the default of tmm.video_max_frames: 64 frames at 768 px are about 5 MB of JPEG
DEFAULT_MAX_SIDE = 768  # enough for a vision model's input and a thumbnail strip, small on the wire
MIN_MAX_SIDE = 16
MAX_MAX_SIDE = 2048
# High enough that text in a frame (slides, screen recordings) stays legible for OCR.
JPEG_QUALITY = 90
_PARAM_KEYS = (PARAM_MODE, PARAM_COUNT, PARAM_MAX_SIDE)


@dataclass(frozen=True)
class FrameOptions:
    mode: str = FRAMES_UNIFORM
    count: int = DEFAULT_COUNT
    max_side: int = DEFAULT_MAX_SIDE


@dataclass(frozen=True)
class ExtractedFrames:
    jpegs: list[bytes]  # in time order, at least one
    timestamps: list[float]  # seconds from the video's first frame, one per JPEG
    duration: float  # seconds of video


def max_count(parameters: dict[str, str]) -> int:
    """The most frames one request may ask for: ``tmm.video_max_frames``, default 64; ValueError if malformed."""
    return positive_parameter(parameters, KEY_VIDEO_MAX_FRAMES, MAX_COUNT)


def parse_frame_options(raw: bytes | str | None, *, most: int = MAX_COUNT) -> FrameOptions:
    """PARAMS_JSON as options; absent, empty or ``null`` values take the defaults.

    ``most`` is the model's limit on ``count``; the default count is capped at it too.
    """
    values = params_object(raw, VIDEO_PARAMS, _PARAM_KEYS)
    mode = values.get(PARAM_MODE, FRAMES_UNIFORM)
    if mode not in MODES:
        raise InputError(f"{PARAM_MODE} must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    count = _int_in(values, PARAM_COUNT, min(DEFAULT_COUNT, most), 1, most)
    max_side = _int_in(values, PARAM_MAX_SIDE, DEFAULT_MAX_SIDE, MIN_MAX_SIDE, MAX_MAX_SIDE)
    return FrameOptions(mode, count, max_side)


def extract_frames(video: bytes, options: FrameOptions) -> ExtractedFrames:
    """Decode the frames the options ask for and encode each as a JPEG."""
    if not video:
        raise InputError(f"{VIDEO_FILE.name} is empty (0 bytes): send the video file's bytes")
    try:
        selection = select_frames(
            video, count=options.count, keyframes=options.mode == FRAMES_KEYFRAMES, max_side=options.max_side
        )
    except ValueError as exc:
        raise InputError(
            f"{VIDEO_FILE.name}: {exc} (first bytes {video[:8]!r}); send a video file such as MP4, WebM, MOV or MKV"
        ) from None
    return ExtractedFrames(
        jpegs=[_jpeg(frame.image) for frame in selection.frames],
        timestamps=[frame.seconds for frame in selection.frames],
        duration=selection.duration,
    )


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _int_in(values: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = values.get(key, default)
    if not is_int(value) or not low <= value <= high:
        raise InputError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value
