"""The numbers of a benchmark: medians with their spread, percentiles, ratios, A/B rounds.

Plain functions on lists of floats, so the report and its test need no server.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the two nearest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of one measurement: the range and the 10th-90th percentiles."""
    if not values:
        raise ValueError("summary of no values")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "p10": percentile(values, 10),
        "p90": percentile(values, 90),
        "n": len(values),
    }


def ratio(a: Mapping[str, float], b: Mapping[str, float]) -> float | None:
    """``a``'s median over ``b``'s (two summaries); None when ``b``'s is zero."""
    return a["median"] / b["median"] if b["median"] else None


def meets_overhead_target(ours: Mapping[str, float], raw: Mapping[str, float], factor: float, slack: float) -> bool:
    """Whether ``ours`` stays within ``factor`` × ``raw`` + ``slack`` (medians, same unit)."""
    return ours["median"] <= factor * raw["median"] + slack


def alternate(
    sides: Mapping[str, Callable[[], Any]],
    rounds: int,
    *,
    warmup: int = 1,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[Any]]:
    """Each side's results over ``rounds``, the sides taking turns: A then B, then B then A, ...

    Drift on a shared machine (another job starting, a CPU slowing down) then falls on both
    sides alike. Every side runs ``warmup`` times first, unrecorded.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    results: dict[str, list[Any]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(sides[name]())
        if on_round is not None:
            on_round(index)
    return results


def fmt(summary_: Mapping[str, float] | None, digits: int = 1) -> str:
    """``median (min–max)`` for a table cell; ``–`` when not measured."""
    if not summary_:
        return "–"
    return f"{summary_['median']:.{digits}f} ({summary_['min']:.{digits}f}–{summary_['max']:.{digits}f})"
