"""The generate extension's streaming path and shaped tensors, below the transport seam."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fake_triton import Router, error, fake_client
from tritonmm.contract import TensorSpec
from tritonmm.errors import InvalidInput, ModelNotFound, ServerError
from tritonmm.transport.sse import event_data
from tritonmm.transport.tensors import ShapedTensor, decode

PATH = "/v2/models/llm/generate_stream"


class Body(httpx.SyncByteStream):
    """An SSE body that remembers being closed (the client hanging up)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.closed = False

    def __iter__(self):
        for line in self.text.splitlines(keepends=True):
            yield line.encode()

    def close(self) -> None:
        self.closed = True


def sse(*events: dict) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events)


def route(body: Body, status: int = 200) -> Router:
    headers = {"content-type": "text/event-stream; charset=utf-8"}
    return Router({("POST", PATH): lambda _: httpx.Response(status, stream=body, headers=headers)})


def test_events_come_in_order_and_the_body_is_the_json_sent() -> None:
    body = Body(sse({"text_output": "He"}, {"text_output": "llo"}))
    router = route(body)
    client = fake_client(router)
    events = list(client.stream_generate("llm", {"text_input": "hi", "stream": True}))
    assert [e["text_output"] for e in events] == ["He", "llo"]
    assert json.loads(router.seen[0].read()) == {"text_input": "hi", "stream": True}
    assert body.closed


def test_an_error_event_after_200_raises_the_mapped_error() -> None:
    body = Body(sse({"text_output": "a"}) + sse({"error": "invalid input: max_tokens must be positive"}))
    stream = fake_client(route(body)).stream_generate("llm", {})
    seen = []
    with pytest.raises(InvalidInput, match="max_tokens must be positive"):
        for event in stream:
            seen.append(event)
    assert seen == [{"text_output": "a"}]
    assert body.closed


def test_a_failure_mid_stream_is_a_server_error_naming_the_model() -> None:
    body = Body(sse({"text_output": "a"}, {"error": "engine crashed"}))
    with pytest.raises(ServerError, match="model 'llm' failed: engine crashed"):
        list(fake_client(route(body)).stream_generate("llm", {}))


def test_an_error_status_before_inference_raises_at_open() -> None:
    router = Router({("POST", PATH): error(400, "Unknown model: 'llm'")})
    with pytest.raises(ModelNotFound):
        fake_client(router).stream_generate("llm", {})


def test_an_event_that_is_not_json_is_a_server_error() -> None:
    with pytest.raises(ServerError, match="not JSON"):
        list(fake_client(route(Body("data: {oops\n\n"))).stream_generate("llm", {}))


def test_closing_early_closes_the_response() -> None:
    body = Body(sse({"text_output": "a"}, {"text_output": "b"}, {"text_output": "c"}))
    stream = fake_client(route(body)).stream_generate("llm", {})
    events = iter(stream)
    assert next(events) == {"text_output": "a"}
    events.close()
    assert body.closed


def test_event_data_joins_multiline_data_and_skips_comments() -> None:
    lines = [": keep-alive", "event: message", "data: one", "data:two", "", "", "data: last"]
    assert list(event_data(lines)) == ["one\ntwo", "last"]


def test_shaped_tensors_pack_each_dtype_little_endian() -> None:
    seed = ShapedTensor(TensorSpec("seed", "TYPE_UINT64", (1,)), (2**64 - 1,), (1, 1))
    assert decode("UINT64", seed.raw()) == [2**64 - 1]
    flag = ShapedTensor(TensorSpec("stream", "TYPE_BOOL", (1,)), (True,), (1,))
    assert flag.raw() == b"\x01"
    top_p = ShapedTensor(TensorSpec("top_p", "TYPE_FP32", (1,)), (0.5,), (1,))
    assert decode("FP32", top_p.raw()) == [0.5]
    words = ShapedTensor(TensorSpec("stop_words", "TYPE_STRING", (-1,)), (b"a", b"bc"), (1, 2))
    assert decode("BYTES", words.raw()) == [b"a", b"bc"]


def test_a_shape_that_does_not_hold_the_values_is_refused() -> None:
    with pytest.raises(ValueError, match="does not hold 2 values"):
        ShapedTensor(TensorSpec("stop_words", "TYPE_STRING", (-1,)), (b"a", b"b"), (1, 1))
