"""A stand-in for ``triton_python_backend_utils``, below the python-backend adapters' seam.

Inside Triton, the python-backend stub provides this module (its C++ classes injected into
``triton_python_backend_utils``). The adapters in ``tritonmm_server.backend`` use only what
is spelled here, with the same names and call shapes, so their request handling can be
tested in-process in milliseconds. The end-to-end tests still run the real stub.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class TritonModelException(Exception):
    """Raised by a model's ``initialize``: the model does not load."""


class TritonError:
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = UNKNOWN) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._tensors = list(output_tensors or [])
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class Logger:
    """Records what the models log, per level."""

    lines: list[tuple[str, str]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.lines.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.lines.append(("warn", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.lines.append(("error", message))

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.lines.append(("verbose", message))


def get_input_tensor_by_name(inference_request: Any, name: str) -> Tensor | None:
    return next((tensor for tensor in inference_request.inputs() if tensor.name() == name), None)


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    if "model_transaction_policy" in model_config:
        return bool(model_config["model_transaction_policy"]["decoupled"])
    return False


# --- requests and response senders, as Triton hands them to execute ----------------------------


class ResponseSender:
    """Records every response sent and signals when the FINAL one arrives."""

    def __init__(self) -> None:
        self.sent: list[tuple[InferenceResponse, int]] = []
        self.closed = threading.Event()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if self.closed.is_set():
            raise RuntimeError("the response sender is closed: FINAL was already sent")
        self.sent.append((response, flags))
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.closed.set()

    @property
    def final(self) -> InferenceResponse:
        """The FINAL response: it must be the last one sent, and there must be exactly one."""
        finals = [response for response, flags in self.sent if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL]
        assert len(finals) == 1 and self.sent[-1][1] & TRITONSERVER_RESPONSE_COMPLETE_FINAL, self.sent
        return finals[0]


class InferenceRequest:
    def __init__(self, inputs: dict[str, np.ndarray] | None = None, *, cancelled: bool = False) -> None:
        self._inputs = [Tensor(name, array) for name, array in (inputs or {}).items()]
        self._cancelled = cancelled
        self.sender = ResponseSender()

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def is_cancelled(self) -> bool:
        return self._cancelled

    def get_response_sender(self) -> ResponseSender:
        return self.sender
