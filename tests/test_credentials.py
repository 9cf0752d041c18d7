"""Credential validation through the built package: the good case and each failing step."""

from __future__ import annotations

import urllib.request

import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests.conftest import WORK
from tests.fixture_models import BROKEN_MESSAGE
from tritonmm_server.ops.network import free_ports
from tritonmm_server.ops.server import TritonServer


def validate_model(plugin: PluginProcess, credentials: dict, model: str) -> list[dict]:
    data = {"provider": "triton_multimodal", "model_type": "llm", "model": model, "credentials": credentials}
    return plugin.call("model", "validate_model_credentials", data)


def expect_step(plugin: PluginProcess, credentials: dict, model: str, step: str, fragment: str) -> str:
    with pytest.raises(PluginError) as raised:
        validate_model(plugin, credentials, model)
    assert raised.value.error_type == "CredentialsValidateFailedError"
    assert step in raised.value.message
    assert fragment in raised.value.message
    assert plugin.alive()
    return raised.value.message


def test_provider_credentials_good(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "credentials": credentials}
    [answer] = plugin.call("model", "validate_provider_credentials", data)
    assert answer["result"] is True


def test_model_credentials_good(plugin: PluginProcess, credentials: dict) -> None:
    [answer] = validate_model(plugin, credentials, "chat_llava")
    assert answer["result"] is True


def test_schema_comes_from_the_triton_config(plugin: PluginProcess, credentials: dict) -> None:
    data = {"provider": "triton_multimodal", "model_type": "llm", "model": "refuses", "credentials": credentials}
    [answer] = plugin.call("model", "get_ai_model_schemas", data)
    schema = answer["model_schema"]
    assert schema["features"] == ["document", "vision"]  # the fixture declares vision only (documents go as pages)
    assert schema["model_properties"]["context_size"] == 4096
    assert {r["name"] for r in schema["parameter_rules"]} >= {"temperature", "max_tokens", "seed"}
    data["model"] = "chat"
    [bundled] = plugin.call("model", "get_ai_model_schemas", data)
    assert sorted(bundled["model_schema"]["features"]) == [
        "audio", "document", "multi-tool-call", "stream-tool-call", "tool-call", "video", "vision",
    ]  # fmt: skip


def test_step_server_unreachable(plugin: PluginProcess) -> None:
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    expect_step(
        plugin,
        {"server_url": url, "connect_timeout": "2"},
        "chat",
        "step 1/5 'server reachable'",
        url.removeprefix("http://"),
    )


def test_step_model_missing(plugin: PluginProcess, credentials: dict) -> None:
    message = expect_step(plugin, credentials, "nope", "step 3/5 'model present'", "not in the repository")
    assert "chat_llava" in message  # says what the server does have


def test_step_model_not_loaded(plugin: PluginProcess, credentials: dict) -> None:
    expect_step(plugin, credentials, "broken", "step 4/5 'model loaded'", "not loaded")


def test_step_probe_failed(plugin: PluginProcess, credentials: dict) -> None:
    expect_step(plugin, credentials, "refuses", "step 5/5 'probe request'", "rejects every request")


def test_step_server_not_ready(plugin: PluginProcess, tmp_path) -> None:
    # Strict readiness: a model that failed to load makes the whole server "not ready".
    server = TritonServer(
        WORK / "repository",
        models=["refuses"],
        strict_readiness=True,
        log_path=tmp_path / "strict.log",
        exit_timeout_s=2,
    )
    with server:
        request = urllib.request.Request(
            f"{server.http_url}/v2/repository/models/broken/load", data=b"{}", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as load:
            urllib.request.urlopen(request, timeout=60)
        assert BROKEN_MESSAGE in load.value.read().decode()
        creds = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
        expect_step(plugin, creds, "refuses", "step 2/5 'server ready'", "not OK")
