"""Any audio container Dify may send, decoded from memory to mono float32 at one rate.

Shared by the speech-to-text model and chat models with native audio. PyAV
decodes every container the plugin may receive (wav, mp3, m4a/aac, ogg/vorbis,
opus, flac, webm) and resamples in the same pass, so neither libsndfile nor an
ffmpeg binary is needed: the PyAV wheel bundles its own FFmpeg. Raises ``ValueError``
with the reason; callers turn it into their own input error naming the file.
"""

from __future__ import annotations

import io

import av
import numpy as np

WHISPER_RATE = 16_000
# Ten hours at 16 kHz float32 is 2.3 GB: refuse before decoding that much.
DEFAULT_MAX_SECONDS = 4 * 3600.0


class AudioTooLong(ValueError):
    """The audio runs past ``max_seconds``; decoding stopped there."""


def decode_audio(data: bytes, *, rate: int = WHISPER_RATE, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``rate`` Hz from an in-memory audio (or video) file.

    The first audio stream is used, so a video file gives its sound track.
    """
    if not data:
        raise ValueError("the audio is empty (0 bytes)")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise ValueError("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit = int(max_seconds * rate)
            pieces: list[np.ndarray] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    total += pieces[-1].size
                if total > limit:
                    raise AudioTooLong(f"the audio is longer than the {_duration(max_seconds)} this server accepts")
            for out in resampler.resample(None):  # flush what the resampler holds back
                pieces.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode audio: {exc.strerror or exc}") from None
    samples = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.zeros(0, np.float32)
    if samples.size == 0:
        raise ValueError("the audio stream holds no samples")
    return np.clip(samples, -1.0, 1.0)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
