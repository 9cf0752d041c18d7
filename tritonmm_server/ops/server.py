"""Run tritonserver from the nvidia-pytriton wheel: :class:`TritonServer`.

Stdlib only (the HTTP checks use urllib), so it runs in any venv. ``TritonServer``
owns one server process group and its shared-memory regions, starts it with the
environment of :mod:`.binary`, waits until every model is READY, and cleans both up
on ``stop()`` (:mod:`.process`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from tritonmm_server.ops.binary import check_numpy, ensure_python_stub, find_tritonserver_dir, server_environment
from tritonmm_server.ops.errors import ModelLoadError, PortInUse, ServerExited, ServerStartTimeout, TritonServerError
from tritonmm_server.ops.network import LOOPBACK, check_port_free, free_ports, loopback_request
from tritonmm_server.ops.process import remove_shm_regions, terminate_process_group

LOG = logging.getLogger(__name__)

# Model states reported by POST /v2/repository/index.
STATE_READY = "READY"
STATE_UNAVAILABLE = "UNAVAILABLE"
# The reason Triton gives for a version that was unloaded on purpose, not a failure.
REASON_UNLOADED = "unloaded"

# Log lines every start on a machine without a GPU prints: harmless (the server runs
# on the CPU), and they would only hide the real cause in the log tail of an error.
_HARMLESS_LOG = re.compile(
    r"CUDA driver version is insufficient|CudaDriverHelper has not been initialized"
    r"|Failed to initialize NVML|DCGM unable to start|Unable to allocate pinned system memory"
)
_PORT_IN_USE_LOG = re.compile(r"failed to start (\w+) service: .*?'([^']+)' already in use")


@dataclass(frozen=True)
class ModelState:
    """One entry of ``POST /v2/repository/index``."""

    name: str
    version: str
    state: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.state == STATE_UNAVAILABLE and self.reason != REASON_UNLOADED


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


class TritonServer:
    """One tritonserver process (and its python stubs) in a process group of its own.

    Models are loaded in explicit model-control mode with ``--load-model=*`` (or the
    names given in ``models``), so they can later be loaded and unloaded through the
    repository API. ``start()`` returns when every requested model is READY.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        models: Sequence[str] | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = LOOPBACK,
        log_path: Path | None = None,
        strict_readiness: bool = False,
        exit_timeout_s: int = 30,
        response_cache_bytes: int = 256 * 1024 * 1024,
        extra_args: Sequence[str] = (),
        tritonserver_dir: Path | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models) if models is not None else None
        self.host = host
        self.strict_readiness = strict_readiness
        self.exit_timeout_s = exit_timeout_s
        self.response_cache_bytes = response_cache_bytes
        self.extra_args = list(extra_args)
        self._requested_ports = (http_port, grpc_port, metrics_port)
        self._tritonserver_dir = tritonserver_dir
        self._log_path = Path(log_path).resolve() if log_path else None
        # Unique per server: lets stop() remove exactly this server's leftover
        # /dev/shm regions after a crash or SIGKILL (the stubs' regions are named by this prefix).
        self.shm_prefix = f"tmm_{os.getpid()}_{secrets.token_hex(4)}_"
        self._ports: Ports | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- properties -----------------------------------------------------------------------

    @property
    def ports(self) -> Ports:
        if self._ports is None:
            raise TritonServerError("the server has not been started")
        return self._ports

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        """``host:port``, the form tritonclient.grpc and the plugin's gRPC endpoint take."""
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._log_path = Path(tempfile.mkdtemp(prefix="tritonmm-")) / "tritonserver.log"
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> TritonServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 300.0) -> TritonServer:
        """Start the server and wait until it is live and every requested model is READY.

        Raises ``ModelLoadError`` (with the model's reason and the log tail) as soon
        as a model ends UNAVAILABLE, ``PortInUse``, ``ServerExited`` or
        ``ServerStartTimeout``. On any failure the process group is already gone.
        """
        if self._process is not None:
            raise TritonServerError("the server is already started")
        root = self._tritonserver_dir or find_tritonserver_dir()
        ensure_python_stub(root)
        check_numpy()
        self._ports = self._resolve_ports()
        command = self._command(root)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The server's stdout/stderr, stubs included, go to the log: model print()s
        # and tracebacks land there, next to the server's own lines.
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        LOG.debug("starting %s", " ".join(command))
        started = time.monotonic()
        self._process = subprocess.Popen(
            command,
            env=server_environment(),
            cwd=self.log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals server and stubs together
        )
        atexit.register(self.stop)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        LOG.info("tritonserver ready in %.2f s at %s", time.monotonic() - started, self.http_url)
        return self

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``, remove our shm regions.

        ``timeout`` defaults to the server's own exit timeout plus a margin: Triton
        waits up to ``exit_timeout_s`` for open HTTP connections (an idle keep-alive
        client connection counts!) and in-flight requests. When that expires it exits
        without unloading the models and the stubs are killed here. Idempotent;
        returns the server's exit status (None if it was never started).
        """
        process = self._process
        if process is None:
            return None
        grace = self.exit_timeout_s + 15.0 if timeout is None else timeout
        try:
            terminate_process_group(process.pid, grace)
            with suppress(subprocess.TimeoutExpired):
                process.wait(5.0)  # reap it: it has exited or been killed by now
            return process.returncode
        finally:
            self._process = None
            removed = remove_shm_regions(self.shm_prefix)
            if removed:
                LOG.info("removed %d leftover shared-memory region(s) of %s", len(removed), self.shm_prefix)
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            atexit.unregister(self.stop)

    def detach(self) -> int:
        """Leave the server running when this Python process exits; returns its process group.

        Whoever detaches takes over clean-up: ``terminate_process_group(pgid, ...)``
        and ``remove_shm_regions(self.shm_prefix)`` (the launcher's ``stop`` command).
        """
        if not self.is_running():
            raise TritonServerError("the server is not running")
        assert self._process is not None
        pgid = self._process.pid
        self._process = None
        if self._log_file is not None:
            self._log_file.close()  # the server keeps its own descriptor
            self._log_file = None
        atexit.unregister(self.stop)
        return pgid

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or ``timeout``); its exit status or None."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- queries --------------------------------------------------------------------------

    def is_live(self) -> bool:
        answer = loopback_request("GET", f"{self.http_url}/v2/health/live", timeout=1.0)
        return answer is not None and answer[0] == 200

    def model_states(self) -> list[ModelState]:
        """``POST /v2/repository/index``: every model version the server knows of."""
        answer = loopback_request("POST", f"{self.http_url}/v2/repository/index", b"{}", timeout=5.0)
        if answer is None:
            raise TritonServerError(f"no answer from {self.http_url}/v2/repository/index")
        status, body = answer
        if status != 200:
            raise TritonServerError(f"repository index failed ({status}): {body.decode(errors='replace')}")
        return [
            ModelState(
                name=entry.get("name", ""),
                version=str(entry.get("version", "")),
                state=entry.get("state", ""),
                reason=entry.get("reason", ""),
            )
            for entry in json.loads(body)
        ]

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` meaningful lines of the server log (CPU-only noise dropped)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if not _HARMLESS_LOG.search(line)]
        return "\n".join(kept[-lines:])

    # -- internals ------------------------------------------------------------------------

    def _resolve_ports(self) -> Ports:
        requested = self._requested_ports
        for purpose, port in zip(("HTTP", "GRPC", "Metrics"), requested, strict=True):
            if port:
                check_port_free(self.host, port, purpose)
        picked = iter(free_ports(sum(1 for port in requested if not port), self.host))
        http, grpc, metrics = (port or next(picked) for port in requested)
        if len({http, grpc, metrics}) != 3:
            raise PortInUse(f"the HTTP, gRPC and metrics ports must differ, got {http}, {grpc}, {metrics}")
        return Ports(http=http, grpc=grpc, metrics=metrics)

    def _command(self, root: Path) -> list[str]:
        ports = self.ports
        load = [f"--load-model={name}" for name in self.models] if self.models is not None else ["--load-model=*"]
        return [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={root / 'backends'}",
            f"--cache-directory={root / 'caches'}",
            # explicit + load at start: models can be reloaded/unloaded later via the API
            "--model-control-mode=explicit",
            *load,
            # one broken model must not hide the others: the server stays up and reports it UNAVAILABLE
            f"--strict-readiness={str(self.strict_readiness).lower()}",
            "--exit-on-error=false",
            # skips a second "auto-complete" stub per model: about 3x faster start (the configs are complete)
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            # Triton binds 0.0.0.0 unless told otherwise
            f"--http-address={self.host}",
            f"--http-port={ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={ports.metrics}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            # models opt in with `response_cache { enable: true }`; identical requests
            # to embedding and rerank models are then answered without running them
            f"--cache-config=local,size={self.response_cache_bytes}",
            *self.extra_args,
        ]

    def _wait_ready(self, deadline: float) -> None:
        # In explicit mode with --load-model, HTTP only opens after the initial
        # loads have finished, so "live" alone can take a while.
        while not self.is_live():
            self._raise_if_exited()
            self._raise_if_late(deadline, "the server did not answer /v2/health/live")
            time.sleep(0.1)
        while True:
            self._raise_if_exited()
            pending = self._pending_models(self.model_states())
            if not pending:
                return
            self._raise_if_late(deadline, f"models not ready: {', '.join(pending)}")
            time.sleep(0.2)

    def _pending_models(self, states: list[ModelState]) -> list[str]:
        """Names of requested models not READY yet; raises on the first failed one."""
        by_name: dict[str, list[ModelState]] = {}
        for entry in states:
            by_name.setdefault(entry.name, []).append(entry)
        wanted = self.models if self.models is not None else sorted(by_name)
        pending = []
        for name in wanted:
            entries = by_name.get(name)
            if not entries:
                raise ModelLoadError(
                    self._with_log(f"model '{name}' is not in the repository {self.model_repository}"),
                    name,
                    "not found",
                )
            failed = next((entry for entry in entries if entry.failed), None)
            if failed is not None:
                raise ModelLoadError(
                    self._with_log(f"model '{name}' failed to load: {failed.reason.strip()}"), name, failed.reason
                )
            if not any(entry.state == STATE_READY for entry in entries):
                pending.append(f"{name} ({'/'.join(entry.state or 'not loaded' for entry in entries)})")
        return pending

    def _raise_if_exited(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is None:
            return
        if self._log_file is not None:
            self._log_file.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        in_use = _PORT_IN_USE_LOG.search(text)
        if in_use:
            raise PortInUse(self._with_log(f"{in_use.group(1)} port {in_use.group(2)} is already in use"))
        raise ServerExited(self._with_log(f"tritonserver exited with status {code} before it was ready"))

    def _raise_if_late(self, deadline: float, what: str) -> None:
        if time.monotonic() >= deadline:
            raise ServerStartTimeout(self._with_log(f"timed out: {what}"))

    def _with_log(self, message: str) -> str:
        return f"{message}\n--- last lines of {self.log_path} ---\n{self.log_tail()}"
