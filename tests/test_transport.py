"""Transport behaviour against the real server: cancellation reaches the model,
one pooled gRPC connection per server in the plugin process."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from devtools.plugin_harness import PluginProcess
from tests import media_fixtures as fx
from tests.test_llm_plugin import image_part, invoke, user
from tritonmm import chat
from tritonmm.contract import TensorSpec
from tritonmm.errors import InvalidInput, ModelNotFound
from tritonmm.messages import Message, TextPart
from tritonmm.settings import ServerSettings
from tritonmm.transport import InputTensor, TritonClient
from tritonmm_server.ops.server import TritonServer


def test_closing_the_stream_cancels_generation_on_the_server(triton: TritonServer, credentials: dict) -> None:
    with TritonClient(ServerSettings.from_credentials(credentials)) as client:
        caps = client.capabilities("chat")
        params = chat.ChatParams(max_tokens=1500, temperature=1.0, seed=3)
        messages = [Message("user", (TextPart("Tell me a long story"),))]
        chunks = chat.open_chat(client, "chat", messages, params, caps)
        for _ in range(3):
            assert next(chunks).finish_reason is None
        chunks.close()  # what the LLM handler does when Dify stops reading
        # Watched with the client still open: closing it would cancel the call by itself.
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


BLOB = TensorSpec("BLOB", "TYPE_STRING", (1,))


def test_unary_infer_carries_raw_bytes_in_batches(credentials: dict) -> None:
    blobs = (b"", b"a\x00b\x00\x00", bytes(range(256)) * 20_000)  # NULs kept, 5 MB row
    with TritonClient(ServerSettings.from_credentials(credentials)) as client:
        out = client.infer("echo_bytes", [InputTensor(BLOB, blobs, batched=True)], ["SIZE", "BLOB_OUT"])
    assert out["SIZE"] == [len(b) for b in blobs]
    assert out["BLOB_OUT"] == [b[::-1] for b in blobs]


def test_identical_requests_are_answered_from_the_response_cache(credentials: dict) -> None:
    request = [InputTensor(BLOB, (b"cache me",), batched=True)]
    before = _cache_hits(credentials, "echo_bytes")
    with TritonClient(ServerSettings.from_credentials(credentials)) as client:
        first = client.infer("echo_bytes", request, ["BLOB_OUT"])
        second = client.infer("echo_bytes", request, ["BLOB_OUT"])
    assert first == second == {"BLOB_OUT": [b"em ehcac"]}
    assert _cache_hits(credentials, "echo_bytes") == before + 1


def _cache_hits(credentials: dict, model: str) -> int:
    with urllib.request.urlopen(f"{credentials['server_url']}/v2/models/{model}/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"][0]["inference_stats"]
    return int(stats["cache_hit"]["count"])


def test_unary_infer_errors_are_ours(credentials: dict) -> None:
    too_many = InputTensor(BLOB, (b"x",) * 9, batched=True)  # max_batch_size is 8
    with TritonClient(ServerSettings.from_credentials(credentials)) as client:
        with pytest.raises(InvalidInput, match="batch-size must be <= 8"):
            client.infer("echo_bytes", [too_many], ["SIZE"])
        with pytest.raises(ModelNotFound):
            client.infer("no_such_model", [too_many], ["SIZE"])


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
