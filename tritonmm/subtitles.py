"""Timed transcript segments as SubRip (.srt) and WebVTT (.vtt) subtitles."""

from __future__ import annotations

from collections.abc import Sequence

from tritonmm.speech import Segment


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: Sequence[Segment]) -> list[tuple[float, float, str]]:
    """Non-empty cues in time order, each ending after it starts and not after the next one starts."""
    cues = [
        (s.start, s.end, " ".join(s.text.split())) for s in sorted(segments, key=lambda s: s.start) if s.text.strip()
    ]
    fixed = []
    for i, (start, end, text) in enumerate(cues):
        if i + 1 < len(cues):
            end = min(end, cues[i + 1][0])
        fixed.append((start, max(end, start + 0.001), text))
    return fixed


def to_srt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for n, (start, end, text) in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Sequence[Segment]) -> str:
    blocks = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n" for start, end, text in _cues(segments)]
    return "WEBVTT\n\n" + "\n".join(blocks)
