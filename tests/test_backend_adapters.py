"""The python-backend adapters (tritonmm_server.backend) in-process, under a stand-in pb_utils.

What the bundled models rely on and a real server makes hard to provoke: one bad request in
a dynamic batch fails alone, a streaming model refuses work over its thread limit at once
with a busy error, and every error closes its stream with the FINAL flag.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests import fake_pb_utils as pb
from tritonmm.contract import BUSY_PREFIX, INVALID_INPUT_PREFIX, KEY_MAX_CONCURRENT_REQUESTS, TensorSpec
from tritonmm_server.backend.errors import InputError

ADAPTERS = ("responses", "model_setup", "batched", "unbatched", "streaming")
TEXT = TensorSpec("TEXT", "TYPE_STRING", (1,))
LENGTH = TensorSpec("LENGTH", "TYPE_INT32", (1,))
WAIT_S = 30.0  # an upper bound for a thread to finish; never a measured duration


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The adapter modules imported against the stand-in, and removed again afterwards."""
    monkeypatch.setattr(pb.Logger, "lines", [])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    for name in ADAPTERS:
        monkeypatch.delitem(sys.modules, f"tritonmm_server.backend.{name}", raising=False)
    yield SimpleNamespace(**{name: importlib.import_module(f"tritonmm_server.backend.{name}") for name in ADAPTERS})
    for name in ADAPTERS:
        sys.modules.pop(f"tritonmm_server.backend.{name}", None)


def request(*texts: bytes, cancelled: bool = False) -> pb.InferenceRequest:
    return pb.InferenceRequest({TEXT.name: np.array([[t] for t in texts], dtype=np.object_)}, cancelled=cancelled)


def lengths(response: pb.InferenceResponse) -> list[int]:
    assert not response.has_error(), response.error().message()
    [tensor] = response.output_tensors()
    assert tensor.name() == LENGTH.name
    return tensor.as_numpy().reshape(-1).tolist()


def check_text(texts: list[bytes]) -> list[bytes]:
    for row, text in enumerate(texts):
        if not text:
            raise InputError(f"row {row}: the text is empty")
        if text == b"boom":
            raise RuntimeError("the model broke on this text")
    return texts


# --- batched: requests that share one computation ---------------------------------------------


def lengths_model(backend: SimpleNamespace) -> Any:
    class Lengths(backend.batched.BatchedModel):
        name = "lengths"

        def __init__(self) -> None:
            self.computed: list[int] = []

        def prepare(self, request: Any) -> list[bytes]:
            return check_text(backend.responses.rows(request, TEXT) or [])

        def compute(self, items: list[bytes]) -> dict[TensorSpec, np.ndarray]:
            self.computed.append(len(items))
            return {LENGTH: np.array([[len(t)] for t in items], dtype=np.int32)}

    return Lengths()


def test_one_bad_request_in_a_batch_fails_alone(backend: SimpleNamespace) -> None:
    model = lengths_model(backend)
    batch = [request(b"a", b"bb"), request(b"ccc"), request(b"dd", b""), request(b"eeee", b"f", b"gg")]

    responses = model.execute(batch)

    assert len(responses) == 4
    assert [lengths(responses[i]) for i in (0, 1, 3)] == [[1, 2], [3], [4, 1, 2]]
    error = responses[2].error()
    assert (error.code(), error.message()) == (
        pb.TritonError.INVALID_ARG,
        f"{INVALID_INPUT_PREFIX}row 1: the text is empty",
    )
    assert model.computed == [6]  # the good requests' rows in one computation


def test_an_unexpected_failure_in_one_request_fails_it_alone(backend: SimpleNamespace) -> None:
    model = lengths_model(backend)
    responses = model.execute([request(b"x"), request(b"boom"), request(b"yy")])
    assert [lengths(responses[i]) for i in (0, 2)] == [[1], [2]]
    error = responses[1].error()
    assert (error.code(), error.message()) == (pb.TritonError.INTERNAL, "the model broke on this text")
    assert ("error", "lengths: request failed: RuntimeError: the model broke on this text") in pb.Logger.lines


def test_a_failed_computation_fails_the_good_requests_and_keeps_the_bad_ones_answer(backend: SimpleNamespace) -> None:
    model = lengths_model(backend)
    model.compute = lambda items: (_ for _ in ()).throw(MemoryError("out of memory"))
    responses = model.execute([request(b"x"), request(b""), request(b"yy")])
    codes = [response.error().code() for response in responses]
    assert codes == [pb.TritonError.INTERNAL, pb.TritonError.INVALID_ARG, pb.TritonError.INTERNAL]
    assert responses[0].error().message() == "out of memory"


# --- unbatched: each request on its own --------------------------------------------------------


class Interrupted(Exception):
    pass


def test_unbatched_answers_each_request_on_its_own(backend: SimpleNamespace) -> None:
    class Lengths(backend.unbatched.UnbatchedModel):
        name = "lengths"
        cancelled_errors = (Interrupted,)

        def answer(self, request: Any) -> dict[TensorSpec, np.ndarray]:
            texts = check_text(backend.responses.rows(request, TEXT) or [])
            if request.is_cancelled():
                raise Interrupted
            return {LENGTH: np.array([len(t) for t in texts], dtype=np.int32)}

    batch = [request(b"abc"), request(b""), request(b"boom"), request(b"zz", cancelled=True), request(b"q")]
    responses = Lengths().execute(batch)
    assert [lengths(responses[i]) for i in (0, 4)] == [[3], [1]]
    assert [responses[i].error().code() for i in (1, 2, 3)] == [
        pb.TritonError.INVALID_ARG,
        pb.TritonError.INTERNAL,
        pb.TritonError.CANCELLED,
    ]


# --- streaming: a thread per request, bounded ----------------------------------------------------


def streaming_model(backend: SimpleNamespace, limit: int) -> Any:
    tensor = backend.responses.tensor

    class Gated(backend.streaming.StreamingModel):
        name = "gated"
        thread_name = "gated-request"

        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()
            self.max_concurrent_requests = limit

        def respond(self, request: Any, sender: Any) -> Any:
            sender.send(pb.InferenceResponse([tensor(TEXT, b"partial")]))
            assert self.release.wait(WAIT_S)
            return pb.InferenceResponse([tensor(TEXT, b"done")])

    return Gated()


def serving_threads(model: Any) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == model.thread_name]


def test_a_request_over_the_limit_is_refused_at_once_as_busy(backend: SimpleNamespace) -> None:
    model = streaming_model(backend, limit=2)
    first, second, third = request(b"1"), request(b"2"), request(b"3")

    model.execute([first, second, third])

    # The third never got a thread: it is already answered, FINAL, while the two others run.
    assert third.sender.closed.is_set() and len(third.sender.sent) == 1
    error = third.sender.final.error()
    assert error.code() == pb.TritonError.UNAVAILABLE
    assert error.message().startswith(BUSY_PREFIX) and "limit of 2 concurrent requests" in error.message()
    assert KEY_MAX_CONCURRENT_REQUESTS in error.message()
    assert not first.sender.closed.is_set() and not second.sender.closed.is_set()
    assert len(serving_threads(model)) == 2

    model.release.set()
    for done in (first, second):
        assert done.sender.closed.wait(WAIT_S)
        [(partial, flags), _] = done.sender.sent
        assert flags == 0 and partial.output_tensors()[0].as_numpy().tolist() == [b"partial"]
        assert done.sender.final.output_tensors()[0].as_numpy().tolist() == [b"done"]

    model.finalize()  # returns at once: nothing in flight
    fourth = request(b"4")
    model.execute([fourth])  # the places are free again
    assert fourth.sender.closed.wait(WAIT_S) and not fourth.sender.final.has_error()
    assert not [line for line in pb.Logger.lines if "still running" in line[1]]


def failing_model(backend: SimpleNamespace, failure: BaseException) -> Any:
    tensor = backend.responses.tensor

    class Failing(backend.streaming.StreamingModel):
        name = "failing"

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def respond(self, request: Any, sender: Any) -> Any:
            self.calls += 1
            sender.send(pb.InferenceResponse([tensor(TEXT, b"first token")]))
            raise failure

    return Failing()


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        (RuntimeError("generate failed"), pb.TritonError.INTERNAL, "generate failed"),
        (
            InputError("image 2: not an image"),
            pb.TritonError.INVALID_ARG,
            f"{INVALID_INPUT_PREFIX}image 2: not an image",
        ),
    ],
)
def test_an_exception_closes_the_stream_with_final(
    backend: SimpleNamespace, failure: Exception, code: int, message: str
) -> None:
    model = failing_model(backend, failure)
    failed = request(b"x")
    model.execute([failed])
    assert failed.sender.closed.wait(WAIT_S)
    assert [flags for _, flags in failed.sender.sent] == [0, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL]
    error = failed.sender.final.error()
    assert (error.code(), error.message()) == (code, message)


def test_a_request_cancelled_before_it_starts_is_answered_cancelled(backend: SimpleNamespace) -> None:
    model = failing_model(backend, RuntimeError("must not run"))
    cancelled = request(b"x", cancelled=True)
    model.execute([cancelled])
    assert cancelled.sender.closed.wait(WAIT_S)
    assert len(cancelled.sender.sent) == 1 and cancelled.sender.final.error().code() == pb.TritonError.CANCELLED
    assert model.calls == 0


# --- the config: shape, contract and the concurrency limit ----------------------------------------


def config(tmp_path: Path, decoupled: bool, max_batch_size: int = 0, **parameters: str) -> dict[str, str]:
    tensor = {"name": TEXT.name, "data_type": TEXT.triton_dtype, "dims": list(TEXT.dims)}
    params = {"tmm.task": "chat", "tmm.model_path": str(tmp_path), **parameters}
    body = {
        "max_batch_size": max_batch_size,
        "input": [tensor],
        "output": [tensor],
        "parameters": {key: {"string_value": value} for key, value in params.items()},
    }
    if decoupled:
        body["model_transaction_policy"] = {"decoupled": True}
    return {"model_name": "chat", "model_config": json.dumps(body)}


def test_the_limit_comes_from_the_config(backend: SimpleNamespace, tmp_path: Path) -> None:
    load_setup = backend.model_setup.load_setup
    model = streaming_model(backend, limit=1)
    model.configure(load_setup(config(tmp_path, True), "chat", [TEXT], [TEXT], decoupled=True))
    assert (model.name, model.max_concurrent_requests) == ("chat", backend.streaming.DEFAULT_MAX_CONCURRENT_REQUESTS)
    model.configure(
        load_setup(config(tmp_path, True, **{KEY_MAX_CONCURRENT_REQUESTS: "3"}), "chat", [TEXT], [TEXT], decoupled=True)
    )
    assert model.max_concurrent_requests == 3
    zero = load_setup(
        config(tmp_path, True, **{KEY_MAX_CONCURRENT_REQUESTS: "0"}), "chat", [TEXT], [TEXT], decoupled=True
    )
    with pytest.raises(pb.TritonModelException, match=f"{KEY_MAX_CONCURRENT_REQUESTS} must be positive, got 0"):
        model.configure(zero)


@pytest.mark.parametrize(
    ("decoupled", "max_batch_size", "shape", "message"),
    [
        (False, 0, {"decoupled": True}, "the m model must be decoupled: model_transaction_policy"),
        (True, 0, {}, "the m model must not be decoupled: one response per request"),
        (False, 8, {}, "the m model must have max_batch_size 0: it is not batched"),
        (False, 0, {"row": "one text"}, "the m model needs max_batch_size >= 1: one text per row"),
    ],
)
def test_a_config_of_the_wrong_shape_does_not_load(
    backend: SimpleNamespace, tmp_path: Path, decoupled: bool, max_batch_size: int, shape: dict, message: str
) -> None:
    with pytest.raises(pb.TritonModelException, match=message):
        backend.model_setup.load_setup(config(tmp_path, decoupled, max_batch_size), "m", [TEXT], [TEXT], **shape)


def test_a_config_that_breaks_the_contract_does_not_load(backend: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(
        pb.TritonModelException, match="config outputs are \\['TEXT'\\], the contract says \\['LENGTH'\\]"
    ):
        backend.model_setup.load_setup(config(tmp_path, False, 4), "m", [TEXT], [LENGTH], row="one text")
