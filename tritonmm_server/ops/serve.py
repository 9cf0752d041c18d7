"""Start the planned models and serve them: :func:`launch`, the status table, the foreground loop."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tritonmm.contract import CRED_GRPC_ENDPOINT, CRED_SERVER_URL
from tritonmm_server.ops.planning import LaunchOptions, ModelPlan, plan_models
from tritonmm_server.ops.repository import render_repository
from tritonmm_server.ops.server import ModelState, TritonServer
from tritonmm_server.ops.state import refuse_if_running
from tritonmm_server.ops.weights import PACKAGED_WEIGHTS, WEIGHTS_TINY, tiny_notice

WILDCARD = "0.0.0.0"


def launch(options: LaunchOptions, out: TextIO = sys.stdout) -> TritonServer:
    """Plan, render and start; returns the running server (the caller stops it)."""
    work_dir = Path(options.work_dir).resolve()
    refuse_if_running(work_dir)
    plans = plan_models(options, out)
    rendered = work_dir / "repository"
    render_repository(
        Path(options.repository),
        rendered,
        overrides={plan.name: plan.parameters for plan in plans if plan.parameters},
        include=[plan.name for plan in plans],
    )
    server = TritonServer(
        rendered,
        host=options.host,
        http_port=options.http_port or None,
        grpc_port=options.grpc_port or None,
        metrics_port=options.metrics_port or None,
        log_path=work_dir / "tritonserver.log",
        exit_timeout_s=options.exit_timeout_s,
    )
    print(f"starting tritonserver (log: {server.log_path}) ...", file=out, flush=True)
    server.start(timeout=options.start_timeout)
    try:
        print_status(server, plans, out)
    except BaseException:
        server.stop()  # the caller never gets a handle to stop it
        raise
    return server


def print_status(server: TritonServer, plans: Sequence[ModelPlan], out: TextIO = sys.stdout) -> None:
    states = _states_by_name(server.model_states())
    rows = [("MODEL", "STATE", "WEIGHTS", "PATH")]
    rows += [(p.name, states.get(p.name, "?"), p.weights or "-", _weights_source(p)) for p in plans]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3], file=out)
    for plan in plans:
        if plan.weights == WEIGHTS_TINY:
            print(tiny_notice(plan.name, plan.task), file=out)
    if server.host == WILDCARD:
        reach = socket.gethostname()  # 0.0.0.0 is where it listens, not an address to connect to
        where = (
            f"The server listens on every interface ({WILDCARD}): use a name or address of this machine that "
            "Dify's plugin daemon reaches. Triton has no authentication: keep the ports off untrusted networks."
        )
    else:
        reach = server.host
        where = f"The server listens on {server.host} only, so Dify's plugin daemon must run on this host."
    print(
        f"\nHTTP:    {server.http_url}\ngRPC:    {server.grpc_url}\nmetrics: {server.metrics_url}\n"
        f"log:     {server.log_path}\n\n"
        f"Point Dify at it: in the Triton Multimodal plugin's credentials set\n"
        f"  Server URL ({CRED_SERVER_URL}):       http://{reach}:{server.ports.http}\n"
        f"  gRPC endpoint ({CRED_GRPC_ENDPOINT}): {reach}:{server.ports.grpc}\n"
        f"{where}",
        file=out,
        flush=True,
    )


def _weights_source(plan: ModelPlan) -> str:
    return str(plan.model_path or PACKAGED_WEIGHTS.get(plan.task or "", "-"))


def _states_by_name(states: Sequence[ModelState]) -> dict[str, str]:
    by_name: dict[str, str] = {}
    for entry in states:
        by_name[entry.name] = "/".join(filter(None, [by_name.get(entry.name), entry.state or "not loaded"]))
    return by_name


def sigterm_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally``/``except`` blocks stop the server.

    The server runs in a session of its own and gets neither signal from the
    terminal; without this, a SIGTERM during start-up would orphan it.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def serve_foreground(server: TritonServer, out: TextIO = sys.stdout) -> int:
    """Run until Ctrl-C or SIGTERM, then stop the server; 1 if it died on its own."""
    sigterm_as_interrupt()
    print("serving; press Ctrl-C to stop", file=out, flush=True)
    try:
        while True:
            code = server.wait(timeout=1.0)
            if code is not None:
                print(f"tritonserver exited with status {code}:\n{server.log_tail()}", file=sys.stderr)
                server.stop()
                return 1
    except KeyboardInterrupt:
        # A second Ctrl-C must not cut stop() short and leave stubs and shm behind;
        # stop() is bounded anyway (exit timeout, then SIGKILL).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"stopping (waits up to {server.exit_timeout_s} s for connected clients) ...", file=out, flush=True)
        server.stop()
        print("stopped", file=out, flush=True)
