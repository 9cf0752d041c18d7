"""Talking to Triton: one client per server (HTTP pool, gRPC channel, capability cache).

Nothing outside this package imports grpc, and only the media URL guard
(``tritonmm.url_policy``, ``tritonmm.fetch_guard``) imports httpx besides it;
nothing in it knows about Dify. Core modules
take a ``TritonClient``; handlers get it from ``client_for(settings)``.
"""

from tritonmm.transport.client import TritonClient
from tritonmm.transport.clients import client_for, close_all
from tritonmm.transport.grpc_stream import InferStream, StreamResponse
from tritonmm.transport.tensors import InputTensor

__all__ = ["InferStream", "InputTensor", "StreamResponse", "TritonClient", "client_for", "close_all"]
