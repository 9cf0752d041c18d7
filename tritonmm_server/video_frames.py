"""Evenly spaced frames out of an in-memory video, decoded with PyAV.

Apart from the engine because it knows nothing of requests (it raises
ValueError; the engine names the video) and its decoding strategy is a subject
of its own: seek to the GOPs holding the wanted frames so that a long video
stays cheap, and decode in order where a container seeks only approximately.
"""

from __future__ import annotations

import io
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

import av
from PIL import Image


def sample_video_frames(data: bytes, *, max_frames: int, fps: float) -> list[Image.Image]:
    """Decode a video container from memory and return evenly spaced RGB frames.

    At most ``fps`` frames per second of video and at most ``max_frames`` in all,
    but always one frame at least. Raises ``ValueError`` with the reason when the
    bytes hold no decodable video.
    """
    if not data:
        raise ValueError("no data")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = _video_stream(container)
            frame_pts, keyframe_pts = _index_packets(container, stream)
            if not frame_pts:
                raise ValueError("the video stream has no frames")
            wanted = _pick_frames(frame_pts, float(stream.time_base), max_frames, fps)
            try:
                frames = _decode_seeking(container, stream, wanted, keyframe_pts)
            except _SeekMissed:
                frames = None
        if frames is None:
            with av.open(io.BytesIO(data), mode="r") as container:
                frames = _decode_in_order(container, _video_stream(container), wanted, frame_pts)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode video: {exc.strerror or exc}") from None
    if not frames:
        raise ValueError("no frame of the video stream could be decoded")
    return frames


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise ValueError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame- and slice-threaded decoding
    return stream


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
    first, last = frame_pts[0], frame_pts[-1]
    step = (last - first) / (len(frame_pts) - 1) if len(frame_pts) > 1 else 0
    span = last - first + step  # the last frame lasts one frame interval too
    seconds = span * time_base
    n = max(1, min(max_frames, len(frame_pts), math.floor(seconds * fps + 1e-6)))
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
    container: av.container.InputContainer, stream: av.VideoStream, wanted: list[int], keyframes: list[int]
) -> list[Image.Image]:
    """Decode only the GOPs holding the wanted frames: a long video costs a few GOPs, not all its frames."""
    frames: list[Image.Image] = []
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
                frames.append(frame.to_image())
                break
        else:
            raise _SeekMissed  # the decoder ran dry before reaching the frame
    return frames


def _decode_in_order(
    container: av.container.InputContainer, stream: av.VideoStream, wanted: list[int], frame_pts: list[int]
) -> list[Image.Image]:
    frames: list[Image.Image] = []
    targets = iter(wanted)
    target = next(targets)
    for index, frame in enumerate(container.decode(stream)):
        # Frames come out in presentation order, so a frame without a timestamp
        # takes the index-th demuxed one.
        pts = frame.pts if frame.pts is not None else frame_pts[min(index, len(frame_pts) - 1)]
        if pts >= target:
            frames.append(frame.to_image())
            if (target := next(targets, None)) is None:
                break
    return frames
