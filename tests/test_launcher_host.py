"""The launcher's ``--host``: loopback by default, every interface on request (a container, a
server other machines reach), anything but an IPv4 address refused before anything starts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.test_launcher import ADD_MODEL, http_status, run_launcher, write_model
from tritonmm_server.ops.cli import build_parser
from tritonmm_server.ops.planning import LaunchOptions
from tritonmm_server.ops.process import group_members


def test_host_defaults_to_loopback() -> None:
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert LaunchOptions().host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "--host", "0.0.0.0"]).host == "0.0.0.0"


@pytest.mark.parametrize("host", ["triton.local", "::", "0.0.0.256", ""])
def test_a_host_that_is_not_an_ipv4_address_is_refused(host: str, tmp_path: Path) -> None:
    refused = run_launcher("--host", host, "--work-dir", str(tmp_path / "work"))
    assert refused.returncode == 2
    assert "expected an IPv4 address to listen on" in refused.stderr and repr(host) in refused.stderr
    assert not (tmp_path / "work").exists()


def test_host_0000_listens_on_every_interface(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "add", ADD_MODEL)
    work = tmp_path / "work"
    ports = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
    served = run_launcher("--host", "0.0.0.0", "--repository", str(tmp_path / "repo"), "--work-dir", str(work), *ports)
    assert served.returncode == 0, served.stderr
    state = json.loads((work / "server.json").read_text())
    try:
        port = int(state["http_url"].rsplit(":", 1)[1])
        command = Path(f"/proc/{state['pgid']}/cmdline").read_bytes().split(b"\0")
        assert b"--http-address=0.0.0.0" in command and b"--grpc-address=0.0.0.0" in command
        assert http_status(f"http://127.0.0.1:{port}/v2/models/add/ready") == 200
        assert "listens on every interface (0.0.0.0)" in served.stdout
        assert f"Server URL (server_url):       http://{socket.gethostname()}:{port}" in served.stdout
    finally:
        stopped = run_launcher("stop", "--work-dir", str(work))
    assert stopped.returncode == 0, stopped.stderr
    assert group_members(state["pgid"]) == []
