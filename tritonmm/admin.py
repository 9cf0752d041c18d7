"""Server administration: health, per-model state, statistics, metrics, load and unload.

Load, unload and reload need Triton's explicit model-control mode (the
launcher always starts it so); in other modes Triton refuses them and the
message says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tritonmm.errors import InvalidInput, TritonMMError
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient

DEFAULT_METRICS_PORT = 8002
# The Prometheus series worth a glance; everything else stays in the raw metrics.
SUMMARY_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_cache_num_hits_per_model",
    "nv_cache_num_misses_per_model",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
)
_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})?\s+([-+0-9.eEinfNa]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    state: str  # READY, UNAVAILABLE, LOADING, UNLOADING, or "" when never loaded
    reason: str


def health(client: TritonClient) -> dict[str, Any]:
    return {"server": client.url, "live": client.is_live(), "ready": client.is_ready()}


def models(client: TritonClient) -> list[ModelEntry]:
    entries = client.repository_index()
    return [
        ModelEntry(e.get("name", ""), str(e.get("version", "")), e.get("state", ""), e.get("reason", ""))
        for e in sorted(entries, key=lambda e: (e.get("name", ""), str(e.get("version", ""))))
    ]


def statistics(client: TritonClient, model: str = "") -> list[dict[str, Any]]:
    """Per model: request counts and mean queue / compute times in milliseconds."""
    stats = client.model_statistics(model)
    out = []
    for entry in stats.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        success = inference.get("success", {})
        count = int(success.get("count", 0))
        out.append(
            {
                "model": entry.get("name"),
                "version": entry.get("version"),
                "requests": count,
                "failures": int(inference.get("fail", {}).get("count", 0)),
                "executions": int(entry.get("execution_count", 0)),
                "inferences": int(entry.get("inference_count", 0)),
                "cache_hits": int(inference.get("cache_hit", {}).get("count", 0)),
                "mean_request_ms": _mean_ms(success),
                "mean_queue_ms": _mean_ms(inference.get("queue", {})),
                "mean_compute_ms": _mean_ms(inference.get("compute_infer", {})),
            }
        )
    return out


def _mean_ms(stat: dict[str, Any]) -> float:
    count = int(stat.get("count", 0))
    return round(int(stat.get("ns", 0)) / count / 1e6, 3) if count else 0.0


def metrics_url(settings: ServerSettings, explicit: str = "") -> str:
    """The metrics endpoint: as given, else the server's host on Triton's default metrics port."""
    if explicit.strip():
        url = explicit.strip().rstrip("/")
        return url if url.endswith("/metrics") else url + "/metrics"
    parts = urlsplit(settings.http_url)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{DEFAULT_METRICS_PORT}/metrics"


def metrics_summary(client: TritonClient, url: str) -> dict[str, dict[str, float]]:
    """``{metric: {label set or "total": value}}`` for the SUMMARY_METRICS series."""
    summary: dict[str, dict[str, float]] = {}
    for line in client.metrics_text(url).splitlines():
        match = _SAMPLE.match(line.strip())
        if not match or match.group(1) not in SUMMARY_METRICS:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        key = (
            ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k in ("model", "version", "gpu_uuid")) or "total"
        )
        summary.setdefault(match.group(1), {})[key] = float(match.group(3))
    return summary


def control(client: TritonClient, action: str, model: str) -> ModelEntry:
    """``load``, ``unload`` or ``reload`` one model; returns its state afterwards."""
    if action not in ("load", "unload", "reload"):
        raise InvalidInput(f"action must be load, unload or reload, got {action!r}")
    if not model.strip():
        raise InvalidInput(f"'{action}' needs a model name")
    try:
        if action == "unload":
            client.unload_model(model)
        else:  # in explicit mode, loading a loaded model reloads it from the repository
            client.load_model(model)
    except TritonMMError as exc:
        raise type(exc)(f"{action} of model '{model}' failed: {exc}") from None
    found = [entry for entry in models(client) if entry.name == model]
    return found[-1] if found else ModelEntry(model, "", "", "not in the repository index")
