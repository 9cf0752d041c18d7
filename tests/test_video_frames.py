"""The video_frames engine: keyframes and uniform frames out of real encoded videos (PyAV), no Triton."""

from __future__ import annotations

import io
import json
import struct
import wave

import pytest
from PIL import Image

from tests.media_fixtures import mp4_gop, png
from tritonmm.contract import FRAMES_KEYFRAMES, FRAMES_UNIFORM
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.frames import (
    DEFAULT_COUNT,
    DEFAULT_MAX_SIDE,
    MAX_COUNT,
    ExtractedFrames,
    FrameOptions,
    extract_frames,
    max_count,
    parse_frame_options,
)

FPS = 10
# (codec, container): FFmpeg's MPEG-4 part 2 without B-frames, x264 with them, and
# MPEG-TS, which starts its clock late and seeks only approximately.
ENCODINGS = [("mpeg4", "mp4"), ("libx264", "mp4"), ("libx264", "mpegts")]


def frames(video: bytes, **params: object) -> ExtractedFrames:
    return extract_frames(video, parse_frame_options(json.dumps(params)))


def pictures(result: ExtractedFrames) -> list[Image.Image]:
    images = [Image.open(io.BytesIO(data)) for data in result.jpegs]
    assert all(image.format == "JPEG" for image in images)
    return [image.convert("RGB") for image in images]


def frame_index(image: Image.Image) -> int:
    """Which frame of an ``mp4_gop`` clip this is: its grey level is 6 * index."""
    return round(image.getpixel((image.width // 2, image.height // 2))[0] / 6)


@pytest.mark.parametrize(("codec", "fmt"), ENCODINGS)
def test_keyframes_mode_returns_exactly_the_keyframes(codec: str, fmt: str) -> None:
    video = mp4_gop(seconds=4, fps=FPS, gop=10, codec=codec, fmt=fmt)  # keyframes at 0, 1, 2, 3 s

    result = frames(video, mode=FRAMES_KEYFRAMES, count=8)

    assert result.timestamps == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert [frame_index(image) for image in pictures(result)] == [0, 10, 20, 30]  # the pictures match the times
    assert result.duration == pytest.approx(4.0)


def test_keyframes_are_picked_evenly_first_and_last_included() -> None:
    video = mp4_gop(seconds=8, fps=FPS, gop=10)  # keyframes at 0..7 s

    assert frames(video, mode=FRAMES_KEYFRAMES, count=3).timestamps == pytest.approx([0.0, 4.0, 7.0])
    assert frames(video, mode=FRAMES_KEYFRAMES, count=1).timestamps == pytest.approx([0.0])


def test_a_single_gop_has_a_single_keyframe() -> None:
    video = mp4_gop(seconds=3, fps=FPS, gop=1000)

    assert frames(video, mode=FRAMES_KEYFRAMES, count=8).timestamps == [0.0]


@pytest.mark.parametrize(("codec", "fmt"), ENCODINGS)
def test_uniform_mode_spreads_count_frames_over_the_video(codec: str, fmt: str) -> None:
    video = mp4_gop(seconds=4, fps=FPS, gop=10, codec=codec, fmt=fmt)

    result = frames(video, mode=FRAMES_UNIFORM, count=8)

    times = result.timestamps
    assert len(times) == len(result.jpegs) == 8
    assert times == sorted(times) and len(set(times)) == 8
    assert times[0] < 4.0 / 8 and times[-1] > 4.0 - 4.0 / 8  # the first and the last slice are covered
    assert [frame_index(image) for image in pictures(result)] == [round(t * FPS) for t in times]  # true times


def test_uniform_mode_never_repeats_a_frame() -> None:
    video = mp4_gop(seconds=0.5, fps=FPS)  # 5 frames

    assert frames(video, mode=FRAMES_UNIFORM, count=20).timestamps == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_defaults_are_uniform_eight_frames_of_at_most_768_px() -> None:
    assert parse_frame_options(None) == parse_frame_options(b"") == parse_frame_options("{}") == FrameOptions()
    assert FrameOptions() == FrameOptions(FRAMES_UNIFORM, DEFAULT_COUNT, DEFAULT_MAX_SIDE)
    assert parse_frame_options('{"count": null}').count == DEFAULT_COUNT
    assert parse_frame_options(None, most=4).count == 4  # the default never exceeds the model's limit

    result = extract_frames(mp4_gop(seconds=2, width=1280, height=720), parse_frame_options(None))
    assert len(result.jpegs) == DEFAULT_COUNT
    assert {image.size for image in pictures(result)} == {(768, 432)}


def test_max_side_scales_down_and_never_up() -> None:
    wide = mp4_gop(seconds=1, width=640, height=360)
    assert {image.size for image in pictures(frames(wide, max_side=100))} == {(100, 56)}
    small = mp4_gop(seconds=1, width=64, height=48)
    assert {image.size for image in pictures(frames(small, max_side=2048))} == {(64, 48)}


def rotated(video: bytes) -> bytes:
    """The mp4 with a phone's portrait display matrix in its track header (shown turned 90 degrees clockwise)."""
    data = bytearray(video)
    tkhd = data.index(b"tkhd")
    assert data[tkhd + 4] == 0  # version 0: 32-bit times
    # size/type, version/flags, creation, modification, track id, reserved, duration, reserved[2], layer...volume
    matrix = tkhd + 4 + 4 + 5 * 4 + 8 + 8
    struct.pack_into(">9i", data, matrix, 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    return bytes(data)


def test_frames_come_back_upright() -> None:
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        left_red = np.zeros((32, 64, 3), np.uint8)
        left_red[:, :32] = (255, 0, 0)
        left_red[:, 32:] = (0, 0, 255)
        for _ in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(left_red, format="rgb24")))
        container.mux(stream.encode())

    [image] = pictures(frames(rotated(out.getvalue()), count=1))

    assert image.size == (32, 64)  # portrait
    red_top, blue_bottom = image.getpixel((16, 8)), image.getpixel((16, 56))
    assert red_top[0] > 200 > red_top[2] and blue_bottom[2] > 200 > blue_bottom[0]  # turned clockwise


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\0\0" * 8000)
    return out.getvalue()


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (b"", r"VIDEO is empty \(0 bytes\)"),
        (b"this is not a video" * 20, "VIDEO: cannot decode video: Invalid data found"),
        (png(), r"VIDEO: this is a still image \(png\), not a video"),
        (wav(), "VIDEO: no video stream"),
        (mp4_gop()[:200], "VIDEO: "),  # the header alone, cut off
    ],
    ids=["empty", "junk", "png", "audio-only", "truncated"],
)
def test_bad_videos_are_input_errors(video: bytes, message: str) -> None:
    with pytest.raises(InputError, match=f"^{message}"):
        extract_frames(video, FrameOptions())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"mode": "scenes"}', "mode must be one of 'uniform', 'keyframes', got 'scenes'"),
        ('{"count": 0}', f"count must be an integer from 1 to {MAX_COUNT}, got 0"),
        ('{"count": 65}', f"count must be an integer from 1 to {MAX_COUNT}, got 65"),
        ('{"count": 2.5}', "count must be an integer from 1 to"),
        ('{"count": true}', "count must be an integer from 1 to .*, got True"),
        ('{"max_side": 8}', "max_side must be an integer from 16 to 2048, got 8"),
        ('{"max_side": 4096}', "max_side must be an integer from 16 to 2048, got 4096"),
        ('{"fps": 1}', "unknown parameter 'fps'; known parameters: mode, count, max_side"),
        ("[1]", "PARAMS_JSON must be a JSON object, got list"),
        ("{", "PARAMS_JSON is not valid JSON"),
        (b"\xff", "PARAMS_JSON is not valid UTF-8"),
    ],
)
def test_bad_params_are_input_errors(raw: str | bytes, message: str) -> None:
    with pytest.raises(InputError, match=f"^{message}"):
        parse_frame_options(raw)


def test_the_model_limit_bounds_count() -> None:
    assert parse_frame_options('{"count": 12}', most=12).count == 12
    with pytest.raises(InputError, match="^count must be an integer from 1 to 12, got 13"):
        parse_frame_options('{"count": 13}', most=12)
    assert max_count({}) == max_count({"tmm.video_max_frames": ""}) == MAX_COUNT
    assert max_count({"tmm.video_max_frames": "16"}) == 16
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match="tmm.video_max_frames must be"):
            max_count({"tmm.video_max_frames": bad})
