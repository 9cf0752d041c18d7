"""The agent side of a chat in the core library, on a fake Triton (tests/fake_triton.py): tools and
an agent's history on the wire, tool calls back from the final response, structured-output and
thinking parameters, PDF documents, and the features a chat model declares."""

from __future__ import annotations

import json

import pytest

from tests import media_fixtures as fx
from tests.fake_triton import Router, ScriptedStreams, bytes_out, fake_client, int32_out, stream_message
from tritonmm import chat, contract
from tritonmm.chat_wire import WireError, WireMessage, decode_messages, encode_messages, media_label, text_part
from tritonmm.contract import Capabilities, Feature, Task
from tritonmm.errors import InvalidInput, ServerError, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart, Message, TextPart, Tool
from tritonmm.routing import chat_features
from tritonmm.structured_output import parse_response_format
from tritonmm.tool_calls import ToolCall

CHAT = Capabilities(Task.CHAT, frozenset({Feature.VISION}), 4096, 2, "tiny", tool_call_family="hermes")
NO_TOOLS = Capabilities(Task.CHAT, frozenset({Feature.VISION}), 4096, 2, "tiny")
WEATHER = Tool("get_weather", "The weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
CALLS = (ToolCall("call_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_2", "get_time", "{}"))
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def final(calls: list | None = None, reason: bytes = b"stop"):
    outputs = {"FINISH_REASON": bytes_out(reason), "PROMPT_TOKENS": int32_out(9), "COMPLETION_TOKENS": int32_out(4)}
    outputs["TEXT"] = bytes_out(b"")
    if calls is not None:
        outputs["TOOL_CALLS_JSON"] = bytes_out(json.dumps(calls).encode())
    return stream_message(outputs, final=True)


def agent_history() -> list[Message]:
    return [
        Message("user", (TextPart("Weather in Paris, and the time?"),)),
        Message("assistant", (), tool_calls=CALLS),
        Message("tool", (TextPart("sunny"),), tool_call_id="call_1", name="get_weather"),
        Message("tool", (TextPart("noon"),), tool_call_id="call_2", name="get_time"),
    ]


def test_tools_and_the_agent_history_go_on_the_wire() -> None:
    streams = ScriptedStreams([final([])])
    list(chat.open_chat(fake_client(streams=streams), "chat", agent_history(), chat.ChatParams(), CHAT, [WEATHER]))
    sent = streams.sent()
    assert json.loads(sent["TOOLS_JSON"][0]) == [
        {"name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER.parameters}
    ]
    user, assistant, weather, time = decode_messages(sent["MESSAGES_JSON"][0])
    assert assistant.role == "assistant" and assistant.parts == () and assistant.tool_calls == CALLS
    assert (weather.role, weather.tool_call_id, weather.name, weather.parts[0].text) == (
        "tool",
        "call_1",
        "get_weather",
        "sunny",
    )
    assert (time.tool_call_id, time.name) == ("call_2", "get_time")


def test_no_tools_means_no_tools_tensor() -> None:
    streams = ScriptedStreams([final()])
    list(chat.open_chat(fake_client(streams=streams), "chat", agent_history()[:1], chat.ChatParams(), CHAT))
    assert "TOOLS_JSON" not in streams.sent()


def test_tools_for_a_model_whose_template_renders_none_are_refused_before_sending() -> None:
    streams = ScriptedStreams()
    with pytest.raises(InvalidInput, match="model 'chat' cannot call tools: its chat template renders none"):
        chat.open_chat(
            fake_client(streams=streams), "chat", agent_history()[:1], chat.ChatParams(), NO_TOOLS, [WEATHER]
        )
    assert not streams.calls


def test_two_tools_of_one_name_are_refused() -> None:
    with pytest.raises(InvalidInput, match="two tools are named 'get_weather'"):
        chat.build_inputs(agent_history()[:1], chat.ChatParams(), CHAT, fake_client(), "chat", [WEATHER, WEATHER])


def test_the_calls_come_back_on_the_last_chunk() -> None:
    wire = [{"id": c.id, "name": c.name, "arguments": c.arguments_json} for c in CALLS]
    streams = ScriptedStreams([stream_message({"TEXT": bytes_out(b"Let me check.")}), final(wire, b"tool_calls")])
    chunks = list(chat.open_chat(fake_client(streams=streams), "chat", agent_history()[:1], chat.ChatParams(), CHAT))
    assert [c.tool_calls for c in chunks] == [(), CALLS]
    assert chunks[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "calls",
    [
        [{"id": "c", "name": "f", "arguments": "[1]"}],  # not an object
        [{"id": "c", "arguments": "{}"}],  # no name
        {"id": "c"},  # not a list
    ],
)
def test_a_malformed_tool_calls_tensor_is_a_server_error(calls: object) -> None:
    streams = ScriptedStreams([final(calls)])  # type: ignore[arg-type]
    with pytest.raises(ServerError, match="model 'chat' sent a malformed TOOL_CALLS_JSON"):
        list(chat.open_chat(fake_client(streams=streams), "chat", agent_history()[:1], chat.ChatParams(), CHAT))


def test_structured_output_and_thinking_parameters_reach_params_json() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response_format = parse_response_format("json_schema", json.dumps({"schema": schema, "name": "llm_response"}))
    params = chat.ChatParams(max_tokens=5, response_format=response_format, enable_thinking=False)
    assert json.loads(params.to_json()) == {
        "max_tokens": 5,
        "enable_thinking": False,
        "response_format": "json_schema",
        "json_schema": schema,
    }
    assert json.loads(chat.ChatParams(response_format=parse_response_format("json_object", None)).to_json()) == {
        "response_format": "json_object"
    }


def test_wire_tool_messages_round_trip_and_bad_ones_are_named() -> None:
    messages = [
        WireMessage("assistant", (text_part("checking"),), CALLS),
        WireMessage("tool", (text_part("sunny"),), tool_call_id="call_1", name="get_weather"),
    ]
    assert decode_messages(encode_messages(messages)) == messages
    bad = [
        ([{"role": "user", "content": "x", "tool_calls": [{"id": "a", "name": "f"}]}], "only an assistant message"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"id": "a", "name": ""}]}], "non-empty name"),
        ([{"role": "assistant", "content": "", "tool_calls": [{"id": "a", "name": "f", "arguments": "[]"}]}],
         r"message 1 tool call 1 \(f\): arguments must be the JSON text of an object"),
        ([{"role": "tool", "content": "x", "tool_call_id": 3, "name": "f"}], "string tool_call_id"),
    ]  # fmt: skip
    for payload, fragment in bad:
        with pytest.raises(WireError, match=fragment):
            decode_messages(json.dumps(payload))
    # A call without arguments (Dify may send "") is a call with no arguments.
    [message] = decode_messages(json.dumps([{"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}]))
    assert message.tool_calls == (ToolCall("", "f", "{}"),)


def test_documents_travel_as_pdf_bytes_named_from_one() -> None:
    streams = ScriptedStreams([final([])])
    part = MediaPart(Modality.DOCUMENT, data=PDF)
    messages = [Message("user", (TextPart("Summarise."), part))]
    list(chat.open_chat(fake_client(streams=streams), "chat", messages, chat.ChatParams(), CHAT))
    sent = streams.sent()
    assert sent["DOCUMENTS"] == [PDF]
    assert decode_messages(sent["MESSAGES_JSON"][0])[0].parts[1].label == media_label("document", 0) == "document 1"


def test_the_document_loader_checks_pdf_by_content_and_its_cap() -> None:
    settings = fake_client(image_max_side="512").settings
    loader = loader_for(Modality.DOCUMENT)
    assert loader.load(MediaPart(Modality.DOCUMENT, data=PDF), "document 1", settings) == PDF
    with pytest.raises(UnsupportedMedia, match=r"document 2 is not a PDF file \(image/png\)"):
        loader.load(MediaPart(Modality.DOCUMENT, data=fx.png()), "document 2", settings)
    with pytest.raises(InvalidInput, match="document 1 is empty"):
        loader.check(b"", "document 1", settings.media)
    cap = settings.media.max_bytes(Modality.DOCUMENT)
    with pytest.raises(InvalidInput, match=f"document 1: {cap + 1} bytes exceed the {cap}-byte cap for document"):
        loader.check(PDF + b"\0" * (cap + 1 - len(PDF)), "document 1", settings.media)


def test_a_document_for_a_model_without_vision_is_refused() -> None:
    blind = Capabilities(Task.CHAT, frozenset(), 4096, 2, "tiny")
    messages = [Message("user", (MediaPart(Modality.DOCUMENT, data=PDF),))]
    with pytest.raises(UnsupportedMedia, match="does not accept document input"):
        chat.build_inputs(messages, chat.ChatParams(), blind, fake_client(), "chat")


@pytest.mark.parametrize(
    ("features", "family", "declared"),
    [
        ({Feature.VISION}, "hermes", {"vision", "document", "tool-call", "multi-tool-call", "stream-tool-call"}),
        ({Feature.VISION, Feature.VIDEO}, "", {"vision", "video", "document"}),
        (set(), "llama3", {"tool-call", "multi-tool-call", "stream-tool-call"}),
    ],
)
def test_chat_features_add_documents_to_vision_and_tool_calls_to_a_family(
    features: set, family: str, declared: set
) -> None:
    caps = Capabilities(Task.CHAT, frozenset(features), 4096, 2, "tiny", tool_call_family=family)
    assert {f.value for f in chat_features(fake_client(Router()), caps)} == declared


def test_config_keys_become_capabilities() -> None:
    params = {
        contract.KEY_TASK: "chat",
        contract.KEY_FEATURES: "vision",
        contract.KEY_TOOL_CALL_FAMILY: " mistral ",
        contract.KEY_THINKING_SWITCH: "true",
    }
    caps = Capabilities.from_parameters(params)
    assert (caps.tool_call_family, caps.thinking_switch) == ("mistral", True)
    plain = Capabilities.from_parameters({contract.KEY_TASK: "chat", contract.KEY_FEATURES: "vision"})
    assert (plain.tool_call_family, plain.thinking_switch) == ("", False)
    with pytest.raises(ValueError, match="tmm.features lists media only; tool calls come from tmm.tool_call_family"):
        Capabilities.from_parameters({contract.KEY_TASK: "chat", contract.KEY_FEATURES: "vision,tool-call"})
