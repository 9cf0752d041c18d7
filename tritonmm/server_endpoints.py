"""The Triton servers a credential set names: comma-separated lists, parsed and checked once.

``server_url`` lists one HTTP URL per server; ``grpc_endpoint`` lists the gRPC
``host:port`` of each, in the same order, or is empty: then each server's gRPC
endpoint is its URL's host on port 8001. Every item is checked here, so a typo
(a line break, a missing host, a bad port, one list longer than the other) is a
credentials error naming the field and the item, never a transport error later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tritonmm.contract import CRED_GRPC_ENDPOINT, CRED_SERVER_URL
from tritonmm.errors import InvalidInput

DEFAULT_GRPC_PORT = 8001


@dataclass(frozen=True)
class ServerEndpoint:
    """One Triton server: its HTTP URL (no trailing slash) and its gRPC ``host:port``."""

    http_url: str
    grpc_target: str


def parse_endpoints(server_urls: Any, grpc_endpoints: Any) -> tuple[ServerEndpoint, ...]:
    """The servers of the two credential fields, in order; ``InvalidInput`` names what is wrong."""
    raw_urls = _items(server_urls, CRED_SERVER_URL)
    if not raw_urls:
        raise InvalidInput(f"'{CRED_SERVER_URL}' is required, e.g. http://127.0.0.1:8000")
    urls = [_http_url(item, _where(CRED_SERVER_URL, i, len(raw_urls))) for i, item in enumerate(raw_urls)]
    raw_targets = _items(grpc_endpoints, CRED_GRPC_ENDPOINT)
    if raw_targets and len(raw_targets) != len(urls):
        raise InvalidInput(
            f"'{CRED_GRPC_ENDPOINT}' lists {len(raw_targets)} endpoint(s) and '{CRED_SERVER_URL}' {len(urls)}: "
            f"give one gRPC endpoint per server URL, in the same order, or leave '{CRED_GRPC_ENDPOINT}' empty "
            f"(each server URL's host, port {DEFAULT_GRPC_PORT})"
        )
    if raw_targets:
        targets = [
            _grpc_target(item, _where(CRED_GRPC_ENDPOINT, i, len(raw_targets))) for i, item in enumerate(raw_targets)
        ]
    else:
        targets = [_default_grpc_target(url) for url in urls]
    endpoints = tuple(ServerEndpoint(url, target) for url, target in zip(urls, targets, strict=True))
    _refuse_repeats([e.http_url for e in endpoints], f"'{CRED_SERVER_URL}' names {{}} twice: list each server once")
    if raw_targets:
        _refuse_repeats(targets, f"'{CRED_GRPC_ENDPOINT}' names {{}} twice: list each server once")
    else:
        _refuse_repeats(
            targets,
            f"two server URLs would share the gRPC endpoint {{}} (their host, port {DEFAULT_GRPC_PORT}): "
            f"list the gRPC endpoints in '{CRED_GRPC_ENDPOINT}'",
        )
    return endpoints


def _items(raw: Any, name: str) -> list[str]:
    """The comma-separated items of a field, stripped; an empty item between commas is refused."""
    text = str(raw if raw is not None else "").strip()
    if not text:
        return []
    items = [item.strip() for item in text.split(",")]
    for index, item in enumerate(items):
        if not item:
            raise InvalidInput(f"{_where(name, index, len(items))} is empty: remove the extra comma")
    return items


def _where(name: str, index: int, count: int) -> str:
    return f"'{name}'" if count == 1 else f"'{name}' item {index + 1}"


def _refuse_controls(item: str, where: str) -> None:
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in item):
        raise InvalidInput(f"{where} contains a space, line break or control character: {item!r}")


def _http_url(item: str, where: str) -> str:
    _refuse_controls(item, where)
    text = item.rstrip("/")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{where} must be an http(s) URL such as http://triton:8000, got {item!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise InvalidInput(f"{where} has a bad port (a number from 1 to 65535), got {item!r}") from None
    if parts.port == 0 or parts.query or parts.fragment:
        raise InvalidInput(f"{where} must be an http(s) URL without ?query or #fragment, port 1-65535, got {item!r}")
    return text


def _grpc_target(item: str, where: str) -> str:
    _refuse_controls(item, where)
    text = item.split("://", 1)[-1].rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidInput(f"{where} must be host:port, such as triton:8001, got {item!r}")
    if not 1 <= int(port) <= 65535:
        raise InvalidInput(f"{where} has a bad port (a number from 1 to 65535), got {item!r}")
    if "/" in host or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        raise InvalidInput(f"{where} must be host:port (an IPv6 address in brackets: [::1]:8001), got {item!r}")
    return text


def _default_grpc_target(http_url: str) -> str:
    host = urlsplit(http_url).hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{DEFAULT_GRPC_PORT}"


def _refuse_repeats(values: list[str], message: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value.lower() in seen:
            raise InvalidInput(message.format(value))
        seen.add(value.lower())
