"""The one seam where httpx and grpc exceptions become ``tritonmm.errors``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import httpx

from tritonmm.contract import BUSY_PREFIX, INVALID_INPUT_PREFIX
from tritonmm.errors import (
    Cancelled,
    ConnectionFailed,
    InvalidInput,
    ModelBusy,
    ModelNotFound,
    ModelNotReady,
    RequestTimeout,
    ServerError,
    ServerNotReady,
    TritonMMError,
    Unauthorized,
)

_UNKNOWN_MODEL = re.compile(r"unknown model|has no available versions|is not found", re.I)
_NOT_READY = re.compile(r"not at ready state|is not ready|version not ready", re.I)

_GRPC_CODES: dict[grpc.StatusCode, type[TritonMMError]] = {
    grpc.StatusCode.UNAVAILABLE: ConnectionFailed,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeout,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: InvalidInput,
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthorized,
    grpc.StatusCode.PERMISSION_DENIED: Unauthorized,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def from_server_message(message: str, model: str) -> TritonMMError:
    """Classify an error that Triton sent as text only (stream errors carry no code)."""
    if message.startswith(INVALID_INPUT_PREFIX):
        return InvalidInput(message[len(INVALID_INPUT_PREFIX) :])
    if message.startswith(BUSY_PREFIX):  # not started: retrying later, or elsewhere, can succeed
        return ModelBusy(f"model '{model}' is busy: {message[len(BUSY_PREFIX) :]}")
    if _UNKNOWN_MODEL.search(message):
        return ModelNotFound(f"model '{model}': {message}")
    if _NOT_READY.search(message):
        return ModelNotReady(f"model '{model}': {message}")
    return ServerError(f"model '{model}' failed: {message}")


def from_http_status(status: int, message: str, model: str) -> TritonMMError:
    """Triton's HTTP status follows the error code (INVALID_ARG 400, NOT_FOUND 404,
    UNAVAILABLE 503, INTERNAL 500); its texts refine 400, which it also uses for
    unknown and unready models. 503 without Triton's busy text is a server (or the proxy in
    front of it) that cannot serve now; 429 is a proxy's rate limit."""
    if status in (401, 403):
        return Unauthorized(f"the server refused the credentials (HTTP {status}): {message}")
    if status == 429:
        return ModelBusy(f"the server has too many requests (HTTP 429): {message}")
    if status == 503 and not message.startswith(BUSY_PREFIX):
        return ServerNotReady(f"the server is unavailable (HTTP 503): {message}")
    error = from_server_message(message, model)
    if status == 400 and type(error) is ServerError:
        return InvalidInput(f"model '{model}' refused the request: {message}")
    if status == 404 and type(error) is ServerError:
        return ModelNotFound(f"model '{model}': {message}")
    return error


@contextmanager
def translated(target: str, model: str = "") -> Iterator[None]:
    """Run a transport call; re-raise foreign exceptions as ours, with the cause kept."""
    try:
        yield
    except TritonMMError:
        raise
    except httpx.TimeoutException as exc:
        kind = ConnectionFailed if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else RequestTimeout
        raise kind(f"timed out talking to Triton at {target}: {type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise ConnectionFailed(f"cannot reach Triton at {target}: {exc}") from exc
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        by_text = code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, None)
        if by_text or (details or "").startswith(BUSY_PREFIX):
            raise from_server_message(details or str(exc), model) from exc
        kind = _GRPC_CODES.get(code, ServerError)
        raise kind(f"Triton gRPC at {target}: {code.name}: {details}") from exc
