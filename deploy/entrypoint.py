"""The container's entrypoint: Triton with the bundled models, on checkpoints from a mounted volume.

    python -m deploy.entrypoint        (the image's ENTRYPOINT; the settings are in deploy.settings)

It does what ``python -m tritonmm_server.launch --foreground`` does, the way a container needs it:

* settings come from ``TMM_*`` environment variables;
* every checkpoint directory is checked before anything is built or started: one that is not
  there is an error that lists what the volume holds (exit status 2), never a download;
* a model that would fall back to tiny random weights is refused unless
  ``TMM_ALLOW_TINY_WEIGHTS=1``;
* Triton listens on ``TMM_HOST`` (0.0.0.0), so other containers and pods reach it;
* the server log (Triton's lines and the models') is copied to stdout, where ``docker logs``
  and ``kubectl logs`` read it;
* SIGTERM (``docker stop``, a pod's termination) stops Triton gracefully: in-flight requests
  and streams get ``TMM_EXIT_TIMEOUT`` seconds, then the process exits 0. It exits 1 when
  Triton or a model fails, at start or later.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from deploy.settings import (
    ALLOW_TINY,
    CHECKPOINT_PREFIX,
    CHECKPOINT_ROOT,
    MODELS,
    TRITONSERVER_DIR,
    Settings,
    SettingsError,
    read_settings,
)
from tritonmm.contract import CRED_GRPC_ENDPOINT, CRED_SERVER_URL
from tritonmm_server.ops.errors import LaunchError, TritonServerError
from tritonmm_server.ops.planning import LaunchOptions, ModelPlan, plan_models
from tritonmm_server.ops.process import remove_shm_regions
from tritonmm_server.ops.repository import RepositoryError, render_repository
from tritonmm_server.ops.serve import serve_foreground, sigterm_as_interrupt
from tritonmm_server.ops.server import TritonServer
from tritonmm_server.ops.weights import WEIGHTS_TINY

LOG_NAME = "tritonserver.log"
# TritonServer names the shared-memory regions of each server tmm_<pid>_<random>_...
SHM_PREFIX = "tmm_"
EXIT_SETTINGS = 2  # a setting or a checkpoint directory is wrong: nothing was started
EXIT_FAILED = 1  # Triton or a model failed


def check_checkpoint_dirs(settings: Settings) -> None:
    """A SettingsError naming every ``TMM_CHECKPOINT_*`` whose directory is not there.

    Runs before anything is built or started. The launcher checks what is inside each
    directory next (config.json, voices, a Whisper layout); this says where to look first.
    """
    missing = [(model, path) for model, path in sorted(settings.checkpoints.items()) if not path.is_dir()]
    if not missing:
        return
    lines = [f"{CHECKPOINT_PREFIX}{model}: {path} is not a directory in this container" for model, path in missing]
    lines.append(f"{settings.checkpoint_root} ({CHECKPOINT_ROOT}) holds: {_listing(settings.checkpoint_root)}")
    lines.append(
        "Nothing is downloaded here: copy each checkpoint onto the volume mounted at "
        f"{settings.checkpoint_root} (e.g. `python -m tritonmm_server.launch fetch <hub id> --dest DIR` "
        "on a machine that reaches the Hugging Face hub), then start again."
    )
    raise SettingsError("\n".join(lines))


def _listing(root: Path) -> str:
    if not root.is_dir():
        return "nothing: it does not exist (is the checkpoint volume mounted?)"
    names = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    return ", ".join(names) if names else "no directories"


def check_tritonserver_dir(settings: Settings) -> None:
    root = settings.tritonserver_dir
    if root is not None and not os.access(root / "bin" / "tritonserver", os.X_OK):
        raise SettingsError(f"{TRITONSERVER_DIR}={root}: there is no executable {root / 'bin' / 'tritonserver'}")


def plan(settings: Settings) -> list[ModelPlan]:
    """The launcher's plan for each model; refuses tiny random weights unless they are allowed."""
    notices = io.StringIO()  # the launcher's tiny-weights notice speaks of --checkpoint; ours names the variable
    options = LaunchOptions(
        repository=settings.repository,
        work_dir=settings.work_dir,
        checkpoints=settings.checkpoints,
        models=settings.models,
    )
    try:
        plans = plan_models(options, out=notices)
    except LaunchError as exc:
        raise SettingsError(
            f"{exc}\n(in this container, --checkpoint NAME=DIR is {CHECKPOINT_PREFIX}NAME=DIR)"
        ) from exc
    tiny = [entry.name for entry in plans if entry.weights == WEIGHTS_TINY]
    if tiny and not settings.allow_tiny:
        raise SettingsError(
            f"no checkpoint for {', '.join(tiny)}: set "
            + ", ".join(f"{CHECKPOINT_PREFIX}{name}=<dir under {settings.checkpoint_root}>" for name in tiny)
            + f"; or leave {'it' if len(tiny) == 1 else 'them'} out with {MODELS}=<the models to serve>; "
            f"or, for a smoke test only, {ALLOW_TINY}=1 (tiny random weights: the answers are gibberish)"
        )
    for name in tiny:
        print(f"{name}: TINY RANDOM WEIGHTS ({ALLOW_TINY}=1): the answers are gibberish", flush=True)
    return plans


def build_server(settings: Settings, plans: Sequence[ModelPlan]) -> TritonServer:
    """Render the repository for ``plans`` under the work dir; the server is not started yet."""
    rendered = settings.work_dir / "repository"
    render_repository(
        settings.repository,
        rendered,
        overrides={entry.name: entry.parameters for entry in plans if entry.parameters},
        include=[entry.name for entry in plans],
    )
    log_path = settings.work_dir / LOG_NAME
    log_path.unlink(missing_ok=True)  # the log follower must not replay an earlier run's log
    return TritonServer(
        rendered,
        http_port=settings.http_port or None,
        grpc_port=settings.grpc_port or None,
        metrics_port=settings.metrics_port or None,
        host=settings.host,
        log_path=log_path,
        exit_timeout_s=settings.exit_timeout,
        extra_args=settings.triton_args,
        tritonserver_dir=settings.tritonserver_dir,
    )


class LogFollower:
    """Copies what is appended to a file into a stream, from a thread, until stopped.

    TritonServer writes the server's and the stubs' output to a log file (its error
    messages quote the tail of it); a container's logs are its stdout, so this copies it there.
    """

    def __init__(self, path: Path, sink: BinaryIO, poll_s: float = 0.2) -> None:
        self.path = path
        self.sink = sink
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Copy what is left, then end the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        handle: BinaryIO | None = None
        try:
            while True:
                stopping = self._stop.is_set()  # read before the last read, so nothing written before stop() is lost
                if handle is None:
                    try:
                        handle = open(self.path, "rb")  # noqa: SIM115 - closed in finally
                    except FileNotFoundError:
                        if stopping:
                            return
                        self._stop.wait(self.poll_s)
                        continue
                if handle.tell() > self.path.stat().st_size:
                    handle.seek(0)  # truncated and rewritten
                chunk = handle.read(1 << 16)
                if chunk:
                    self.sink.write(chunk)
                    self.sink.flush()
                    continue
                if stopping:
                    return
                self._stop.wait(self.poll_s)
        except OSError as exc:  # the log vanished or the stream closed: the server itself is unaffected
            print(f"log follower stopped: {exc}", file=sys.stderr, flush=True)
        finally:
            if handle is not None:
                handle.close()


def print_ready(server: TritonServer, plans: Sequence[ModelPlan]) -> None:
    states: dict[str, str] = {}
    for entry in server.model_states():
        states[entry.name] = entry.state or "not loaded"
    ports = server.ports
    print(
        f"ready on {server.host}: HTTP {ports.http}, gRPC {ports.grpc}, metrics {ports.metrics} (/metrics)",
        flush=True,
    )
    width = max(len(entry.name) for entry in plans)
    for entry in plans:
        source = (entry.model_path or "weights inside its package") if entry.weights else "no weights"
        state = states.get(entry.name, "?")
        print(f"  {entry.name.ljust(width)}  {state:<11} {entry.weights or '-':<10}  {source}", flush=True)
    print(
        "Plugin credentials, from a container on the same network (HOST: this service's or container's name):\n"
        f"  Server URL ({CRED_SERVER_URL}):       http://HOST:{ports.http}\n"
        f"  gRPC endpoint ({CRED_GRPC_ENDPOINT}): HOST:{ports.grpc}",
        flush=True,
    )


def prepare(settings: Settings) -> tuple[TritonServer, list[ModelPlan]]:
    """Every check, the plan and the rendered repository: the server, ready to start, and the plan."""
    for name in settings.unknown:
        print(f"warning: {name} is not a setting of this entrypoint (see deploy/settings.py); ignored", flush=True)
    check_checkpoint_dirs(settings)
    check_tritonserver_dir(settings)
    plans = plan(settings)
    if settings.clear_shm:
        removed = remove_shm_regions(SHM_PREFIX)
        if removed:
            print(f"removed {len(removed)} shared-memory region(s) left by an earlier server", flush=True)
    return build_server(settings, plans), plans


def run(environ: Mapping[str, str]) -> int:
    """Start, serve until SIGTERM or SIGINT, stop; the exit status."""
    sigterm_as_interrupt()  # a stop during the minutes of model loading must stop Triton too
    try:
        settings = read_settings(environ)
        server, plans = prepare(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETTINGS
    except (LaunchError, RepositoryError, TritonServerError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("stopped before the server started", flush=True)
        return 0
    follower = LogFollower(server.log_path, sys.stdout.buffer)
    follower.start()
    try:
        print(f"starting tritonserver on {settings.host} (models load before the health endpoints answer)", flush=True)
        try:
            server.start(timeout=settings.start_timeout)
        except TritonServerError as exc:  # start() has stopped the server already
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("stopped during start-up", flush=True)
            return 0
        print_ready(server, plans)
        return serve_foreground(server)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late second SIGTERM must not cut the log short
        follower.stop()


def main() -> int:
    # Library logs (tritonmm_server.ops) go to stdout with the rest.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    return run(os.environ)


if __name__ == "__main__":
    sys.exit(main())
