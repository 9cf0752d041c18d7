"""Triton's response cache answers a repeated identical request, for every model that
enables it, and the hit shows in Triton's Prometheus metrics (what an operator watches)."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from devtools.plugin_harness import PluginProcess
from tests.media_fixtures import png
from tritonmm.admin import metrics_summary
from tritonmm.settings import ServerSettings
from tritonmm.transport import client_for
from tritonmm_server.ops.server import TritonServer


def _requests(fresh: str) -> dict[str, tuple[str, dict]]:
    image = base64.b64encode(png(48, 48, (10, 200, 90))).decode()
    return {
        "text_embedding": ("invoke_text_embedding", {"model_type": "text-embedding", "texts": [fresh], "input_type": "document"}),
        "rerank": ("invoke_rerank", {"model_type": "rerank", "query": fresh, "docs": ["a", "b"], "score_threshold": 0.0, "top_n": 0}),
        "multimodal_embedding": ("invoke_multimodal_embedding", {
            "model_type": "text-embedding", "input_type": "document",
            "documents": [{"content": fresh, "content_type": "text"}, {"content": image, "content_type": "image"}],
        }),
    }  # fmt: skip


def _hits(triton: TritonServer, credentials: dict, model: str) -> float:
    summary = metrics_summary(client_for(ServerSettings.from_credentials(credentials)), triton.metrics_url)
    return sum(v for k, v in summary.get("nv_cache_num_hits_per_model", {}).items() if f"model={model}" in k)


@pytest.mark.parametrize("model", ["text_embedding", "rerank", "multimodal_embedding"])
def test_repeated_request_is_a_cache_hit_in_the_metrics(
    plugin: PluginProcess, credentials: dict, triton: TritonServer, model: str
) -> None:
    action, data = _requests(f"cache me {uuid.uuid4()}")[model]
    request = {"provider": "triton_multimodal", "model": model, "credentials": credentials, **data}
    before = _hits(triton, credentials, model)
    first = plugin.call("model", action, request)
    second = plugin.call("model", action, request)
    assert second[0].get("embeddings", second[0].get("docs")) == first[0].get("embeddings", first[0].get("docs"))
    deadline = time.monotonic() + 10
    while _hits(triton, credentials, model) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)  # metrics are published asynchronously
    assert _hits(triton, credentials, model) == before + 1
