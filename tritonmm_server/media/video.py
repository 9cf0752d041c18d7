"""Evenly spaced frames, or the encoder's keyframes, out of an in-memory video, decoded with PyAV.

Apart from the engines because it knows nothing of requests (it raises
ValueError; the engine names the video) and its decoding strategy is a subject
of its own: seek to the GOPs holding the wanted frames so that a long video
stays cheap, and decode in order where a container seeks only approximately.

:func:`sample_video_frames` feeds the chat model; :func:`select_frames` the
video_frames model, which also wants each frame's time, the frames upright
(phone videos carry their rotation as a display matrix) and small, and can ask
for keyframes: found by demuxing alone (the packets' key flags) and decoded with
the decoder told to skip every other frame, so each costs one intra-frame decode.
"""

from __future__ import annotations

import io
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import av
from PIL import Image

T = TypeVar("T")
# A larger picture is refused before decoding: 8K UHD is 33 megapixels, and a
# crafted header could otherwise ask for gigabytes per frame.
MAX_FRAME_PIXELS = 40_000_000
# Demuxers that read one still image: a photo is not a video, however FFmpeg opens it.
_IMAGE_DEMUXER_SUFFIX = "_pipe"
_IMAGE_DEMUXERS = ("image2",)
# PIL's lossless quarter turns for FFmpeg's counterclockwise display rotation.
_QUARTER_TURNS = {
    90: Image.Transpose.ROTATE_90,
    -90: Image.Transpose.ROTATE_270,
    180: Image.Transpose.ROTATE_180,
    -180: Image.Transpose.ROTATE_180,
}


@dataclass(frozen=True)
class TimedFrame:
    seconds: float  # presentation time, from the video's first frame
    image: Image.Image  # RGB, upright, its longest side at most the max_side asked for


@dataclass(frozen=True)
class FrameSelection:
    frames: list[TimedFrame]  # in time order, at least one
    duration: float  # seconds from the first frame to the end of the last


def sample_video_frames(data: bytes, *, max_frames: int, fps: float) -> list[Image.Image]:
    """Decode a video container from memory and return evenly spaced RGB frames.

    At most ``fps`` frames per second of video and at most ``max_frames`` in all,
    but always one frame at least. Raises ``ValueError`` with the reason when the
    bytes hold no decodable video.
    """
    frames, _, _ = _decode_picked(
        data,
        lambda frame_pts, keyframe_pts, time_base: _pick_frames(frame_pts, time_base, max_frames, fps),
        lambda frame, pts: frame.to_image(),
    )
    return frames


def select_frames(data: bytes, *, count: int, keyframes: bool, max_side: int) -> FrameSelection:
    """``count`` frames evenly spaced over the video, or at most ``count`` of its keyframes, evenly picked.

    Keyframes are the encoder's intra frames: where it started a new GOP, at scene
    cuts and at its keyframe interval. The first and the last keyframe are always
    among those picked. Each frame comes back upright, scaled down (never up) so
    that its longest side is at most ``max_side``, with its time from the first
    frame. Fewer frames than ``count`` come back when the video has fewer (key)frames.
    Raises ``ValueError`` with the reason when the bytes hold no decodable video.
    """

    def pick(frame_pts: list[int], keyframe_pts: list[int], time_base: float) -> list[int]:
        if keyframes and keyframe_pts:
            return _spread(keyframe_pts, count)
        if keyframes:  # the demuxer flags no keyframe: the first frame is one by definition
            return frame_pts[:1]
        return _nearest_to_centres(frame_pts, min(count, len(frame_pts)))

    decoded, frame_pts, time_base = _decode_picked(
        data, pick, lambda frame, pts: (pts, _upright(frame, max_side)), keyframes_only=keyframes, still_image=False
    )
    frames = [TimedFrame((pts - frame_pts[0]) * time_base, image) for pts, image in decoded]
    return FrameSelection(frames, _span(frame_pts) * time_base)


def _decode_picked(
    data: bytes,
    pick: Callable[[list[int], list[int], float], list[int]],
    convert: Callable[[av.VideoFrame, int], T],
    *,
    keyframes_only: bool = False,
    still_image: bool = True,
) -> tuple[list[T], list[int], float]:
    """Decode the frames ``pick(frame_pts, keyframe_pts, time_base)`` names, each through ``convert(frame, pts)``.

    Returns them with every frame's pts and the stream's time base. With
    ``keyframes_only`` the decoder skips all but keyframes: only keyframes may be
    picked. ``still_image=False`` refuses a photo (PNG, JPEG...) that FFmpeg would
    read as a one-frame video.
    """
    if not data:
        raise ValueError("no data")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not still_image:
                _refuse_still_image(container)
            stream = _video_stream(container)
            frame_pts, keyframe_pts = _index_packets(container, stream)
            if not frame_pts:
                raise ValueError("the video stream has no frames")
            time_base = float(stream.time_base)
            wanted = pick(frame_pts, keyframe_pts, time_base)
            skip = keyframes_only and bool(keyframe_pts)
            if skip:
                _keyframes_only(stream)
            try:
                frames = _decode_seeking(container, stream, wanted, keyframe_pts, convert)
            except _SeekMissed:
                frames = None
        if frames is None:
            with av.open(io.BytesIO(data), mode="r") as container:
                stream = _video_stream(container)
                if skip:
                    _keyframes_only(stream)
                frames = _decode_in_order(container, stream, wanted, keyframe_pts if skip else frame_pts, convert)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode video: {exc.strerror or exc}") from None
    if not frames:
        raise ValueError("no frame of the video stream could be decoded")
    return frames, frame_pts, time_base


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise ValueError("no video stream")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_FRAME_PIXELS:
        raise ValueError(f"the video is {width}x{height} pixels, more than {MAX_FRAME_PIXELS // 1_000_000} megapixels")
    stream.thread_type = "AUTO"  # frame- and slice-threaded decoding
    return stream


def _keyframes_only(stream: av.VideoStream) -> None:
    stream.codec_context.skip_frame = "NONKEY"  # the decoder drops every other frame unread
    # Each keyframe is decoded on its own after a seek: frame threading would only add
    # its pipeline's latency (measured 2x slower), slices still decode in parallel.
    stream.thread_type = "SLICE"


def _refuse_still_image(container: av.container.InputContainer) -> None:
    name = container.format.name
    if name.endswith(_IMAGE_DEMUXER_SUFFIX) or name in _IMAGE_DEMUXERS:
        kind = name.removesuffix(_IMAGE_DEMUXER_SUFFIX)
        raise ValueError(f"this is a still image ({kind}), not a video")


def _upright(frame: av.VideoFrame, max_side: int) -> Image.Image:
    """The frame as RGB, scaled down to ``max_side`` and turned as its display matrix says."""
    scale = min(1.0, max_side / max(frame.width, frame.height))
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    # swscale scales while converting to RGB: cheaper than converting a 4K frame and resizing it in PIL.
    image = frame.to_image(width=width, height=height, interpolation="AREA")
    turn = _QUARTER_TURNS.get(frame.rotation)  # other angles are rare enough to leave as they are
    return image.transpose(turn) if turn is not None else image


def _index_packets(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[list[int], list[int]]:
    # Demuxing without decoding is cheap and gives the true frame timestamps even
    # when the container's duration metadata is missing (webm, mkv).
    frames, keyframes = [], []
    for packet in container.demux(stream):
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None or packet.size == 0:
            continue
        frames.append(pts)
        if packet.is_keyframe:
            keyframes.append(pts)
    return sorted(frames), sorted(keyframes)


def _pick_frames(frame_pts: list[int], time_base: float, max_frames: int, fps: float) -> list[int]:
    """Timestamps of the frames nearest to the centres of ``n`` equal slices of the video."""
    seconds = _span(frame_pts) * time_base
    n = max(1, min(max_frames, len(frame_pts), math.floor(seconds * fps + 1e-6)))
    return _nearest_to_centres(frame_pts, n)


def _span(frame_pts: list[int]) -> float:
    """The video's length in pts units: the last frame lasts one mean frame interval too."""
    first, last = frame_pts[0], frame_pts[-1]
    step = (last - first) / (len(frame_pts) - 1) if len(frame_pts) > 1 else 0
    return last - first + step


def _spread(candidates: list[int], n: int) -> list[int]:
    """At most ``n`` of the sorted candidates, evenly spread: the first always, the last too when ``n`` > 1."""
    if len(candidates) <= n:
        return list(candidates)
    if n == 1:
        return candidates[:1]
    last = len(candidates) - 1
    return [candidates[round(i * last / (n - 1))] for i in range(n)]


def _nearest_to_centres(frame_pts: list[int], n: int) -> list[int]:
    """The frames nearest to the centres of ``n`` equal slices of the video, without repeats."""
    first, span = frame_pts[0], _span(frame_pts)
    picked: list[int] = []
    for i in range(n):
        target = first + (i + 0.5) * span / n
        j = bisect_left(frame_pts, target)
        nearest = min(frame_pts[max(j - 1, 0) : j + 1], key=lambda p: abs(p - target))
        if not picked or nearest != picked[-1]:
            picked.append(nearest)
    return picked


class _SeekMissed(Exception):
    """A seek landed past the frame it aimed at; MPEG-TS, for one, seeks only approximately."""


def _decode_seeking(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    wanted: list[int],
    keyframes: list[int],
    convert: Callable[[av.VideoFrame, int], T],
) -> list[T]:
    """Decode only the GOPs holding the wanted frames: a long video costs a few GOPs, not all its frames."""
    frames: list[T] = []
    decoder: Iterator[av.VideoFrame] | None = None
    position = -math.inf  # pts of the last decoded frame
    for pts in wanted:
        k = bisect_right(keyframes, pts) - 1
        keyframe = keyframes[k] if k >= 0 else keyframes[0] if keyframes else pts
        # Decoding on is cheaper than jumping back to a keyframe already behind us.
        seek = decoder is None or keyframe > position
        if seek:
            container.seek(keyframe, stream=stream, backward=True)
            decoder = container.decode(stream)
        for frame in decoder:
            if frame.pts is None or (seek and frame.pts > pts):
                raise _SeekMissed
            seek, position = False, frame.pts
            if frame.pts >= pts:
                frames.append(convert(frame, frame.pts))
                break
        else:
            raise _SeekMissed  # the decoder ran dry before reaching the frame
    return frames


def _decode_in_order(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    wanted: list[int],
    frame_pts: list[int],
    convert: Callable[[av.VideoFrame, int], T],
) -> list[T]:
    frames: list[T] = []
    targets = iter(wanted)
    target = next(targets)
    for index, frame in enumerate(container.decode(stream)):
        # Frames come out in presentation order, so a frame without a timestamp
        # takes the index-th demuxed one.
        pts = frame.pts if frame.pts is not None else frame_pts[min(index, len(frame_pts) - 1)]
        if pts >= target:
            frames.append(convert(frame, pts))
            if (target := next(targets, None)) is None:
                break
    return frames
