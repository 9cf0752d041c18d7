"""Process groups and shared-memory regions of a tritonserver and its python stubs.

A server runs in a process group of its own; stopping it means signalling the group,
waiting, and removing the ``/dev/shm`` regions a crash or a kill leaves behind.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

LOG = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the command name, which may itself contain spaces or parens.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _alive(state: tuple[str, int] | None) -> bool:
    # Zombies count as gone: in a container whose PID 1 does not reap orphans,
    # killed stubs linger as zombies forever, and killpg(pgid, 0) would still succeed.
    return state is not None and state[0] not in ("Z", "X")


def _leader_alive(pgid: int) -> bool:
    state = _proc_state(pgid)
    return _alive(state) and state is not None and state[1] == pgid  # not a recycled pid


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = _proc_state(int(entry.name))
            if _alive(state) and state is not None and state[1] == pgid:
                members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 1:  # killpg(0) would signal our own group, killpg(1) init's
        raise ValueError(f"refusing to signal process group {pgid}")
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# How long python stubs may outlive their server before they are killed. They
# trap SIGTERM; after an unclean server exit (e.g. the exit timeout expired
# before the models were unloaded) nothing else ever ends them.
STUB_GRACE_S = 2.0


def terminate_process_group(pgid: int, grace: float) -> bool:
    """Stop the server whose pid is ``pgid`` and everything in its process group.

    SIGTERM goes to the whole group; the server gets ``grace`` seconds to exit
    (Triton itself waits up to its exit timeout for open connections and
    in-flight requests), leftover stubs get ``STUB_GRACE_S`` more; then the group
    is SIGKILLed. Returns True when nothing had to be killed.
    """
    _signal_group(pgid, signal.SIGTERM)
    clean = _wait_until(lambda: not _leader_alive(pgid), grace) and _wait_until(
        lambda: not group_members(pgid), STUB_GRACE_S
    )
    if not clean:
        LOG.warning("process group %d did not end after SIGTERM (%s); killing it", pgid, group_members(pgid))
        _signal_group(pgid, signal.SIGKILL)
        _wait_until(lambda: not group_members(pgid), 5.0)
    return clean


def remove_shm_regions(prefix: str) -> list[Path]:
    """Delete ``/dev/shm/<prefix>*``: what a crashed or killed server leaves behind.

    A clean shutdown removes its regions itself; a crash, a SIGKILL or a failed
    start (e.g. a port in use after the models loaded) does not.
    """
    if not prefix:
        raise ValueError("an empty prefix would match every region in /dev/shm")
    removed = []
    for region in SHM_DIR.glob(f"{glob.escape(prefix)}*"):
        with suppress(FileNotFoundError):
            region.unlink()
            removed.append(region)
    return removed
