# SPDX-License-Identifier: Apache-2.0
"""OCR with RapidOCR (PaddleOCR PP-OCRv6 models on onnxruntime), testable without Triton.

The weights ship inside the ``rapidocr`` wheel (detector, recogniser and the
180-degree line classifier, about 33 MB), so the model needs no checkpoint
directory and no network: the model files are named explicitly, because
RapidOCR downloads any model file it cannot find.

One image in, its text lines out, in reading order:

* the image is decoded with PIL with its EXIF orientation applied, so a phone
  photo taken sideways is read upright and the boxes are in the coordinates of the
  image as it is displayed;
* lines are grouped into visual rows by vertical overlap and read top to bottom,
  each row left to right (:func:`reading_order`). RapidOCR's own order compares
  the top edges of boxes with a fixed 10-pixel tolerance, which puts a taller box
  of the same row (a larger font, a slightly skewed scan) before the text to its
  left. Columns are not detected: a two-column page reads row by row across both
  columns;
* ``text`` holds one line per visual row, the boxes of a row joined by a space, so
  a form row "Name:  Jane Doe" stays one line; ``lines`` keeps every detected box.

Bad input (no image, undecodable bytes, too many pixels) raises
:class:`~tritonmm_server.backend.errors.InputError`; an image without text is not an error
and gives empty text and no lines.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tritonmm.images import to_rgb
from tritonmm_server.media.image import decode_image

# The plugin's own decompression-bomb limit (tritonmm.settings.MediaLimits.image_max_pixels):
# anything the plugin lets through is read here too. RapidOCR scales the image to at
# most 2000 px a side before detection, so more pixels only cost decoding time.
MAX_PIXELS = 120_000_000
# Two boxes are on one visual row when their vertical extents overlap by at least
# this share of the smaller box's height: tolerant of skew and of mixed font sizes,
# strict enough that two consecutive lines (overlap ~0) never merge.
ROW_OVERLAP = 0.5

# The model files of rapidocr 3.10.0's default configuration (PP-OCRv6 small), as
# its wheel installs them under rapidocr/models/.
MODEL_FILES = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}
RAPIDOCR_PACKAGE = "rapidocr==3.10.0"


@dataclass(frozen=True)
class OcrLine:
    """One detected text line: its text, the recogniser's confidence and its quadrilateral.

    ``box`` is four (x, y) corners clockwise from the top-left corner, in pixels of
    the decoded (EXIF-rotated) image.
    """

    text: str
    score: float
    box: tuple[tuple[int, int], ...]

    @property
    def top(self) -> int:
        return min(y for _, y in self.box)

    @property
    def bottom(self) -> int:
        return max(y for _, y in self.box)

    @property
    def left(self) -> int:
        return min(x for x, _ in self.box)

    def to_json(self) -> dict[str, object]:
        return {"text": self.text, "score": self.score, "box": [list(point) for point in self.box]}


@dataclass(frozen=True)
class OcrResult:
    rows: tuple[tuple[OcrLine, ...], ...]  # visual rows in reading order, each left to right
    width: int
    height: int

    @property
    def lines(self) -> list[OcrLine]:
        return [line for row in self.rows for line in row]

    @property
    def text(self) -> str:
        return "\n".join(" ".join(line.text for line in row) for row in self.rows)

    def lines_json(self) -> str:
        return json.dumps([line.to_json() for line in self.lines], ensure_ascii=False)


def reading_order(lines: Sequence[OcrLine], overlap: float = ROW_OVERLAP) -> list[list[OcrLine]]:
    """Group lines into visual rows, top to bottom, each row left to right.

    A line joins the current row when its vertical extent overlaps the row's
    (the mean of its members' extents, so one tall box cannot swallow the next
    row) by at least ``overlap`` of the smaller height.
    """
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda item: ((item.top + item.bottom) / 2, item.left)):
        if rows:
            row = rows[-1]
            top = sum(item.top for item in row) / len(row)
            bottom = sum(item.bottom for item in row) / len(row)
            shared = min(bottom, line.bottom) - max(top, line.top)
            smaller = max(1.0, min(bottom - top, line.bottom - line.top))
            if shared >= overlap * smaller:
                row.append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda item: item.left) for row in rows]


def model_files() -> dict[str, Path]:
    """The bundled model files by RapidOCR section; raises RuntimeError naming a missing one."""
    try:
        import rapidocr
    except ImportError as exc:
        raise RuntimeError(
            f"the OCR model needs RapidOCR: pip install '{RAPIDOCR_PACKAGE}' onnxruntime ({exc})"
        ) from exc
    root = Path(rapidocr.__file__).resolve().parent / "models"
    files = {section: root / name for section, name in MODEL_FILES.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        # RapidOCR would try to download them; this server never downloads silently.
        raise RuntimeError(
            f"the rapidocr install has no {', '.join(missing)}; reinstall it with pip install '{RAPIDOCR_PACKAGE}'"
        )
    return files


class OcrEngine:
    """RapidOCR with the bundled PP-OCRv6 models; one instance serves one request at a time."""

    def __init__(self, *, threads: int = -1, min_score: float = 0.5) -> None:
        """``threads``: onnxruntime intra-op threads (-1: all cores); ``min_score``: drop
        lines the recogniser is less sure of (RapidOCR's default)."""
        from rapidocr import RapidOCR  # imported here so the module loads (and tests collect) without it

        files = model_files()
        params: dict[str, object] = {
            # Its "the text detection result is empty" warning would log every blank image.
            "Global.log_level": "error",
            "Global.text_score": min_score,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        }
        params.update({f"{section}.model_path": str(path) for section, path in files.items()})
        self._ocr = RapidOCR(params=params)
        self.model_files = files
        # RapidOCR keeps per-call state (its parameter updates); Triton runs one
        # instance's requests one by one, the lock keeps direct callers safe too.
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the three ONNX sessions (RapidOCR loads them lazily) and run each once."""
        image = Image.new("RGB", (320, 64), "white")
        ImageDraw.Draw(image).text((10, 20), "warm up", fill="black")
        self.read_image(image)

    def read(self, data: bytes, what: str = "IMAGE") -> OcrResult:
        """OCR the image file in ``data``; InputError if it is not a readable image."""
        return self.read_image(decode_image(data, what, max_pixels=MAX_PIXELS))

    def read_image(self, image: Image.Image) -> OcrResult:
        rgb = to_rgb(image)
        # RapidOCR takes a 3-channel array as OpenCV's BGR (it converts only file and PIL inputs).
        bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        with self._lock:
            output = self._ocr(bgr)
        width, height = rgb.size
        lines = []
        for text, score, box in zip(output.txts or (), output.scores or (), _boxes(output), strict=False):
            text = str(text).strip()
            if text:
                lines.append(OcrLine(text, round(float(score), 4), _clamp(box, width, height)))
        rows = reading_order(lines)
        return OcrResult(tuple(tuple(row) for row in rows), width, height)


def _boxes(output: object) -> list[np.ndarray]:
    boxes = getattr(output, "boxes", None)
    return [] if boxes is None else list(boxes)


def _clamp(box: np.ndarray, width: int, height: int) -> tuple[tuple[int, int], ...]:
    points = np.asarray(box, dtype=np.float64).reshape(-1, 2)
    return tuple((int(np.clip(round(x), 0, width)), int(np.clip(round(y), 0, height))) for x, y in points)
