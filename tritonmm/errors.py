"""One exception tree for everything the core library raises.

    TritonMMError
    ├── InvalidInput          the request itself is wrong (bad media, bad parameter)
    │   └── UnsupportedMedia  a media type or modality the model does not take
    ├── ModelNotFound         the server has no such model
    ├── Unavailable           server or model exists but cannot serve now
    │   ├── ServerNotReady
    │   ├── ModelNotReady
    │   └── ModelBusy         at capacity now (Triton's busy: answer, HTTP 429): another server may take it
    ├── ConnectionFailed      the server cannot be reached or the connection broke
    │   └── RequestTimeout    no answer within the read timeout
    ├── Unauthorized          a proxy in front of Triton refused the credentials
    ├── Cancelled             the request was cancelled
    └── ServerError           the model failed while running the request

Each leaf maps to exactly one Dify ``Invoke*Error`` class in the plugin
(``plugins/model_provider/models/common.py``). Foreign exceptions (httpx, grpc)
are translated at one seam, ``tritonmm.transport.errors``.
"""

from __future__ import annotations


class TritonMMError(Exception):
    """Base class; ``str(e)`` is a message fit for the Dify user."""


class InvalidInput(TritonMMError):
    pass


class UnsupportedMedia(InvalidInput):
    pass


class ModelNotFound(TritonMMError):
    pass


class Unavailable(TritonMMError):
    pass


class ServerNotReady(Unavailable):
    pass


class ModelNotReady(Unavailable):
    pass


class ModelBusy(Unavailable):
    pass


class ConnectionFailed(TritonMMError):
    pass


class RequestTimeout(ConnectionFailed):
    pass


class Unauthorized(TritonMMError):
    pass


class Cancelled(TritonMMError):
    pass


class ServerError(TritonMMError):
    pass
