"""Play the Dify plugin daemon's part for a built `.difypkg`, over stdio.

What the daemon does (docs/dify-daemon.md §2, §3), done here:
unpack the package into a fresh directory, create a Python 3.12 venv with uv
and install the package's own locked dependencies (`uv sync --no-dev --frozen`),
start `python -m main` with INSTALL_METHOD=local, wait for the first heartbeat,
then exchange newline-delimited JSON sessions. Every stdout line is checked the
way the daemon reads it: JSON, under the 5 MiB line cap, and stream chunks of
`invoke_llm` against the daemon's Go types.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 5 * 1024 * 1024  # daemon's PLUGIN_RUNTIME_MAX_BUFFER_SIZE
HEARTBEAT_TIMEOUT = 120.0  # daemon's MAX_HEARTBEAT_INTERVAL
USAGE_FIELDS = (
    "prompt_tokens", "prompt_unit_price", "prompt_price_unit", "prompt_price",
    "completion_tokens", "completion_unit_price", "completion_price_unit", "completion_price",
    "total_tokens", "total_price", "currency", "latency",
)  # fmt: skip


class PluginError(Exception):
    """The plugin answered a session with {"type": "error"}."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class ProtocolViolation(AssertionError):
    """The plugin wrote something the real daemon would reject."""


def python312() -> str:
    """A Python 3.12 interpreter, as the daemon's `uv venv --python 3.12` would pick."""
    candidates = [
        shutil.which("python3.12"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
    ]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError("no working python3.12 found (the Dify daemon runs plugins on 3.12)")


def uv_binary() -> str:
    beside = Path(sys.executable).parent / "uv"  # installed by requirements-dev.txt
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise RuntimeError("uv is required (pip install uv): the daemon installs plugins with it")
    return found


def install(
    package: Path,
    dest: Path,
    *,
    uv_cache: Path | None = None,
    network: bool = True,
    pip_mirror_url: str | None = None,
) -> Path:
    """Unpack and install a package the way the daemon's local runtime does.

    ``network=False`` runs uv in a network namespace without interfaces: a daemon in a closed
    network. Only an offline package (requirements.txt from its own wheels/) installs there.
    ``pip_mirror_url`` is the daemon's PIP_MIRROR_URL (set by hand or by its mirror probe): it
    makes the daemon prefer requirements.txt and passes ``-i`` to uv.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(dest)
    # The daemon gives uv a minimal environment (buildUVCommandEnv): these and no more.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "VIRTUAL_ENV": str(dest / ".venv"),
        "UV_CACHE_DIR": str(uv_cache or dest.parent / ".uv-cache"),
        **{k: os.environ[k] for k in _UV_PASSTHROUGH if k in os.environ},
    }
    uv = [*([] if network else no_network_prefix()), uv_binary()]
    _run([*uv, "venv", ".venv", "--python", python312()], dest, env)
    index = ["-i", pip_mirror_url] if pip_mirror_url else []
    use_requirements = pip_mirror_url and (dest / "requirements.txt").exists()
    if not use_requirements and (dest / "pyproject.toml").exists() and (dest / "uv.lock").exists():
        _run([*uv, "sync", "--no-dev", "--frozen", *index], dest, env)
    else:
        _run([*uv, "pip", "install", *index, "-r", "requirements.txt"], dest, env)
    # The daemon marks a finished install; a missing marker means "reinstall".
    marker = dest / ".venv" / "dify" / "plugin.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"timestamp": int(time.time())}))
    return dest


def no_network_prefix() -> list[str]:
    """A command prefix that runs its command in a new network namespace: no interface but a down loopback.

    Root can create one directly; other users through a user namespace that maps them to root.
    """
    for prefix in (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"]):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
                return prefix
        except FileNotFoundError:
            break
    raise RuntimeError("an install without network needs `unshare --net` (util-linux; root or user namespaces)")


_UV_PASSTHROUGH = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "UV_INDEX_NEXUS_USERNAME", "UV_INDEX_NEXUS_PASSWORD",
)  # fmt: skip


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{result.stderr[-4000:]}")


@dataclass
class Message:
    kind: str  # stream | end | error | invoke
    data: Any
    at: float = field(default_factory=time.perf_counter)


class PluginProcess:
    """A running plugin instance; requests may run concurrently (distinct sessions)."""

    def __init__(self, plugin_dir: Path, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, **(env or {}), "INSTALL_METHOD": "local"}
        full_env.pop("PYTHONPATH", None)  # the package must be self-contained
        self.plugin_dir = plugin_dir
        self.proc = subprocess.Popen(
            [str(plugin_dir / ".venv" / "bin" / "python"), "-m", "main"],
            cwd=plugin_dir, env=full_env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.violations: list[str] = []
        self.logs: list[dict] = []
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self._sessions: dict[str, queue.Queue[Message]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def wait_ready(self, timeout: float = HEARTBEAT_TIMEOUT) -> None:
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"no heartbeat within {timeout:g} s; stderr:\n" + "\n".join(self.stderr_tail))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if len(raw) > MAX_LINE_BYTES:
                self.violations.append(f"stdout line of {len(raw)} bytes exceeds the daemon's 5 MiB cap")
                continue
            line = raw.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                self.violations.append(f"non-JSON stdout line: {line[:200]!r}")
                continue
            self._dispatch(event)
        with self._lock:
            for q in self._sessions.values():
                q.put(Message("eof", None))

    def _dispatch(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "heartbeat":
            self._ready.set()
        elif kind == "log":
            self.logs.append(event.get("data", {}))
        elif kind == "session":
            with self._lock:
                q = self._sessions.get(event.get("session_id"))
            if q is None:
                self.violations.append(f"message for unknown session {event.get('session_id')}")
                return
            payload = event.get("data") or {}
            q.put(Message(payload.get("type", ""), payload.get("data")))
        elif kind == "error":
            self.violations.append(f"error event: {event.get('data')}")

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def _send(self, session_id: str, data: dict) -> None:
        envelope = {
            "session_id": session_id, "conversation_id": None, "message_id": None, "app_id": None,
            "endpoint_id": None, "context": {}, "event": "request", "data": data,
        }  # fmt: skip
        line = (json.dumps(envelope) + "\n").encode()
        assert self.proc.stdin is not None
        with self._write_lock:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()

    def stream(self, type_: str, action: str, data: dict, timeout: float = 300.0) -> Iterator[Message]:
        """Yield the session's `stream` messages as they arrive; raise PluginError on `error`."""
        session_id = str(uuid.uuid4())
        q: queue.Queue[Message] = queue.Queue()
        with self._lock:
            self._sessions[session_id] = q
        try:
            self._send(session_id, {"user_id": "harness-user", "type": type_, "action": action, **data})
            error: Message | None = None
            while True:
                try:
                    message = q.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError(f"{action}: no message for {timeout:g} s") from None
                if message.kind == "eof":
                    raise RuntimeError(f"{action}: plugin exited; stderr:\n" + "\n".join(self.stderr_tail))
                if message.kind == "end":
                    break
                if message.kind == "error":
                    error = message
                elif message.kind == "stream":
                    if action == "invoke_llm":
                        check_llm_chunk(message.data)
                    if error is None:
                        yield message
                else:
                    self.violations.append(f"{action}: unexpected session message type {message.kind!r}")
            if error is not None:
                raise PluginError(error.data.get("error_type", "?"), error.data.get("message", ""))
        finally:
            with self._lock:
                self._sessions.pop(session_id, None)

    def call(self, type_: str, action: str, data: dict, timeout: float = 300.0) -> list[Any]:
        return [m.data for m in self.stream(type_, action, data, timeout)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # what the daemon does on shutdown timeouts
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe:
                pipe.close()

    def __enter__(self) -> PluginProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_llm_chunk(chunk: dict) -> None:
    """The daemon's LLMResultChunk validation (model_entities/llm.go)."""
    delta = chunk.get("delta")
    if not isinstance(delta, dict) or not isinstance(delta.get("index"), int):
        raise ProtocolViolation(f"LLM chunk without integer delta.index: {chunk}")
    message = delta.get("message") or {}
    if message.get("content") is None:
        raise ProtocolViolation(f"LLM chunk with null content: {chunk}")
    usage = delta.get("usage")
    if usage is not None:
        missing = [f for f in USAGE_FIELDS if f not in usage]
        if missing:
            raise ProtocolViolation(f"LLM chunk usage lacks {missing}")
