"""Talking to Triton: HTTP control plane, gRPC streaming, tensor encoding.

Nothing outside this package imports httpx (except media URL fetching) or grpc;
nothing in it knows about Dify.
"""

from tritonmm.transport.grpc_stream import InferStream, StreamResponse, stream_infer
from tritonmm.transport.http import TritonHTTP, config_parameters
from tritonmm.transport.tensors import InputTensor

__all__ = ["InferStream", "InputTensor", "StreamResponse", "TritonHTTP", "config_parameters", "stream_infer"]
