"""Building the results page: Markdown paragraphs and tables, PNG plots saved beside the JSON.

Each case group renders its own section into a :class:`Report`; :mod:`.report` puts the
sections together into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"


class Report:
    def __init__(self, results_dir: Path = RESULTS, page: Path = PAGE) -> None:
        self.results_dir = results_dir
        self.page = page
        self.lines: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.lines += [f"{'#' * level} {text}", ""]

    def paragraph(self, text: str) -> None:
        self.lines += [text, ""]

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.lines.append("| " + " | ".join(headers) + " |")
        self.lines.append("|" + "|".join("---" for _ in headers) + "|")
        self.lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"

    # --- plots ----------------------------------------------------------------------------------

    def _image(self, name: str, title: str, figure) -> None:
        path = self.results_dir / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.tight_layout()
        figure.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: reruns differ by data only
        _pyplot().close(figure)
        link = os.path.relpath(path, self.page.parent).replace(os.sep, "/")
        self.lines += [f"![{title}]({link})", ""]

    def line_plot(
        self, name: str, title: str, xlabel: str, ylabel: str, series: Mapping[str, tuple[Sequence, Sequence]],
        *, log: bool = False,
    ) -> None:  # fmt: skip
        """One line per series (label -> (xs, ys)), markers on the measured points."""
        figure, axes = _pyplot().subplots(figsize=(6.5, 3.8))
        for label, (xs, ys) in series.items():
            axes.plot(xs, ys, marker="o", label=label)
        axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if log:
            axes.set_yscale("log")
        axes.set_xticks(list(next(iter(series.values()))[0]))
        axes.grid(alpha=0.3)
        axes.legend()
        self._image(name, title, figure)

    def bar_plot(
        self, name: str, title: str, ylabel: str, categories: Sequence[str], series: Mapping[str, Sequence[float]],
        *, log: bool = False,
    ) -> None:  # fmt: skip
        """Grouped bars: one group per category, one bar per series."""
        figure, axes = _pyplot().subplots(figsize=(6.5, 3.6))
        width = 0.8 / max(len(series), 1)
        for index, (label, values) in enumerate(series.items()):
            axes.bar([c + index * width for c in range(len(categories))], values, width, label=label)
        axes.set_xticks([c + width * (len(series) - 1) / 2 for c in range(len(categories))], categories)
        axes.set(title=title, ylabel=ylabel)
        if log:
            axes.set_yscale("log")
        axes.grid(alpha=0.3, axis="y")
        axes.legend()
        self._image(name, title, figure)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt
