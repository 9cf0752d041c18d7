"""Chats with models we did not write, on a fake Triton below the transport seam: what is
sent, how answers become chunks, tool calls, structured output, errors and cancellation."""

from __future__ import annotations

import array
import json
import logging

import httpx
import pytest

from tests import media_fixtures as fx
from tests.backend_configs import TRTLLM_INPUTS, TRTLLM_OUTPUTS, VLLM_INPUTS, VLLM_OUTPUTS, as_json
from tests.fake_triton import Router, ScriptedStreams, bytes_out, config, fake_client, stream_message
from tests.test_generate_stream import Body, sse
from tritonmm.chat import ChatParams
from tritonmm.contract import Feature
from tritonmm.errors import InvalidInput, ServerError, UnsupportedMedia
from tritonmm.interfaces import session
from tritonmm.interfaces.options import BackendOptions
from tritonmm.interfaces.routes import backend_features
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart, Tool
from tritonmm.structured_output import parse_response_format

VLLM = as_json(VLLM_INPUTS, VLLM_OUTPUTS, backend="vllm")
WEATHER = Tool("get_weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def uint32(*values: int):
    return "UINT32", array.array("I", values).tobytes()


def vllm_delta(text: bytes, *, last: bool = False, prompt: int = 9, reason: bytes = b"None"):
    outputs = {"text_output": bytes_out(text), "finish_reason": bytes_out(reason if last else b"None")}
    outputs |= {"num_input_tokens": uint32(prompt), "num_output_tokens": uint32(1)}
    return stream_message(outputs, final=last)


def user(*parts) -> list[Message]:
    return [Message("system", (TextPart("Be brief."),)), Message("user", parts or (TextPart("Hi"),))]


def backend(router: Router, streams: ScriptedStreams | None = None, **form: str):
    client = fake_client(router, streams)
    resolved = session.resolve(client, "llm", BackendOptions.from_credentials(form))
    return client, resolved


def test_vllm_streams_one_chunk_per_delta_with_the_counts_on_the_last() -> None:
    streams = ScriptedStreams([vllm_delta(b"Hel"), vllm_delta(b"lo"), vllm_delta(b"!", last=True, reason=b"stop")])
    client, llm = backend(Router().model("llm", VLLM), streams, chat_template="chatml")
    chunks = list(session.open_backend_chat(client, llm, user(), ChatParams(max_tokens=8)))
    assert [c.text for c in chunks] == ["Hel", "lo", "!", ""]
    assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == ("stop", 9, 3)
    prompt = streams.sent()["text_input"][0].decode()
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_features_follow_the_interface_and_the_template() -> None:
    router = Router().model("llm", VLLM).model("video_frames", config("video_frames"))
    client, text_only = backend(router, chat_template="chatml")
    assert backend_features(client, text_only.caps) == {
        Feature.TOOL_CALL, Feature.MULTI_TOOL_CALL, Feature.STREAM_TOOL_CALL,
    }  # fmt: skip
    client, vision = backend(router, chat_template="gemma3")
    assert backend_features(client, vision.caps) == {Feature.VISION, Feature.VIDEO}  # no tools, no documents
    client, generate = backend(router, chat_template="qwen2_vl", chat_interface="generate")
    assert Feature.VISION not in backend_features(client, generate.caps)  # the generate path carries text only


def test_tool_calls_are_parsed_from_the_text_and_never_shown() -> None:
    call = b'<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    deltas = [vllm_delta(call[i : i + 7]) for i in range(0, len(call), 7)] + [vllm_delta(b"", last=True)]
    client, llm = backend(Router().model("llm", VLLM), ScriptedStreams(deltas), chat_template="chatml")
    chunks = list(session.open_backend_chat(client, llm, user(), ChatParams(), tools=[WEATHER]))
    assert "".join(c.text for c in chunks) == ""
    last = chunks[-1]
    assert last.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments_json)) for c in last.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_tools_for_a_template_that_renders_none_are_refused() -> None:
    client, llm = backend(Router().model("llm", VLLM), chat_template="gemma3")
    with pytest.raises(InvalidInput, match=r"cannot call tools: its chat template \(gemma3\) renders none"):
        session.open_backend_chat(client, llm, user(), ChatParams(), tools=[WEATHER])


def test_structured_output_falls_back_to_the_older_vllm_key_and_remembers_it() -> None:
    refused = stream_message(error="Error generating stream: 'NoneType' object has no attribute 'lora_name'")
    streams = ScriptedStreams([refused], [vllm_delta(b"{}", last=True)], [vllm_delta(b"{}", last=True)])
    client, llm = backend(Router().model("llm", VLLM), streams, chat_template="chatml")
    params = ChatParams(response_format=parse_response_format("json_object", None))
    assert "".join(c.text for c in session.open_backend_chat(client, llm, user(), params)) == "{}"
    keys = [set(json.loads(streams.sent(i)["sampling_parameters"][0])) for i in range(2)]
    assert keys == [{"structured_outputs"}, {"guided_decoding"}]
    list(session.open_backend_chat(client, llm, user(), params))
    assert set(json.loads(streams.sent(2)["sampling_parameters"][0])) == {"guided_decoding"}


def test_an_error_before_the_first_token_raises_at_open_and_after_it_while_streaming() -> None:
    client, llm = backend(Router().model("llm", VLLM), ScriptedStreams(
        [stream_message(error="Error generating stream: CUDA out of memory")],
        [vllm_delta(b"a"), stream_message(error="Error generating stream: engine died")],
    ), chat_template="chatml")  # fmt: skip
    with pytest.raises(ServerError, match="CUDA out of memory"):
        session.open_backend_chat(client, llm, user(), ChatParams())
    chunks = session.open_backend_chat(client, llm, user(), ChatParams())
    assert next(chunks).text == "a"
    with pytest.raises(ServerError, match="engine died"):
        next(chunks)


def test_a_stop_sequence_ends_the_stream_and_cancels_the_request() -> None:
    ensemble = as_json(TRTLLM_INPUTS, TRTLLM_OUTPUTS, platform="ensemble", max_batch_size=8, decoupled=True)
    pieces = [stream_message({"text_output": bytes_out(t)}) for t in (b"one ", b"two", b" END", b" three")]
    streams = ScriptedStreams(pieces + [stream_message(final=True)])
    client, llm = backend(Router().model("llm", ensemble), streams, chat_template="llama3")
    chunks = list(session.open_backend_chat(client, llm, user(), ChatParams(stop=("END",))))
    assert "".join(c.text for c in chunks) == "one two "
    assert chunks[-1].finish_reason == "stop"
    assert streams.calls[0].cancelled


def test_closing_the_chunks_early_cancels_the_request() -> None:
    streams = ScriptedStreams([vllm_delta(b"a"), vllm_delta(b"b"), vllm_delta(b"c", last=True)])
    client, llm = backend(Router().model("llm", VLLM), streams, chat_template="chatml")
    chunks = session.open_backend_chat(client, llm, user(), ChatParams())
    next(chunks)
    chunks.close()
    assert streams.calls[0].cancelled


def test_usage_unknown_is_said_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    bare = as_json(VLLM_INPUTS[:4], VLLM_OUTPUTS[:1], backend="vllm")
    answer = [stream_message({"text_output": bytes_out(b"ok")}, final=True)]
    client = fake_client(Router().model("bare_vllm", bare), ScriptedStreams(answer, list(answer)))
    llm = session.resolve(client, "bare_vllm", BackendOptions())
    with caplog.at_level(logging.WARNING, logger="tritonmm.interfaces.session"):
        for _ in range(2):
            last = list(session.open_backend_chat(client, llm, user(), ChatParams()))[-1]
            assert (last.prompt_tokens, last.completion_tokens) == (0, 0)
    said = [r.getMessage() for r in caplog.records if r.name == "tritonmm.interfaces.session"]
    assert len(said) == 1 and "model 'bare_vllm' returns no token counts" in said[0]


def generate_route(body: Body) -> Router:
    plain = as_json([("prompt", "TYPE_STRING", (1,), False)], [("completion", "TYPE_STRING", (1,), False)])
    events = lambda _: httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})  # noqa: E731
    return Router({("POST", "/v2/models/llm/generate_stream"): events}).model("llm", plain)


def test_the_generate_path_streams_events_and_maps_an_error_event_after_200() -> None:
    form = {"chat_template": "gemma3", "text_input_name": "prompt", "text_output_name": "completion"}
    client, llm = backend(generate_route(Body(sse({"completion": "Hi"}, {"completion": " there"}))), **form)
    assert [c.text for c in session.open_backend_chat(client, llm, user(), ChatParams())] == ["Hi", " there", ""]
    client, llm = backend(generate_route(Body(sse({"completion": "Hi"}, {"error": "engine died"}))), **form)
    chunks = session.open_backend_chat(client, llm, user(), ChatParams())
    assert next(chunks).text == "Hi"
    with pytest.raises(ServerError, match="engine died"):
        list(chunks)


def test_a_video_becomes_frames_from_the_video_frames_model() -> None:
    frame = fx.jpeg(32, 24)
    frames_answer = {
        "FRAMES": bytes_out(frame, frame), "TIMESTAMPS": ("FP32", array.array("f", [0.0, 1.5]).tobytes()),
        "DURATION": ("FP32", array.array("f", [3.0]).tobytes()),
    }  # fmt: skip
    from tests.fake_triton import infer_answer

    router = Router().model("llm", VLLM).model("video_frames", config("video_frames"))
    router.routes[("POST", "/v2/models/video_frames/infer")] = lambda _: infer_answer(frames_answer)
    streams = ScriptedStreams([vllm_delta(b"ok", last=True)])
    client, llm = backend(router, streams, chat_template="qwen2_vl")
    video = MediaPart(Modality.VIDEO, data=fx.mp4(seconds=1.0), mime_type="video/mp4")
    list(session.open_backend_chat(client, llm, user(TextPart("What happens?"), video), ChatParams()))
    sent = streams.sent()
    assert len(sent["image"]) == 2
    prompt = sent["text_input"][0].decode()
    assert "[video 1: 3.0 s, 2 frames]" in prompt and "[video 1 at 1.5 s]" in prompt
    assert prompt.count("<|image_pad|>") == 2


def test_documents_and_unseen_media_are_refused_by_name() -> None:
    client, llm = backend(Router().model("llm", VLLM), chat_template="chatml")
    image = MediaPart(Modality.IMAGE, data=fx.png(), mime_type="image/png")
    with pytest.raises(UnsupportedMedia, match="does not accept image input"):
        session.open_backend_chat(client, llm, user(TextPart("?"), image), ChatParams())
    document = MediaPart(Modality.DOCUMENT, data=b"%PDF-1.4", mime_type="application/pdf")
    with pytest.raises(UnsupportedMedia, match=r"\(the vLLM backend\) does not take documents"):
        session.open_backend_chat(client, llm, user(TextPart("?"), document), ChatParams())


def test_our_own_models_resolve_to_none() -> None:
    client = fake_client(Router().model("chat", config("chat")))
    assert session.resolve(client, "chat", BackendOptions()) is None
