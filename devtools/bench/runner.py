"""Run the chosen case groups (:mod:`.groups`) against one stack, write each group's JSON, then the page.

A group's file, ``bench/results/<name>.json``, carries the run's conditions with the numbers:
date, machine, load average before and after, its duration and the command. A group that fails
leaves its previous file as it was; the others still run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from devtools.bench.groups import GROUPS
from devtools.bench.progress import Progress
from devtools.bench.report import write_page
from devtools.bench.report_tools import PAGE, RESULTS, ROOT


def machine() -> dict[str, Any]:
    """The CPU model, cores, memory and software a run was measured on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) * 1024
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip()


def conditions(quick: bool, command: list[str]) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "command": shlex.join(command),
        "commit": _commit(),
        "machine": machine(),
    }


def run_groups(
    names: list[str], quick: bool, command: list[str], results_dir: Path = RESULTS, page: Path = PAGE
) -> int:
    """Run the groups ``names`` in the benchmark's order; 1 when one of them failed."""
    from devtools.bench.stack import Stack

    progress = Progress()
    chosen = [name for name in GROUPS if name in names]
    models = {model for name in chosen for model in GROUPS[name].models(quick)}
    checkpoints = {k: v for name in chosen for k, v in GROUPS[name].checkpoints(quick).items()}
    stack = Stack(progress, models, checkpoints)
    shared = conditions(quick, command)
    results_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    started = time.perf_counter()
    try:
        for name in chosen:
            progress.group = name
            progress.step("started")
            load_before = os.getloadavg()
            began = time.perf_counter()
            try:
                result = GROUPS[name].run(stack, quick)
            except Exception:  # the others still run; this group's previous results stay
                failed.append(name)
                progress.step("FAILED:\n" + traceback.format_exc())
                continue
            record = {
                "group": name,
                **shared,
                "duration_s": round(time.perf_counter() - began, 1),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "stack": dict(stack.timings),
                "result": result,
            }
            (results_dir / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            progress.step(f"done in {record['duration_s']:.0f} s")
    finally:
        progress.group = ""
        progress.step("stopping the server and the plugin")
        stack.close()
    run = {**shared, "groups": chosen, "failed": failed, "duration_s": round(time.perf_counter() - started, 1)}
    if chosen == list(GROUPS):  # the record of a whole run, which the page quotes for its duration
        (results_dir / f"run-{'quick' if quick else 'full'}.json").write_text(json.dumps(run, indent=1) + "\n")
    write_page(results_dir, page)
    progress.step(f"wrote {results_dir} and {page}; the run took {run['duration_s'] / 60:.1f} min")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
