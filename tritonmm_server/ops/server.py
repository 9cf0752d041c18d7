"""Locate and run the tritonserver binary that ships inside the nvidia-pytriton wheel.

Everything here is stdlib only (the HTTP checks use urllib), so it runs in any venv.
The python-backend stub embeds whichever ``python3`` it finds on PATH and links the
``libpython`` the dynamic linker finds, so the environment built by
:func:`server_environment` is what makes models see this venv's packages (see the
server notes, §5.1). ``TritonServer`` owns one server process group and its
shared-memory regions, and cleans both up on ``stop()``.
"""

from __future__ import annotations

import atexit
import errno
import filecmp
import glob
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

LOG = logging.getLogger(__name__)

# The repository root (the parent of this package): on the models' PYTHONPATH so
# that model.py files can `import tritonmm` and `import tritonmm_server`.
REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "tritonmm_server" / "requirements.txt"

LOOPBACK = "127.0.0.1"
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")

# Model states reported by POST /v2/repository/index.
STATE_READY = "READY"
STATE_UNAVAILABLE = "UNAVAILABLE"
# The reason Triton gives for a version that was unloaded on purpose, not a failure.
REASON_UNLOADED = "unloaded"

# Log lines every CPU-only start prints; they are harmless (notes §0) and would
# only hide the real cause in the log tail we put into error messages.
_HARMLESS_LOG = re.compile(
    r"CUDA driver version is insufficient|CudaDriverHelper has not been initialized"
    r"|Failed to initialize NVML|DCGM unable to start|Unable to allocate pinned system memory"
)
_PORT_IN_USE_LOG = re.compile(r"failed to start (\w+) service: .*?'([^']+)' already in use")


class TritonServerError(RuntimeError):
    """Base class of everything this module raises."""


class ServerNotInstalled(TritonServerError):
    """The tritonserver binary, its python-backend stub or numpy is missing."""


class PortInUse(TritonServerError):
    """A requested port is taken by another process."""


class ServerExited(TritonServerError):
    """The server process ended while we waited for it."""


class ServerStartTimeout(TritonServerError):
    """The server or a model did not become ready in time."""


class ModelLoadError(TritonServerError):
    """A model ended UNAVAILABLE; ``reason`` is Triton's text (usually the traceback)."""

    def __init__(self, message: str, model: str, reason: str) -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason


def _install_hint() -> str:
    return f"install the server requirements: {sys.executable} -m pip install -r {REQUIREMENTS}"


# --- locating the binary and the python-backend stub ----------------------------


def find_tritonserver_dir() -> Path:
    """The ``tritonserver`` directory of the installed nvidia-pytriton wheel.

    Uses ``find_spec`` rather than importing pytriton, which would pull in its
    whole client stack just to learn a path.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerNotInstalled(f"nvidia-pytriton is not installed in {sys.prefix}; {_install_hint()}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not os.access(binary, os.X_OK):
        raise ServerNotInstalled(f"no executable tritonserver at {binary}; {_install_hint()}")
    return root


def ensure_python_stub(tritonserver_dir: Path, version: tuple[int, int] | None = None) -> Path:
    """Copy the stub built for this interpreter's major.minor into ``backends/python``.

    The wheel ships one stub per Python version and none in ``backends/python``;
    a stub for another version would link the wrong libpython. Idempotent, and the
    copy is atomic (temp file + rename) so two launchers racing cannot leave a
    half-written binary, and a server already running keeps its old inode.
    """
    major, minor = version or sys.version_info[:2]
    source = tritonserver_dir / "python_backend_stubs" / f"{major}.{minor}" / STUB_NAME
    if not source.is_file():
        raise ServerNotInstalled(f"nvidia-pytriton ships no python-backend stub for Python {major}.{minor} ({source})")
    target = tritonserver_dir / "backends" / "python" / STUB_NAME
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return target
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{STUB_NAME}.", dir=target.parent)
        os.close(fd)
        shutil.copy2(source, tmp_name)
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    except OSError as exc:
        raise ServerNotInstalled(f"cannot install the python-backend stub into {target.parent}: {exc}") from exc
    LOG.info("installed the Python %d.%d python-backend stub into %s", major, minor, target.parent)
    return target


def _check_numpy() -> None:
    # triton_python_backend_utils imports numpy: without it no python model loads,
    # and the error would only surface per model, deep in the server log (notes §5.1).
    if importlib.util.find_spec("numpy") is None:
        raise ServerNotInstalled(f"numpy is missing from {sys.prefix}; {_install_hint()}")


# --- the server's environment ---------------------------------------------------------


def _prepend(entry: str, current: str | None) -> str:
    """``entry`` first, then the old entries without duplicates of it or empty items."""
    rest = [item for item in (current or "").split(os.pathsep) if item and item != entry]
    return os.pathsep.join([entry, *rest])


def python_libdir() -> Path:
    """The base interpreter's LIBDIR, where its own ``libpython`` lives."""
    return Path(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib")


def server_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for tritonserver and, through inheritance, its python stubs.

    * PATH: this venv's ``bin`` first. The embedded interpreter derives its prefix
      from the first ``python3`` on PATH; that is how it finds this venv's
      site-packages (torch, transformers, numpy).
    * LD_LIBRARY_PATH: the base interpreter's LIBDIR first. Otherwise the stub may
      link a distribution libpython of another patch release, and C extensions of
      the venv's stdlib (``_ssl``) fail with undefined symbols (notes §5.1).
    * PYTHONPATH: the repository root, so models import ``tritonmm`` from this tree.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = _prepend(str(Path(sys.prefix) / "bin"), env.get("PATH", os.defpath))
    libdir = python_libdir()
    soname = sysconfig.get_config_var("INSTSONAME")
    if soname and not (libdir / soname).exists():
        LOG.warning(
            "%s has no %s (a Python built without --enable-shared?): the python stub will link "
            "whatever libpython the system has, which breaks imports of ssl/transformers "
            "when the patch versions differ",
            libdir,
            soname,
        )
    env["LD_LIBRARY_PATH"] = _prepend(str(libdir), env.get("LD_LIBRARY_PATH"))
    env["PYTHONPATH"] = _prepend(str(REPO_ROOT), env.get("PYTHONPATH"))
    return env


# --- ports ------------------------------------------------------------------------------


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports the kernel considers free right now.

    All sockets are held open until every port is picked so the same port cannot
    come back twice. Another process may still take one before tritonserver binds
    it; the server then exits and ``start()`` reports ``PortInUse``.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def check_port_free(host: str, port: int, purpose: str) -> None:
    """Raise ``PortInUse`` if ``port`` cannot be bound.

    SO_REUSEADDR mirrors what the server does, so a port that only has
    connections in TIME_WAIT is not reported as taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(
                    f"{purpose} port {host}:{port} is already in use "
                    f"(pick another with --{purpose.lower()}-port, or stop the process holding it)"
                ) from exc
            raise


# --- talking to the server (stdlib only) ------------------------------------------------

# No proxies: an http_proxy in the environment must not capture loopback health checks.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """(status, body) of one request, or None when nothing answered."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None


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


# --- process-group helpers ----------------------------------------------------------------


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


# --- the server ----------------------------------------------------------------------------


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
        # /dev/shm regions after a crash or SIGKILL (notes §8).
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
        _check_numpy()
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
        answer = _http("GET", f"{self.http_url}/v2/health/live", timeout=1.0)
        return answer is not None and answer[0] == 200

    def model_states(self) -> list[ModelState]:
        """``POST /v2/repository/index``: every model version the server knows of."""
        answer = _http("POST", f"{self.http_url}/v2/repository/index", b"{}", timeout=5.0)
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
            # one broken model must not hide the others (notes §6, §8)
            f"--strict-readiness={str(self.strict_readiness).lower()}",
            "--exit-on-error=false",
            # skips a second "auto-complete" stub per model: ~3x faster start (notes §6)
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
        # loads have finished (notes §5.3), so "live" alone can take a while.
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
