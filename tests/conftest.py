"""Session fixtures: a real tritonserver with the bundled models, and the plugin as built.

The Triton side is what the launcher serves by default (`plan_models`): `chat` on the
tiny tool-calling Idefics3 build, `text_embedding` and `rerank` on the real all-MiniLM-L6-v2
weights, `speech_to_text` on the real Whisper tiny.en, `text_to_speech` on the real
Piper joe voice, `multimodal_embedding` on a tiny CLIP build and `ocr` on the
RapidOCR weights. Next to them: copies on other builds (`chat_llava`, `chat_audio`
with native audio, `rerank_cross`, the 32-d `text_embedding_tiny`) and the
numpy-only fixture models that fail on purpose or echo what they get. The plugin
side: the `.difypkg` built by the build command, installed and started by the
daemon-role harness.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools import plugin_harness
from devtools.build_packages import build_plugin
from devtools.files_server import FilesServer
from tests.backend_fixtures import BACKEND_FIXTURES, write_backend_fixtures
from tests.fixture_models import write_fixture_models
from tritonmm import contract
from tritonmm_server.checkpoints.chat_template import template_parameters
from tritonmm_server.ops.planning import LaunchOptions, plan_models
from tritonmm_server.ops.repository import list_models, render_repository, set_parameters
from tritonmm_server.ops.server import TritonServer
from tritonmm_server.ops.weights import TINY_CHAT_ARCH
from tritonmm_server.tiny.build import FEATURES
from tritonmm_server.tiny.cache import ensure_tiny_model

ROOT = Path(__file__).resolve().parent.parent
# TMM_TEST_WORK: another work folder, so that two checkouts or sessions can run the suite at once.
WORK = Path(os.environ.get("TMM_TEST_WORK") or ROOT / ".cache" / "tests").resolve()
BUNDLED = list_models(ROOT / "model_repository")
COPIES = ["chat_llava", "chat_audio", "chat_batch1", "rerank_cross", "text_embedding_tiny"]
FIXTURES = ["refuses", "midstream", "stalls", "echo_bytes", "echo_chat", "echo_chat_native", "echo_chat_no_asr"]
FIXTURES += ["echo_params"]
SERVED = [*BUNDLED, *COPIES, *FIXTURES, *BACKEND_FIXTURES]
VIDEO_MAX_FRAMES = 4


def _chat_overrides(model_dir: Path) -> dict[str, str]:
    return {
        contract.KEY_MODEL_PATH: str(model_dir),
        contract.KEY_WEIGHTS: "tiny",
        contract.KEY_VIDEO_MAX_FRAMES: str(VIDEO_MAX_FRAMES),
        contract.KEY_VIDEO_FPS: "2.0",
        **template_parameters(model_dir),  # as the launcher reads them: tool calls, thinking switch
    }


def _tiny(arch: str, **parameters: str) -> dict[str, str]:
    return {contract.KEY_MODEL_PATH: str(ensure_tiny_model(WORK, arch)), contract.KEY_WEIGHTS: "tiny", **parameters}


def _clone_model(repo: Path, src: str, dest: str, parameters: dict[str, str]) -> None:
    shutil.copytree(repo / src, repo / dest)
    config = repo / dest / "config.pbtxt"
    text = config.read_text().replace(f'name: "{src}"', f'name: "{dest}"', 1)
    config.write_text(set_parameters(text, parameters))


def render_test_repository(dest: Path) -> Path:
    plans = plan_models(LaunchOptions(models=BUNDLED, work_dir=WORK), out=io.StringIO())
    overrides = {plan.name: plan.parameters for plan in plans if plan.parameters}
    overrides["chat"] = {**overrides["chat"], **_chat_overrides(ensure_tiny_model(WORK, TINY_CHAT_ARCH))}
    render_repository(ROOT / "model_repository", dest, overrides=overrides, include=BUNDLED)
    _clone_model(dest, "chat", "chat_llava", _chat_overrides(ensure_tiny_model(WORK, "llava")))
    # One sequence decoding, one waiting: busy and freed places are easy to cause.
    one_place = {contract.KEY_BATCH_MAX_SEQUENCES: "1", contract.KEY_BATCH_MAX_WAITING: "1"}
    _clone_model(dest, "chat", "chat_batch1", {**overrides["chat"], **one_place})
    audio = {**_chat_overrides(ensure_tiny_model(WORK, "qwen2-audio")), contract.KEY_FEATURES: FEATURES["qwen2-audio"]}
    _clone_model(dest, "chat", "chat_audio", audio)
    _clone_model(dest, "rerank", "rerank_cross", _tiny("bert-cross-encoder", **{contract.KEY_CONTEXT_SIZE: "512"}))
    _clone_model(
        dest, "text_embedding", "text_embedding_tiny", _tiny("bert-embed", **{contract.KEY_CONTEXT_SIZE: "128"})
    )
    write_fixture_models(dest)
    write_backend_fixtures(dest, ensure_tiny_model(WORK, "idefics3"))  # vLLM, TensorRT-LLM, generate
    return dest


@pytest.fixture(scope="session")
def tiny_work_dir() -> Path:
    """The work dir whose ``tiny/<arch>`` builds every test shares (the launcher's layout)."""
    return WORK


@pytest.fixture(scope="session")
def tiny_model(tiny_work_dir: Path) -> Callable[[str], Path]:
    """``tiny_model(arch)``: the session's tiny build of ``arch``, built once and reused by every test."""
    return lambda arch: ensure_tiny_model(tiny_work_dir, arch)


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonServer]:
    repo = render_test_repository(WORK / "repository")
    server = TritonServer(repo, models=SERVED, log_path=WORK / "tritonserver.log", exit_timeout_s=5)
    server.start(timeout=600)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def package() -> Path:
    return build_plugin(ROOT / "plugins" / "model_provider", WORK / "dist").path


@pytest.fixture(scope="session")
def plugin(package: Path) -> Iterator[plugin_harness.PluginProcess]:
    plugin_dir = plugin_harness.install(package, WORK / "plugin", uv_cache=ROOT / ".cache" / "uv")
    process = plugin_harness.PluginProcess(plugin_dir)
    process.wait_ready()
    yield process
    process.stop()
    assert not process.violations, process.violations


@pytest.fixture(scope="session")
def files_server() -> Iterator[FilesServer]:
    """Dify's files endpoint as the tools plugin sees it (its INTERNAL_FILES_URL)."""
    server = FilesServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tools_plugin(files_server: FilesServer) -> Iterator[plugin_harness.PluginProcess]:
    package = build_plugin(ROOT / "plugins" / "tools", WORK / "dist").path
    plugin_dir = plugin_harness.install(package, WORK / "tools_plugin", uv_cache=ROOT / ".cache" / "uv")
    process = plugin_harness.PluginProcess(plugin_dir, env={"INTERNAL_FILES_URL": files_server.base_url})
    process.wait_ready()
    yield process
    process.stop()
    assert not process.violations, process.violations


@pytest.fixture(scope="session")
def credentials(triton: TritonServer) -> dict[str, str]:
    return {"server_url": triton.http_url, "grpc_endpoint": triton.grpc_url}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
