from collections.abc import Generator
from dataclasses import asdict
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from tools import support

from tritonmm import admin
from tritonmm.errors import InvalidInput

READ_ACTIONS = ("health", "models", "statistics", "metrics")
CONTROL_ACTIONS = ("load", "unload", "reload")


class TritonAdminTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        server = support.client(credentials)
        action = support.text(tool_parameters, "action", "health")
        model = support.text(tool_parameters, "model")
        if action == "health":
            result: Any = {**admin.health(server), "models": [asdict(m) for m in admin.models(server)]}
            summary = f"live={result['live']} ready={result['ready']}, " + ", ".join(
                f"{m['name']}:{m['state'] or 'not loaded'}" for m in result["models"]
            )
        elif action == "models":
            result = [asdict(m) for m in admin.models(server)]
            summary = "\n".join(f"{m['name']} {m['state'] or 'not loaded'} {m['reason']}".rstrip() for m in result)
        elif action == "statistics":
            result = admin.statistics(server, model)
            summary = "\n".join(
                f"{s['model']}: {s['requests']} requests, {s['failures']} failed, "
                f"{s['mean_request_ms']} ms mean, {s['cache_hits']} cache hits"
                for s in result
            )
        elif action == "metrics":
            url = admin.metrics_url(server, str(credentials.get(support.CRED_METRICS_URL) or ""))
            result = admin.metrics_summary(server, url)
            summary = "\n".join(f"{name}: {sum(values.values()):g}" for name, values in sorted(result.items()))
        elif action in CONTROL_ACTIONS:
            if not support.truthy(credentials, support.CRED_ALLOW_ADMIN):
                raise InvalidInput(
                    f"'{action}' changes the server: turn on 'Allow model load, unload and reload' in this "
                    "provider's credentials first"
                )
            entry = admin.control(server, action, model)
            result = asdict(entry)
            summary = f"{action} {model}: {entry.state or 'not loaded'} {entry.reason}".rstrip()
        else:
            raise InvalidInput(f"'action' must be one of {', '.join(READ_ACTIONS + CONTROL_ACTIONS)}, got {action!r}")
        yield self.create_text_message(summary)
        yield self.create_json_message({"action": action, "result": result})
