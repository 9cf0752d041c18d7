# SPDX-License-Identifier: Apache-2.0
"""Python-backend plumbing shared by the bundled decoupled models (chat, text_to_speech).

A decoupled model answers each request with a stream of responses and closes it
with one that carries the FINAL flag. This module holds what their ``model.py``
files would otherwise both spell out:

* :func:`load_setup`: the config checked to be decoupled and against the
  contract, then its ``tmm.*`` parameters, checkpoint directory and capabilities;
* :class:`StreamingModel`: ``execute`` and ``finalize``. Each request runs in a
  thread of its own, so one instance serves concurrent streams (a blocking
  ``execute`` would serialise them). A subclass implements :meth:`~StreamingModel.respond`,
  which sends the request's responses and returns its final one; the base class
  answers an already cancelled request with CANCELLED, turns an
  :class:`InputError` into INVALID_ARG (with the contract's prefix) and anything
  else into INTERNAL, and always closes the stream with FINAL. ``finalize`` waits
  up to :data:`FINALIZE_WAIT_S` for the requests still running;
* :func:`texts` and :func:`tensor`: a request's strings, a one-value output tensor.

The error responses and :func:`~tritonmm_server.backend.batched.rows` are those of
:mod:`tritonmm_server.backend.batched`. Importable only inside the python-backend
stub (it needs ``triton_python_backend_utils``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from tritonmm.contract import TensorSpec
from tritonmm_server.backend.batched import (
    cancelled_response,
    error_response,
    input_error_response,
    internal_error_response,
    rows,
)
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import ModelSetup, check_contract, read_setup

__all__ = ["FINALIZE_WAIT_S", "StreamingModel", "load_setup", "tensor", "texts"]

FINALIZE_WAIT_S = 30.0
_NUMPY_DTYPES = {"TYPE_STRING": np.object_, "TYPE_INT32": np.int32}


def load_setup(
    args: dict[str, str], kind: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> ModelSetup:
    """Check that the config is decoupled and matches the contract, and read its parameters.

    ``kind`` names the model in messages ("chat"). Raises ``TritonModelException``:
    the model does not load.
    """
    config = json.loads(args["model_config"])
    if not pb_utils.using_decoupled_model_transaction_policy(config):
        raise pb_utils.TritonModelException(
            f"the {kind} model must be decoupled: model_transaction_policy {{ decoupled: true }}"
        )
    check_contract(config, inputs, outputs)
    return read_setup(args["model_name"], config)


def texts(request: Any, spec: TensorSpec) -> list[str]:
    """The strings of an input tensor, [] when it is absent; InputError when one is not UTF-8."""
    try:
        return [blob.decode("utf-8") for blob in rows(request, spec) or []]
    except UnicodeDecodeError as exc:
        raise InputError(f"{spec.name} is not valid UTF-8: {exc}") from None


def tensor(spec: TensorSpec, value: str | bytes | int) -> Any:
    """An output tensor holding one value."""
    return pb_utils.Tensor(spec.name, np.array([value], dtype=_NUMPY_DTYPES[spec.triton_dtype]))


class StreamingModel:
    """``execute`` and ``finalize`` for decoupled models that serve each request in its own thread.

    Subclasses set :attr:`name` in ``initialize`` and implement :meth:`respond`.
    """

    name: str = "model"  # set per instance by initialize: the Triton model name, for the log
    thread_name: str = "request"  # names the threads that serve requests

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = threading.Condition()

    def respond(self, request: Any, sender: Any) -> Any:
        """Send the request's responses through ``sender`` and return the final one (FINAL is added).

        Raise InputError for a bad request; return :func:`cancelled_response` when
        the client cancelled it midway.
        """
        raise NotImplementedError

    def execute(self, requests: list) -> None:
        for request in requests:
            sender = request.get_response_sender()
            with self._idle:
                self._in_flight += 1
            try:
                threading.Thread(target=self._serve, args=(request, sender), name=self.thread_name, daemon=True).start()
            except Exception as exc:  # e.g. no thread can be started: the client must still get FINAL
                _send_final(sender, error_response(f"cannot start the request: {exc}", pb_utils.TritonError.INTERNAL))
                self._finished()
        return None

    def finalize(self) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._in_flight == 0, timeout=FINALIZE_WAIT_S):
                pb_utils.Logger.log_warn(f"{self.name}: unloading with {self._in_flight} request(s) still running")

    def _serve(self, request: Any, sender: Any) -> None:
        final = error_response("the request ended without a result", pb_utils.TritonError.INTERNAL)
        try:
            final = cancelled_response() if request.is_cancelled() else self.respond(request, sender)
        except InputError as exc:
            final = input_error_response(exc)
        except Exception as exc:
            final = internal_error_response(self.name, exc)
        finally:
            _send_final(sender, final)
            self._finished()

    def _finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


def _send_final(sender: Any, response: Any) -> None:
    try:
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception as exc:  # the sender is closed or the client is gone: nobody left to tell
        pb_utils.Logger.log_warn(f"could not send a final response: {exc}")
