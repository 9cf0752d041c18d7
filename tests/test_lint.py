"""Lint as part of the suite: ruff's E, F, I, B, UP rules (ruff.toml) over the whole tree."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.import_scan import ROOT, python_files


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def stdout_writes(source: str, label: str) -> list[str]:
    """``print(...)`` calls and any use of ``sys.stdout`` / ``sys.__stdout__`` in one file's source."""
    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"{label}:{node.lineno}: print()")
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "__stdout__"):
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append(f"{label}:{node.lineno}: sys.{node.attr}")
    return found


def test_no_stdout_in_plugin_process_code() -> None:
    """stdout is the daemon's protocol channel: a stray line corrupts it, one over 5 MiB kills the plugin."""
    plugin_code = [*python_files(ROOT / "tritonmm"), *python_files(ROOT / "plugins")]
    assert len(plugin_code) > 10
    offenders = [hit for p in plugin_code for hit in stdout_writes(p.read_text(), str(p.relative_to(ROOT)))]
    assert not offenders, offenders


def test_stdout_scan_finds_print_and_sys_stdout() -> None:
    sample = "import sys\n\n\ndef f():\n    print('x')\n    sys.stdout.write('y')\n    log.print_stats()\n"
    assert stdout_writes(sample, "sample.py") == ["sample.py:5: print()", "sample.py:6: sys.stdout"]
