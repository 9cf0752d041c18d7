"""Typed settings, parsed once at the edge from the plugin's credential dict.

Dify hands credentials over as strings (``"5"``, ``""``); nothing past this module
reads the raw dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tritonmm.contract import CRED_GRPC_ENDPOINT, CRED_SERVER_URL
from tritonmm.errors import InvalidInput
from tritonmm.server_endpoints import ServerEndpoint, parse_endpoints
from tritonmm.url_policy import UrlPolicy, dify_files_policy

# Credential variable names shared by the provider and model forms (the endpoint
# names live in tritonmm.contract: the launcher prints them too).
CRED_CONNECT_TIMEOUT = "connect_timeout"
CRED_READ_TIMEOUT = "read_timeout"
CRED_IMAGE_MAX_SIDE = "image_max_side"
# Several servers: how long one request may spend retrying on other endpoints (and the
# fallback model) before its first token or byte; 0 turns retries off.
CRED_FAILOVER_TIMEOUT = "failover_timeout"
DEFAULT_FAILOVER_TIMEOUT = 20.0
# A customizable model's stand-in: another model name, used when this one is unavailable
# on every endpoint before anything was streamed.
CRED_FALLBACK_MODEL = "fallback_model"
# An API key for a gateway or Triton's --http-restricted-api / --grpc-restricted-protocol,
# sent on every HTTP request and gRPC call under the header name given (or X-API-Key).
CRED_API_KEY = "api_key"
CRED_API_KEY_HEADER = "api_key_header"
DEFAULT_API_KEY_HEADER = "X-API-Key"
# "true": media URLs may point at loopback, private and link-local addresses (an intranet
# deployment, or a local test server). Default false: public addresses and Dify's own
# files URL only (tritonmm.url_policy).
CRED_ALLOW_PRIVATE_URLS = "allow_private_urls"
# Dify's files URL(s), comma separated, when the plugin daemon's FILES_URL / INTERNAL_FILES_URL
# environment does not say it: files under <url>/files/ are always allowed.
CRED_FILES_URL = "files_url"


@dataclass(frozen=True)
class Timeouts:
    """Connect: establishing a connection. Read: the longest silence we accept
    from the server, between two streamed tokens or for a whole unary answer."""

    connect: float = 5.0
    read: float = 120.0


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class MediaLimits:
    """Caps applied in the plugin before anything is sent to Triton."""

    image_max_side: int = 1536  # longest side after downscaling, in pixels
    low_detail_max_side: int = 512  # for parts marked detail=low, as OpenAI's "low" does
    image_max_pixels: int = 120_000_000  # refuse to decode more (decompression bombs)
    image_max_bytes: int = 40 * 1024 * 1024
    video_max_bytes: int = 200 * 1024 * 1024
    audio_max_bytes: int = 100 * 1024 * 1024  # hours of compressed speech; a 100 MB WAV is ~50 min at 16 kHz
    document_max_bytes: int = 50 * 1024 * 1024  # PDF files; the server renders their pages (a page cap too)
    fetch_timeout: float = 30.0  # a media URL in a chat message (tools scale theirs to the file's size)

    def max_bytes(self, kind: str) -> int:
        """The size cap of one media kind ("image", "video", "audio", "document"; a ``Modality`` is one):
        the one table every loader, download and check reads."""
        caps = {
            "image": self.image_max_bytes,
            "video": self.video_max_bytes,
            "audio": self.audio_max_bytes,
            "document": self.document_max_bytes,
        }
        if kind not in caps:
            raise ValueError(f"unknown media kind {kind!r}")
        return caps[kind]


DEFAULT_MEDIA_LIMITS = MediaLimits()


@dataclass(frozen=True)
class ServerSettings:
    endpoints: tuple[ServerEndpoint, ...]  # one or more servers, in the order the credentials list them
    timeouts: Timeouts = DEFAULT_TIMEOUTS
    media: MediaLimits = DEFAULT_MEDIA_LIMITS
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (lower-case names: gRPC metadata)
    # Which media URLs may be downloaded (SSRF guard); Dify's FILES_URL is read from the environment.
    url_policy: UrlPolicy = field(default_factory=dify_files_policy)
    failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT  # seconds of retries before the first token; 0: none
    fallback_model: str = ""  # used when the requested model is unavailable everywhere; "" for none

    @property
    def http_url(self) -> str:
        """The first server's HTTP URL (e.g. http://127.0.0.1:8000, no trailing slash)."""
        return self.endpoints[0].http_url

    @property
    def grpc_target(self) -> str:
        """The first server's gRPC ``host:port``."""
        return self.endpoints[0].grpc_target

    @classmethod
    def from_credentials(cls, credentials: Mapping[str, Any]) -> ServerSettings:
        endpoints = parse_endpoints(credentials.get(CRED_SERVER_URL), credentials.get(CRED_GRPC_ENDPOINT))
        timeouts = Timeouts(
            connect=_positive_float(credentials, CRED_CONNECT_TIMEOUT, DEFAULT_TIMEOUTS.connect),
            read=_positive_float(credentials, CRED_READ_TIMEOUT, DEFAULT_TIMEOUTS.read),
        )
        max_side = _positive_float(credentials, CRED_IMAGE_MAX_SIDE, DEFAULT_MEDIA_LIMITS.image_max_side)
        media = MediaLimits(image_max_side=int(max_side))
        headers = _api_key_headers(credentials)
        files_urls = [u.strip().rstrip("/") for u in str(credentials.get(CRED_FILES_URL) or "").split(",") if u.strip()]
        url_policy = dify_files_policy(
            allow_private=flag(credentials, CRED_ALLOW_PRIVATE_URLS, False),
            extra_base_urls=[url + "/files/" for url in files_urls],
        )
        return cls(
            endpoints=endpoints,
            timeouts=timeouts,
            media=media,
            headers=headers,
            url_policy=url_policy,
            failover_timeout=_seconds(credentials, CRED_FAILOVER_TIMEOUT, DEFAULT_FAILOVER_TIMEOUT),
            fallback_model=_model_name(credentials, CRED_FALLBACK_MODEL),
        )


def _api_key_headers(credentials: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    key = str(credentials.get(CRED_API_KEY) or "").strip()
    if not key:
        return ()
    name = str(credentials.get(CRED_API_KEY_HEADER) or "").strip() or DEFAULT_API_KEY_HEADER
    if not name.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput(f"'{CRED_API_KEY_HEADER}' must be an HTTP header name, got {name!r}")
    if any(c in key for c in "\r\n"):
        raise InvalidInput(f"'{CRED_API_KEY}' must be one line")
    return ((name.lower(), key),)


def flag(credentials: Mapping[str, Any], key: str, default: bool) -> bool:
    """A yes/no credential: Dify's switch and radio forms send "true"/"false"."""
    raw = credentials.get(key)
    if isinstance(raw, bool):
        return raw
    text = str(raw if raw is not None else "").strip().lower()
    if text == "":
        return default
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InvalidInput(f"'{key}' must be true or false, got {raw!r}")


def _positive_float(credentials: Mapping[str, Any], key: str, default: float) -> float:
    raw = credentials.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"'{key}' must be a number, got {raw!r}") from None
    if value <= 0:
        raise InvalidInput(f"'{key}' must be positive, got {raw!r}")
    return value


def _seconds(credentials: Mapping[str, Any], key: str, default: float) -> float:
    """A duration that may be 0 (off)."""
    raw = credentials.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"'{key}' must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise InvalidInput(f"'{key}' must be 0 or more seconds, got {raw!r}")
    return value


def _model_name(credentials: Mapping[str, Any], key: str) -> str:
    name = str(credentials.get(key) or "").strip()
    if any(c.isspace() or c in ",/" for c in name):
        raise InvalidInput(f"'{key}' must be one model name as the Triton repository spells it, got {name!r}")
    return name
