# SPDX-License-Identifier: Apache-2.0
"""``execute`` and ``finalize`` for the decoupled models (chat, text_to_speech).

A decoupled model answers each request with a stream of responses and closes it
with one that carries the FINAL flag. Each request runs in a thread of its own, so
one instance serves concurrent streams (a blocking ``execute`` would serialise
them); at most ``tmm.max_concurrent_requests`` at once (default
:data:`DEFAULT_MAX_CONCURRENT_REQUESTS`). A request over the limit is answered at
once, FINAL, with UNAVAILABLE and a message starting ``busy: ``: the number of
threads never grows with the load, and the client learns at once that it may retry.

A subclass implements :meth:`~StreamingModel.respond`, which sends the request's
responses and returns its final one; the base class answers an already cancelled
request with CANCELLED, turns an :class:`InputError` into INVALID_ARG (with the
contract's prefix) and anything else into INTERNAL, and always closes the stream
with FINAL. ``finalize`` waits up to :data:`FINALIZE_WAIT_S` for the requests
still running.

Importable only inside the python-backend stub (it needs ``triton_python_backend_utils``).
"""

from __future__ import annotations

import threading
from typing import Any

import triton_python_backend_utils as pb_utils

from tritonmm.contract import KEY_MAX_CONCURRENT_REQUESTS
from tritonmm_server.backend.errors import InputError
from tritonmm_server.backend.model_setup import ModelSetup
from tritonmm_server.backend.responses import (
    busy_response,
    cancelled_response,
    error_response,
    input_error_response,
    internal_error_response,
    send_final,
)

__all__ = ["DEFAULT_MAX_CONCURRENT_REQUESTS", "FINALIZE_WAIT_S", "StreamingModel"]

FINALIZE_WAIT_S = 30.0
# Requests served at once when the config does not say (tmm.max_concurrent_requests):
# enough for a chat's users on one CPU server, few enough threads to stay cheap.
DEFAULT_MAX_CONCURRENT_REQUESTS = 16


class StreamingModel:
    """``execute`` and ``finalize`` for decoupled models that serve each request in its own thread.

    Subclasses call :meth:`configure` in ``initialize`` and implement :meth:`respond`.
    """

    name: str = "model"  # the Triton model name, for the log and the busy message
    thread_name: str = "request"  # names the threads that serve requests
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = threading.Condition()

    def configure(self, setup: ModelSetup) -> None:
        """Take the model's name and its ``tmm.max_concurrent_requests`` from the checked config."""
        self.name = setup.name
        self.max_concurrent_requests = setup.positive(KEY_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_CONCURRENT_REQUESTS)

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
                admitted = self._in_flight < self.max_concurrent_requests
                if admitted:
                    self._in_flight += 1
            if not admitted:
                pb_utils.Logger.log_warn(f"{self.name}: busy, refused a request over the limit")
                send_final(sender, busy_response(self.name, self.max_concurrent_requests))
                continue
            try:
                threading.Thread(target=self._serve, args=(request, sender), name=self.thread_name, daemon=True).start()
            except Exception as exc:  # e.g. no thread can be started: the client must still get FINAL
                send_final(sender, error_response(f"cannot start the request: {exc}", pb_utils.TritonError.INTERNAL))
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
            send_final(sender, final)
            self._finished()

    def _finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()
