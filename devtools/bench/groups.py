"""The benchmark's case groups, in the order they run, with the title of each one's section.

Each group module has ``NAME``, ``models(quick)`` and ``checkpoints(quick)`` (what it needs
served), ``run(stack, quick)`` (its numbers, a JSON-able dict) and ``render(result, report)``
(its section of the page).
"""

from __future__ import annotations

from types import ModuleType

from devtools.bench import batching, chat, embeddings, failover, footprint, media, speech

# footprint last: it reads the memory peaks the others caused
GROUPS: dict[str, ModuleType] = {
    module.NAME: module for module in (chat, batching, embeddings, media, speech, failover, footprint)
}
TITLES = {
    "chat": "Chat: the plugin vs the raw gRPC stream, and the blocking way",
    "batching": "Chat concurrency: iteration-level batching on vs off",
    "embeddings": "Embeddings: dynamic batching, response cache, plugin overhead",
    "media": "Media transport: binary vs base64",
    "speech": "Speech: real-time factor",
    "failover": "Failover across three servers",
    "footprint": "Packages, install, cold start, memory",
}
