"""The server ``serve`` leaves running in the background for a work dir, recorded for ``stop``.

``<work_dir>/server.json`` holds its process group, shared-memory prefix and URLs; a
launcher refuses to render over a work dir whose server still runs, and ``stop``
ends that server and removes what it leaves behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from tritonmm_server.ops.errors import LaunchError
from tritonmm_server.ops.process import group_members, remove_shm_regions, terminate_process_group
from tritonmm_server.ops.server import TritonServer

STATE_FILE = "server.json"  # the background server of a work dir: process group, shm prefix, URLs


def _state_path(work_dir: Path) -> Path:
    return work_dir / STATE_FILE


def _read_state(work_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_path(work_dir).read_text())
    except (OSError, ValueError):
        return None
    return state


def _is_triton_group(pgid: int) -> bool:
    """True while process group ``pgid`` still holds a tritonserver or python stub.

    Checked by command line so that a recycled process-group id is never signalled.
    """
    if pgid <= 1:
        return False
    for pid in group_members(pgid):
        try:
            if b"triton" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def refuse_if_running(work_dir: Path) -> None:
    # Rendering deletes <work_dir>/repository, which a running server still reads.
    state = _read_state(work_dir)
    if state and _is_triton_group(int(state.get("pgid", 0))):
        raise LaunchError(
            f"a server started from {work_dir} is still running ({state.get('http_url')}, process group "
            f"{state['pgid']}); stop it first: python -m tritonmm_server.launch stop --work-dir {work_dir}"
        )
    if state:
        if state.get("shm_prefix"):
            remove_shm_regions(state["shm_prefix"])  # it died without cleaning up
        _state_path(work_dir).unlink(missing_ok=True)


def detach(server: TritonServer, work_dir: Path, out: TextIO = sys.stdout) -> None:
    """Leave the server running after the launcher exits, recorded for ``stop``."""
    state: dict[str, Any] = {
        "http_url": server.http_url,
        "shm_prefix": server.shm_prefix,
        "log_path": str(server.log_path),
        "exit_timeout_s": server.exit_timeout_s,
    }
    state["pgid"] = server.detach()
    _state_path(work_dir).write_text(json.dumps(state, indent=2) + "\n")
    print(
        f"running in the background; stop it with: python -m tritonmm_server.launch stop --work-dir {work_dir}",
        file=out,
    )


def stop_background(work_dir: Path, out: TextIO = sys.stdout) -> int:
    """Stop the server ``serve`` left running for ``work_dir`` and remove its leftovers."""
    state = _read_state(work_dir)
    if state is None:
        print(f"no background server recorded in {work_dir}", file=out)
        return 0
    pgid = int(state.get("pgid", 0))
    if _is_triton_group(pgid):
        # Triton's own exit timeout plus a margin, as TritonServer.stop() allows.
        terminate_process_group(pgid, float(state.get("exit_timeout_s", 30)) + 15.0)
        print(f"stopped the server at {state.get('http_url')} (process group {pgid})", file=out)
    else:
        print(f"the server at {state.get('http_url')} was no longer running", file=out)
    if state.get("shm_prefix"):
        remove_shm_regions(state["shm_prefix"])
    _state_path(work_dir).unlink(missing_ok=True)
    return 0
