"""Clients of the one-image / one-video models the workflow tools use: OCR, video
frames and image-text match. Each is one unary ``/infer`` with the file as raw bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tritonmm import contract
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.transport import InputTensor, TritonClient

MAX_LABELS = 64


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float
    box: list[list[float]]  # four [x, y] corners, pixels of the image sent


@dataclass(frozen=True)
class OcrResult:
    text: str  # lines in reading order, newline separated
    lines: list[OcrLine]


@dataclass(frozen=True)
class Frame:
    jpeg: bytes
    timestamp: float  # seconds


@dataclass(frozen=True)
class Match:
    labels: list[str]
    scores: list[float]  # zero-shot probabilities, summing to 1
    similarities: list[float]  # cosine of the image and each label
    heatmap_png: bytes

    @property
    def best(self) -> int:
        return max(range(len(self.scores)), key=self.scores.__getitem__)


def _infer(client: TritonClient, model: str, inputs: list[InputTensor], outputs: tuple) -> dict[str, list]:
    return client.infer(model, inputs, [spec.name for spec in outputs])


def _contract_error(model: str, task: contract.Task, exc: Exception) -> ServerError:
    return ServerError(f"model '{model}' answered outside the {task.value} contract: {exc}")


def read_text(client: TritonClient, model: str, image: bytes) -> OcrResult:
    out = _infer(client, model, [InputTensor(contract.OCR_IMAGE, (image,))], contract.OCR_OUTPUTS)
    try:
        lines = [
            OcrLine(str(e["text"]), float(e["score"]), [[float(x), float(y)] for x, y in e["box"]])
            for e in json.loads(out[contract.OCR_LINES.name][0])
        ]
        return OcrResult(out[contract.OCR_TEXT.name][0].decode("utf-8"), lines)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise _contract_error(model, contract.Task.OCR, exc) from None


def video_frames(
    client: TritonClient, model: str, video: bytes, *, mode: str, count: int, max_side: int | None = None
) -> tuple[list[Frame], float]:
    """Frames in time order and the video's duration in seconds."""
    if mode not in (contract.FRAMES_KEYFRAMES, contract.FRAMES_UNIFORM):
        raise InvalidInput(f"mode must be {contract.FRAMES_KEYFRAMES} or {contract.FRAMES_UNIFORM}, got {mode!r}")
    params: dict[str, Any] = {contract.PARAM_MODE: mode, contract.PARAM_COUNT: count}
    if max_side:
        params[contract.PARAM_MAX_SIDE] = max_side
    inputs = [
        InputTensor(contract.VIDEO_FILE, (video,)),
        InputTensor(contract.VIDEO_PARAMS, (json.dumps(params).encode(),)),
    ]
    out = _infer(client, model, inputs, contract.VIDEO_OUTPUTS)
    try:
        frames = out[contract.VIDEO_FRAMES_OUT.name]
        stamps = out[contract.VIDEO_TIMESTAMPS.name]
        if len(frames) != len(stamps):
            raise ValueError(f"{len(frames)} frames but {len(stamps)} timestamps")
        duration = float(out[contract.VIDEO_DURATION.name][0])
        return [Frame(jpeg, float(t)) for jpeg, t in zip(frames, stamps, strict=True)], duration
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise _contract_error(model, contract.Task.VIDEO_FRAMES, exc) from None


def match(client: TritonClient, model: str, image: bytes, labels: list[str]) -> Match:
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise InvalidInput("give at least one non-empty text or label to match the image against")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"{len(labels)} labels; at most {MAX_LABELS} per image")
    inputs = [
        InputTensor(contract.MATCH_IMAGE, (image,)),
        InputTensor(contract.MATCH_LABELS, (json.dumps(labels).encode(),)),
    ]
    out = _infer(client, model, inputs, contract.MATCH_OUTPUTS)
    try:
        scores = [float(x) for x in out[contract.MATCH_SCORES.name]]
        similarities = [float(x) for x in out[contract.MATCH_SIMILARITIES.name]]
        if len(scores) != len(labels) or len(similarities) != len(labels):
            raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
        return Match(labels, scores, similarities, out[contract.MATCH_HEATMAP.name][0])
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise _contract_error(model, contract.Task.IMAGE_TEXT_MATCH, exc) from None
