"""The container entrypoint (deploy/entrypoint.py) and its settings (deploy/settings.py).

The entrypoint runs as a subprocess, as the image runs it, against the tritonserver of the
nvidia-pytriton wheel: it serves the chat model from a checkpoint volume (the tiny Idefics3
build copied into a temp dir), answers on every interface, copies Triton's log to stdout and
stops cleanly on SIGTERM; a missing checkpoint directory stops it before anything starts.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy import entrypoint
from deploy.entrypoint import EXIT_SETTINGS, LogFollower
from deploy.settings import SettingsError, read_settings
from tritonmm_server.ops import process
from tritonmm_server.ops.process import SHM_DIR, group_members
from tritonmm_server.tiny.cache import ensure_tiny_model

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("TMM_TEST_WORK") or ROOT / ".cache" / "tests").resolve()


# --- settings ------------------------------------------------------------------------------------


def test_settings_default_to_the_container_layout() -> None:
    settings = read_settings({})
    assert settings.host == "0.0.0.0"
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (8000, 8001, 8002)
    assert settings.checkpoints == {} and settings.models is None and settings.allow_tiny is False
    assert settings.tritonserver_dir is None  # the nvidia-pytriton binary


def test_checkpoints_are_taken_under_the_volume_unless_absolute() -> None:
    settings = read_settings(
        {
            "TMM_CHECKPOINT_ROOT": "/vol",
            "TMM_CHECKPOINT_chat": "Qwen2.5-VL-3B-Instruct",
            "TMM_CHECKPOINT_rerank": "/elsewhere/ms-marco",
            "TMM_MODELS": " chat, rerank ,",
            "TMM_ALLOW_TINY_WEIGHTS": "yes",
            "TMM_TRITON_ARGS": "--log-verbose=1 '--metrics-config=summary_latencies=true'",
            "TMM_CHEKPOINT_ocr": "typo",
        }
    )
    assert settings.checkpoints == {"chat": Path("/vol/Qwen2.5-VL-3B-Instruct"), "rerank": Path("/elsewhere/ms-marco")}
    assert settings.models == ["chat", "rerank"] and settings.allow_tiny is True
    assert settings.triton_args == ["--log-verbose=1", "--metrics-config=summary_latencies=true"]
    assert settings.unknown == ["TMM_CHEKPOINT_ocr"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TMM_HTTP_PORT": "80a"}, "TMM_HTTP_PORT='80a': expected a port number"),
        ({"TMM_GRPC_PORT": "70000"}, "TMM_GRPC_PORT='70000'"),
        ({"TMM_ALLOW_TINY_WEIGHTS": "maybe"}, "TMM_ALLOW_TINY_WEIGHTS='maybe': use 1 or 0"),
        ({"TMM_EXIT_TIMEOUT": "-3"}, "TMM_EXIT_TIMEOUT='-3': expected a positive number"),
        ({"TMM_START_TIMEOUT": "soon"}, "TMM_START_TIMEOUT='soon'"),
        ({"TMM_CHECKPOINT_chat": " "}, "TMM_CHECKPOINT_chat is empty"),
        ({"TMM_CHECKPOINT_": "x"}, "name the model"),
        ({"TMM_CHECKPOINT_ROOT": "models"}, "TMM_CHECKPOINT_ROOT=models: give an absolute path"),
        ({"TMM_TRITON_ARGS": "--log-verbose=1 'unclosed"}, "TMM_TRITON_ARGS="),
        ({"TMM_TRITON_ARGS": "model_repository"}, "is not a tritonserver option"),
    ],
)
def test_a_bad_setting_is_refused_by_name(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("?", r"\?")):
        read_settings(environ)


# --- the log goes to stdout ---------------------------------------------------------------------


def test_log_follower_copies_the_log_as_it_grows_and_what_is_left_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    sink = io.BytesIO()
    follower = LogFollower(log, sink, poll_s=0.01)
    follower.start()  # before the server creates the file, as in the entrypoint
    with open(log, "wb") as handle:
        handle.write(b"first line\n")
        handle.flush()
        deadline = time.monotonic() + 30
        while b"first line" not in sink.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.getvalue() == b"first line\n"  # copied while the file is still open
        handle.write(b"last line, written just before the stop\n")
    follower.stop()
    assert sink.getvalue() == b"first line\nlast line, written just before the stop\n"


# --- before anything starts ---------------------------------------------------------------------


def run_entrypoint(environ: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.entrypoint"],
        cwd=ROOT,
        env=_environment(environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _environment(environ: dict[str, str]) -> dict[str, str]:
    # The test run's own TMM_* variables (TMM_TEST_WORK) are not the entrypoint's.
    base = {name: value for name, value in os.environ.items() if not name.startswith("TMM_")}
    return {**base, **environ}


def test_missing_checkpoint_dir_is_an_error_before_anything_starts(tmp_path: Path) -> None:
    volume = tmp_path / "models"
    (volume / "SmolVLM-256M-Instruct").mkdir(parents=True)
    work = tmp_path / "work"
    result = run_entrypoint(
        {
            "TMM_CHECKPOINT_ROOT": str(volume),
            "TMM_CHECKPOINT_chat": "Qwen2.5-VL-3B-Instruct",
            "TMM_WORK_DIR": str(work),
        }
    )
    assert result.returncode == EXIT_SETTINGS, result.stderr
    assert f"TMM_CHECKPOINT_chat: {volume / 'Qwen2.5-VL-3B-Instruct'} is not a directory" in result.stderr
    assert f"{volume} (TMM_CHECKPOINT_ROOT) holds: SmolVLM-256M-Instruct" in result.stderr  # the typo shows
    assert "Nothing is downloaded" in result.stderr and "Traceback" not in result.stderr
    assert not work.exists()  # nothing rendered, built or started


def test_tiny_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    ensure_tiny_model(WORK, "idefics3")  # the suite's build; the entrypoint finds it through the link
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny").symlink_to(WORK / "tiny", target_is_directory=True)
    result = run_entrypoint({"TMM_MODELS": "chat", "TMM_WORK_DIR": str(work)})
    assert result.returncode == EXIT_SETTINGS, result.stderr
    assert "no checkpoint for chat: set TMM_CHECKPOINT_chat=" in result.stderr
    assert "TMM_ALLOW_TINY_WEIGHTS=1" in result.stderr and "Traceback" not in result.stderr
    assert not (work / "repository").exists()


ECHO_CONFIG = """\
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def test_stale_shared_memory_of_earlier_servers_is_cleared_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "tmm_1_0a1b2c3d_region").write_bytes(b"left by a killed server")
    (shm / "someone_else").write_bytes(b"kept")
    monkeypatch.setattr(process, "SHM_DIR", shm)  # this container's /dev/shm
    (tmp_path / "repo" / "echo" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "echo" / "config.pbtxt").write_text(ECHO_CONFIG)
    (tmp_path / "repo" / "echo" / "1" / "model.py").write_text("")
    environ = {"TMM_REPOSITORY": str(tmp_path / "repo"), "TMM_WORK_DIR": str(tmp_path / "work"), "TMM_CLEAR_SHM": "1"}
    server, plans = entrypoint.prepare(read_settings(environ))
    assert sorted(path.name for path in shm.iterdir()) == ["someone_else"]
    assert [plan.name for plan in plans] == ["echo"] and not server.is_running()
    assert (tmp_path / "work" / "repository" / "echo" / "config.pbtxt").is_file()


# --- the real thing -----------------------------------------------------------------------------


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _listening_addresses(port: int) -> set[str]:
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                addresses.add(address)
    return addresses


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


READY_LINE = re.compile(r"^ready on (\S+): HTTP (\d+), gRPC (\d+), metrics (\d+)", re.MULTILINE)


def test_entrypoint_serves_a_checkpoint_from_the_volume_and_stops_on_sigterm(tmp_path: Path) -> None:
    volume = tmp_path / "models"
    shutil.copytree(ensure_tiny_model(WORK, "idefics3"), volume / "tiny-idefics3")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    environ = {
        "TMM_MODELS": "chat",
        "TMM_CHECKPOINT_ROOT": str(volume),
        "TMM_CHECKPOINT_chat": "tiny-idefics3",
        "TMM_WORK_DIR": str(tmp_path / "work"),
        "TMM_HTTP_PORT": "0",  # free ports, read back from the status line
        "TMM_GRPC_PORT": "0",
        "TMM_METRICS_PORT": "0",
        "TMM_EXIT_TIMEOUT": "5",
    }
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.entrypoint"],
            cwd=ROOT,
            env=_environment(environ),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 600
        while not (ready := READY_LINE.search(out.read_text())):  # printed once every model is READY
            assert proc.poll() is None, f"exited {proc.returncode}:\n{out.read_text()}\n{err.read_text()}"
            assert time.monotonic() < deadline, f"not ready:\n{out.read_text()}\n{err.read_text()}"
            time.sleep(0.5)
        assert ready.group(1) == "0.0.0.0"
        http = int(ready.group(2))
        assert _status(f"http://127.0.0.1:{http}/v2/health/ready") == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/chat/config", timeout=5) as response:
            parameters = json.load(response)["parameters"]
        assert parameters["tmm.model_path"]["string_value"] == str((volume / "tiny-idefics3").resolve())
        assert parameters["tmm.weights"]["string_value"] == "checkpoint"
        assert _listening_addresses(http) & {"00000000", "00000000000000000000000000000000"}, "not on every interface"
        servers = _children(proc.pid)
        assert len(servers) == 1, servers  # tritonserver, its stubs below it
        pgid = servers[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    log = out.read_text()
    assert code == 0, f"{log}\n{err.read_text()}"
    assert f"Started HTTPService at 0.0.0.0:{http}" in log  # Triton's own log, on stdout
    assert "stopped" in log.splitlines()  # serve_foreground's last word: a graceful stop
    assert group_members(pgid) == []  # server and stubs gone
    assert list(SHM_DIR.glob(f"tmm_{proc.pid}_*")) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http), timeout=2).close()


def test_module_docstring_lists_every_setting() -> None:
    from deploy import settings

    documented = textwrap.dedent(settings.__doc__ or "")
    for name in settings.KNOWN:
        assert f"``{name}" in documented, name
