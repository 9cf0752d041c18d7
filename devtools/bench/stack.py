"""What the cases run against, started once per run: one tritonserver and the model-provider plugin.

The server serves the benchmark repository (:mod:`.models`) planned and rendered by the
launcher, on 127.0.0.1. The plugin is built into its ``.difypkg``, installed the way the
daemon does and run by the daemon-role harness. Both start on first use and stop in
:meth:`Stack.close`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from devtools import plugin_harness
from devtools.bench.models import write_source
from devtools.bench.progress import Progress
from devtools.build_packages import BuiltPackage, build_plugin
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient
from tritonmm_server.ops.planning import LaunchOptions
from tritonmm_server.ops.serve import launch
from tritonmm_server.ops.server import TritonServer

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".cache" / "bench"
UV_CACHE = ROOT / ".cache" / "uv"
PROVIDER_DIR = ROOT / "plugins" / "model_provider"
PROVIDER = "triton_multimodal"  # the provider name in the model-provider package's manifest


def realsize_checkpoint(dtype: str = "float32") -> Path:
    """SmolVLM-256M-Instruct's shape with random weights, built once per work folder."""
    from devtools.realsize_chat import build_smolvlm_256m_shape

    return build_smolvlm_256m_shape(WORK / f"realsize-{dtype}", getattr(torch, dtype))


def tiny_checkpoint() -> Path:
    from tritonmm_server.tiny.cache import ensure_tiny_model

    return ensure_tiny_model(WORK, "idefics3")


class Stack:
    """The run's server, client and plugin, each started when a case first asks for it."""

    def __init__(self, progress: Progress, models: Iterable[str], checkpoints: dict[str, Path] | None = None) -> None:
        self.progress = progress
        self.models = sorted(set(models))
        self.checkpoints = dict(checkpoints or {})
        self.timings: dict[str, float] = {}  # what starting each part took, for the report
        self._server: TritonServer | None = None
        self._client: TritonClient | None = None
        self._plugin: plugin_harness.PluginProcess | None = None
        self._package: BuiltPackage | None = None

    # --- the server ----------------------------------------------------------------------------

    @property
    def server(self) -> TritonServer:
        if self._server is None:
            self.progress.step(f"starting tritonserver with {', '.join(self.models)} (minutes on a small machine)")
            source = WORK / "source"
            write_source(source, self.models)
            started = time.perf_counter()
            options = LaunchOptions(
                repository=source,
                work_dir=WORK / "server",
                models=self.models,
                checkpoints=self.checkpoints,
                exit_timeout_s=5,  # the benchmark closes its connections first; a stuck one must not hold the run
            )
            self._server = launch(options, out=sys.stderr)
            self.timings["server_start_s"] = time.perf_counter() - started
        return self._server

    @property
    def running_server(self) -> TritonServer | None:
        """The server if a case has started it, else None (nothing is started)."""
        return self._server

    @property
    def credentials(self) -> dict[str, Any]:
        return {"server_url": self.server.http_url, "grpc_endpoint": self.server.grpc_url}

    @property
    def client(self) -> TritonClient:
        if self._client is None:
            self._client = TritonClient(ServerSettings.from_credentials(self.credentials))
        return self._client

    def new_client(self) -> TritonClient:
        """A client of its own (its own connection pool); the caller closes it."""
        return TritonClient(ServerSettings.from_credentials(self.credentials))

    # --- the plugin ----------------------------------------------------------------------------

    @property
    def package(self) -> BuiltPackage:
        if self._package is None:
            self._package = build_plugin(PROVIDER_DIR, WORK / "dist")
        return self._package

    @property
    def plugin(self) -> plugin_harness.PluginProcess:
        if self._plugin is None:
            self.progress.step("installing the model-provider plugin from its package (uv, warm cache)")
            started = time.perf_counter()
            plugin_dir = plugin_harness.install(self.package.path, WORK / "plugin", uv_cache=UV_CACHE)
            self.timings["plugin_install_warm_s"] = time.perf_counter() - started
            started = time.perf_counter()
            plugin = plugin_harness.PluginProcess(plugin_dir)
            plugin.wait_ready()
            self.timings["plugin_first_heartbeat_s"] = time.perf_counter() - started
            self._plugin = plugin
        return self._plugin

    def invoke(self, action: str, model_type: str, model: str, **data: Any) -> Iterable[plugin_harness.Message]:
        """One model session through the plugin, as the daemon sends it; yields its stream messages."""
        request = {"provider": PROVIDER, "model_type": model_type, "model": model, "credentials": self.credentials}
        return self.plugin.stream("model", action, {**request, **data})

    @property
    def plugin_pid(self) -> int | None:
        return self._plugin.proc.pid if self._plugin is not None else None

    # --- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._plugin is not None:
            self._plugin.stop()
            self._plugin = None
        if self._client is not None:
            self._client.close()  # before the server stops: Triton waits for open connections
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None
