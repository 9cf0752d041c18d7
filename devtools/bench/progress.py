"""Progress lines on stderr while a benchmark runs: elapsed time, the group, what it is doing."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.started = time.perf_counter()
        self.group = ""

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def step(self, message: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        where = f"{self.group}: " if self.group else ""
        load = os.getloadavg()[0]
        print(f"[{minutes:02d}:{seconds:02d} load {load:.1f}] {where}{message}", file=self.out, flush=True)

    def rounds(self, what: str, total: int):
        """A callback for :func:`devtools.bench.stats.alternate`: one line per finished round."""

        def done(index: int) -> None:
            self.step(f"{what}: round {index + 1}/{total}")

        return done
