"""Tensor payloads in the KServe v2 binary layout, without numpy.

A BYTES tensor is its elements, each prefixed by a little-endian uint32
length; the same layout serves gRPC ``raw_input_contents`` and the HTTP
binary-data extension.
"""

from __future__ import annotations

import array
import math
import struct
import sys
from dataclasses import dataclass

from tritonmm.contract import TensorSpec


@dataclass(frozen=True)
class InputTensor:
    """A BYTES input. ``batched``: one element per batch row, shape [n, 1], for
    models with ``max_batch_size > 0`` (dynamic batching); else shape [n]."""

    spec: TensorSpec
    elements: tuple[bytes, ...]
    batched: bool = False

    @property
    def shape(self) -> list[int]:
        return [len(self.elements), 1] if self.batched else [len(self.elements)]

    def raw(self) -> bytes:
        return encode_bytes(self.elements)


@dataclass(frozen=True)
class ShapedTensor:
    """An input of any dtype in the spec, with the shape given: what models we did not write
    take (flags, numbers, lists of words). BYTES values are bytes; others are numbers or bools,
    row-major. ``spec.triton_dtype`` is the config's (``TYPE_BOOL``, ``TYPE_UINT64``...)."""

    spec: TensorSpec
    values: tuple
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if math.prod(self.shape) != len(self.values):
            raise ValueError(f"{self.spec.name}: shape {list(self.shape)} does not hold {len(self.values)} values")
        if self.spec.wire_dtype != "BYTES" and self.spec.wire_dtype not in _PACK_CODES:
            raise ValueError(f"{self.spec.name}: cannot send {self.spec.wire_dtype} tensors")

    def raw(self) -> bytes:
        if self.spec.wire_dtype == "BYTES":
            return encode_bytes(self.values)
        return struct.pack(f"<{len(self.values)}{_PACK_CODES[self.spec.wire_dtype]}", *self.values)


def encode_bytes(elements: tuple[bytes, ...] | list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def decode_bytes(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ValueError("truncated BYTES tensor")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise ValueError("truncated BYTES tensor element")
        out.append(raw[pos : pos + size])
        pos += size
    return out


# KServe v2 raw tensors are little-endian; array.array decodes them in C.
_ARRAY_CODES = {
    "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
    "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q",
    "FP32": "f", "FP64": "d", "BOOL": "b",
}  # fmt: skip
_PACK_CODES = {**_ARRAY_CODES, "BOOL": "?"}


def decode(datatype: str, raw: bytes) -> list:
    """Decode one output tensor to a flat list (bytes for BYTES, numbers otherwise)."""
    if datatype == "BYTES":
        return decode_bytes(raw)
    code = _ARRAY_CODES.get(datatype)
    if code is None:
        raise ValueError(f"unsupported output datatype {datatype}")
    values = array.array(code)
    values.frombytes(raw)
    if sys.byteorder != "little":
        values.byteswap()
    return [bool(v) for v in values] if datatype == "BOOL" else values.tolist()
