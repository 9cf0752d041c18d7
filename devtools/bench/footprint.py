"""Footprint: package sizes, dependency install time, the plugin's cold start, peak memory.

* Package sizes: each plugin's online package and its offline variants (the build command's).
* Install time: the daemon's install (fresh venv, ``uv sync`` from the package's lock) with a
  warm uv cache, with an empty one (everything downloaded from the package index), and an
  offline package (its own wheels, no index).
* Cold start: the installed plugin from spawn to its first heartbeat (what the daemon waits for).
* Peak memory: each server model instance (its python stub's peak resident set, VmHWM in
  /proc), the tritonserver process, and the plugin process, read after the other groups ran
  (run this group last for the peaks of a full run).
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools import plugin_harness
from devtools.bench import stats
from devtools.bench.report_tools import Report
from devtools.bench.stack import ROOT, UV_CACHE, WORK, Stack
from devtools.build_packages import build_offline_plugin, build_plugin
from devtools.pkgcheck.platforms import TARGETS
from tritonmm_server.ops.process import group_members

NAME = "footprint"
PLUGINS = {"model_provider": ROOT / "plugins" / "model_provider", "tools": ROOT / "plugins" / "tools"}
_STUB_MODEL = re.compile(
    r"/([^/]+)/\d+/model\.py"
)  # the stub's first argument: <repository>/<model>/<version>/model.py


def models(quick: bool) -> list[str]:
    return []  # measures the server the other groups started, if any


def checkpoints(quick: bool) -> dict:
    return {}


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MiB; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def server_memory(server_pid: int) -> dict[str, float]:
    """Peak MiB per model instance (python stub) of a running server, and of tritonserver itself."""
    peaks: dict[str, float] = {}
    for pid in group_members(server_pid):
        command = _cmdline(pid)
        peak = peak_rss_mb(pid)
        if peak is None:
            continue
        if pid == server_pid:
            peaks["tritonserver"] = peak
            continue
        found = next((m for arg in command if (m := _STUB_MODEL.search(arg))), None)
        name = found.group(1) if found else f"pid {pid}"
        while name in peaks:  # a second instance of the same model
            name += "'"
        peaks[name] = peak
    return peaks


def _sizes(quick: bool) -> dict[str, dict[str, int]]:
    sizes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="tmm-bench-") as out:
        for name, plugin_dir in PLUGINS.items():
            built = {"online": build_plugin(plugin_dir, Path(out)).size}
            for target_name, target in TARGETS.items():
                built[f"offline {target_name}"] = build_offline_plugin(plugin_dir, Path(out), target).size
            sizes[name] = built
    return sizes


def _install_times(stack: Stack, quick: bool) -> dict[str, float]:
    times: dict[str, float] = {}
    if "plugin_install_warm_s" in stack.timings:
        times["model_provider online, warm uv cache"] = stack.timings["plugin_install_warm_s"]
    package = stack.package.path
    with tempfile.TemporaryDirectory(prefix="tmm-bench-") as scratch:
        offline_dir = Path(scratch) / "dist"
        offline = build_offline_plugin(PLUGINS["model_provider"], offline_dir, TARGETS["amd64"]).path
        installs = {"model_provider offline amd64 (its own wheels, empty uv cache)": (offline, Path(scratch) / "c1")}
        if not quick:
            installs["model_provider online, empty uv cache (every wheel fetched from the index)"] = (
                package,
                Path(scratch) / "c2",
            )
            installs["model_provider online, warm uv cache"] = (package, UV_CACHE)
        for label, (path, cache) in installs.items():
            stack.progress.step(f"installing: {label}")
            began = time.perf_counter()
            plugin_harness.install(path, Path(scratch) / "install", uv_cache=cache)
            times[label] = time.perf_counter() - began
    return times


def _cold_start(stack: Stack, rounds: int) -> dict[str, float]:
    plugin_dir = WORK / "plugin"
    if not (plugin_dir / ".venv").is_dir():
        plugin_dir = plugin_harness.install(stack.package.path, plugin_dir, uv_cache=UV_CACHE)
    samples = []
    for index in range(rounds):
        began = time.perf_counter()
        process = plugin_harness.PluginProcess(plugin_dir)
        try:
            process.wait_ready()
            samples.append(time.perf_counter() - began)
        finally:
            process.stop()
        stack.progress.step(f"cold start {index + 1}/{rounds}: {samples[-1]:.2f} s")
    return stats.summary([1000 * s for s in samples])


def run(stack: Stack, quick: bool) -> dict:
    result: dict[str, Any] = {}
    stack.progress.step("peak memory of the server's model instances and of the plugin")
    if stack.running_server is not None:  # only a server the other groups used: one started here would be idle
        result["server_peak_mb"] = server_memory(stack.running_server.pid)
    if stack.plugin_pid is not None:
        result["plugin_peak_mb"] = peak_rss_mb(stack.plugin_pid)
    stack.progress.step("package sizes (online and offline)")
    result["package_bytes"] = _sizes(quick)
    result["install_s"] = _install_times(stack, quick)
    stack.progress.step("plugin cold start: spawn to first heartbeat")
    result["cold_start_ms"] = _cold_start(stack, 3 if quick else 7)
    return result


def render(result: dict, report: Report) -> None:
    sizes = result["package_bytes"]
    variants = list(next(iter(sizes.values())))
    report.table(["package", *variants], [
        [name, *(f"{built[v] / 1e6:.2f} MB" for v in variants)] for name, built in sizes.items()
    ])  # fmt: skip
    report.table(["install (fresh venv, as the daemon does)", "seconds"],
                 [[label, f"{seconds:.1f}"] for label, seconds in result["install_s"].items()])  # fmt: skip
    report.paragraph(
        f"**Cold start** of the installed model-provider plugin, spawn to first heartbeat: "
        f"{stats.fmt(result['cold_start_ms'], 0)} ms over {result['cold_start_ms']['n']} starts."
    )
    peaks = result.get("server_peak_mb") or {}
    if peaks:
        rows = [[name, f"{mb:.0f}"] for name, mb in sorted(peaks.items(), key=lambda item: -item[1])]
        if result.get("plugin_peak_mb"):
            rows.append(["the model-provider plugin process", f"{result['plugin_peak_mb']:.0f}"])
        report.paragraph("**Peak memory** (VmHWM, after the other groups of this run), MiB:")
        report.table(["process", "peak MiB"], rows)
