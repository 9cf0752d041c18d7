"""Lint as part of the suite: ruff's E, F, I, B, UP rules (ruff.toml) over the whole tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_print_in_plugin_process_code() -> None:
    """stdout is the daemon's protocol channel: a stray print corrupts it."""
    plugin_code = [*(ROOT / "tritonmm").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    assert len(plugin_code) > 10
    offenders = [str(p) for p in plugin_code if "print(" in p.read_text()]
    assert not offenders, offenders
