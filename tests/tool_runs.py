"""A tool invocation through the daemon-role harness, its messages gathered by kind."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from devtools.plugin_harness import PluginProcess

PROVIDER = "triton_multimodal_tools"


@dataclass
class ToolRun:
    texts: list[str] = field(default_factory=list)
    jsons: list[Any] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    streamed: dict[str, list[str]] = field(default_factory=dict)  # stream variable -> pieces in order
    blobs: list[tuple[dict, bytes]] = field(default_factory=list)  # (meta, bytes), in order

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def blob(self, suffix: str) -> bytes:
        [found] = [data for meta, data in self.blobs if meta.get("filename", "").endswith(suffix)]
        return found


def run_tool(plugin: PluginProcess, credentials: dict, tool: str, parameters: dict) -> ToolRun:
    data = {"provider": PROVIDER, "tool": tool, "credentials": credentials, "credential_type": "api-key",
            "tool_parameters": parameters}  # fmt: skip
    run, pending = ToolRun(), {}
    for chunk in plugin.call("tool", "invoke_tool", data):
        kind, message, meta = chunk["type"], chunk["message"], chunk.get("meta") or {}
        if kind == "text":
            run.texts.append(message["text"])
        elif kind == "json":
            run.jsons.append(message["json_object"])
        elif kind == "variable" and message.get("stream"):
            run.streamed.setdefault(message["variable_name"], []).append(message["variable_value"])
        elif kind == "variable":
            run.variables[message["variable_name"]] = message["variable_value"]
        elif kind == "blob_chunk":
            pieces = pending.setdefault(message["id"], [])
            pieces.append(base64.b64decode(message["blob"]))
            if message["end"]:
                run.blobs.append((meta, b"".join(pending.pop(message["id"]))))
        else:
            raise AssertionError(f"{tool}: unexpected message type {kind!r}")
    assert not pending, f"{tool}: blobs without their end chunk"
    return run
