"""Transport behaviour against the real server: cancellation reaches the model,
one pooled gRPC connection per server in the plugin process."""

from __future__ import annotations

import os
import time
from pathlib import Path

from devtools.plugin_harness import PluginProcess
from tests import media_fixtures as fx
from tests.test_llm_plugin import image_part, invoke, user
from tritonmm import chat
from tritonmm.capabilities import model_capabilities
from tritonmm.messages import Message, TextPart
from tritonmm.settings import ServerSettings
from tritonmm_server.runtime import TritonServer


def test_closing_the_stream_cancels_generation_on_the_server(triton: TritonServer, credentials: dict) -> None:
    settings = ServerSettings.from_credentials(credentials)
    caps = model_capabilities(settings, "chat")
    params = chat.ChatParams(max_tokens=1500, temperature=1.0, seed=3)
    chunks = chat.open_chat(settings, "chat", [Message("user", (TextPart("Tell me a long story"),))], params, caps)
    for _ in range(3):
        assert next(chunks).finish_reason is None
    chunks.close()  # what the LLM handler does when Dify stops reading
    deadline = time.monotonic() + 20
    pattern = "chat: request cancelled after "
    while time.monotonic() < deadline:
        log = Path(triton.log_path).read_text(errors="replace")
        if pattern in log:
            tokens = int(log.rsplit(pattern, 1)[1].split()[0])
            assert 3 <= tokens < 1500  # stopped early, not run to max_tokens
            return
        time.sleep(0.2)
    raise AssertionError("the model never logged the cancellation")


def _grpc_connections(pid: int, port: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01 = ESTABLISHED
                count += 1
    return count


def test_one_pooled_grpc_connection_per_server(plugin: PluginProcess, credentials: dict, triton: TritonServer) -> None:
    for _ in range(4):
        invoke(plugin, credentials, user(image_part(fx.png())), max_tokens=2)
    assert _grpc_connections(plugin.proc.pid, triton.ports.grpc) == 1
