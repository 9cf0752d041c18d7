"""An agent's chat through the built package against the real tritonserver: tool calls (the bundled chat
is the tiny tool caller, whose weights make known calls), structured output, PDF documents, the API key.

Every bad input is refused by name, and the plugin keeps serving after it."""

from __future__ import annotations

import base64
import json
import re

import jsonschema
import pytest

from devtools.plugin_harness import PluginError, PluginProcess
from tests import media_fixtures as fx
from tests.conftest import WORK
from tritonmm_server.ops.server import TritonServer
from tritonmm_server.tiny.tool_caller import ANSWER

WEATHER = {"name": "get_weather", "description": "The current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}  # fmt: skip
TIME = {"name": "get_time", "description": "The current time.", "parameters": {}}  # an empty parameter schema
LOOKUP = {"name": "lookup", "description": "Looks a word up.", "parameters": {"type": "object", "properties": {}}}
QUESTION = {"role": "user", "content": "What's the weather in Paris, and the time?"}
NESTED = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "kind": {"enum": ["sunny", "rainy", "snowy"]},
        "hours": {
            "type": "array", "minItems": 1, "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}, "dry": {"type": "boolean"}},
                "required": ["hour", "dry"], "additionalProperties": False,
            },
        },
    },
    "required": ["city", "kind", "hours"], "additionalProperties": False,
}  # fmt: skip


def invoke(
    plugin: PluginProcess,
    credentials: dict,
    messages: list[dict],
    tools: list[dict] = (),
    *,
    model: str = "chat",
    stream: bool = True,
    **params,
) -> list[dict]:
    data = {
        "provider": "triton_multimodal", "model_type": "llm", "model": model, "credentials": credentials,
        "prompt_messages": messages, "model_parameters": {"max_tokens": 40, "temperature": 0.0, **params},
        "tools": list(tools), "stop": [], "stream": stream,
    }  # fmt: skip
    return plugin.call("model", "invoke_llm", data)


def text_of(chunks: list[dict]) -> str:
    return "".join(c["delta"]["message"]["content"] for c in chunks)


def calls_of(chunks: list[dict]) -> list[dict]:
    return [call for c in chunks for call in c["delta"]["message"].get("tool_calls") or []]


def still_serving(plugin: PluginProcess, credentials: dict) -> None:
    assert plugin.alive()
    chunks = invoke(plugin, credentials, [QUESTION], [WEATHER, TIME])
    assert [c["function"]["name"] for c in calls_of(chunks)] == ["get_weather", "get_time"]


def results_for(calls: list[dict]) -> list[dict]:
    """The agent's next turn: the assistant's calls as Dify stores them, then each tool's result."""
    results = {"get_weather": "Sunny, 24 C", "get_time": "12:00"}
    return [
        QUESTION,
        {"role": "assistant", "content": "", "tool_calls": calls},
        *({"role": "tool", "content": results[c["function"]["name"]], "tool_call_id": c["id"],
           "name": c["function"]["name"]} for c in calls),
    ]  # fmt: skip


# --- tool calls ----------------------------------------------------------------------------------


def test_agent_round_trip_streamed(plugin: PluginProcess, credentials: dict) -> None:
    chunks = invoke(plugin, credentials, [QUESTION], [WEATHER, TIME])
    # no markup as text; one chunk with both calls, then the final chunk with usage
    assert text_of(chunks) == ""
    *_, with_calls, last = chunks
    assert with_calls["delta"]["message"]["content"] == "" and with_calls["delta"]["usage"] is None
    calls = with_calls["delta"]["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_time", {}),
    ]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c["id"]) for c in calls)
    assert last["delta"]["finish_reason"] == "tool_calls" and last["delta"]["usage"]["completion_tokens"] > 0
    assert calls_of(chunks[:-2]) == [] and not last["delta"]["message"].get("tool_calls")
    assert [c["delta"]["index"] for c in chunks] == list(range(len(chunks)))
    # the results go back; the model answers in text
    answer = invoke(plugin, credentials, results_for(calls), [WEATHER, TIME])
    assert text_of(answer) == ANSWER
    assert calls_of(answer) == [] and answer[-1]["delta"]["finish_reason"] == "stop"


def test_agent_round_trip_blocking(plugin: PluginProcess, credentials: dict) -> None:
    [chunk] = invoke(plugin, credentials, [QUESTION], [WEATHER, TIME], stream=False)
    message, delta = chunk["delta"]["message"], chunk["delta"]
    assert message["content"] == "" and delta["finish_reason"] == "tool_calls" and delta["usage"]["total_tokens"] > 0
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["get_weather", "get_time"]
    [answer] = invoke(plugin, credentials, results_for(message["tool_calls"]), [WEATHER, TIME], stream=False)
    assert answer["delta"]["message"]["content"] == ANSWER and answer["delta"]["finish_reason"] == "stop"


def test_a_tool_with_an_empty_parameter_schema(plugin: PluginProcess, credentials: dict) -> None:
    chunks = invoke(plugin, credentials, [QUESTION], [TIME])
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls_of(chunks)] == [("get_time", "{}")]
    answer = invoke(plugin, credentials, results_for(calls_of(chunks)), [TIME])
    assert text_of(answer) == ANSWER


def test_a_malformed_call_comes_back_as_text(plugin: PluginProcess, credentials: dict) -> None:
    """The prompt names get_weather, which is not offered: the model calls it anyway, and the call is text."""
    ask = {"role": "user", "content": "Use get_weather for Paris."}
    for stream in (True, False):
        chunks = invoke(plugin, credentials, [ask], [LOOKUP], stream=stream)
        assert calls_of(chunks) == [] and chunks[-1]["delta"]["finish_reason"] == "stop"
        assert text_of(chunks).startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}')
    log = (WORK / "tritonserver.log").read_text(errors="replace")
    assert "which is not one of the tools offered" in log  # the warning, on the server
    still_serving(plugin, credentials)


def test_tools_for_a_model_whose_template_renders_none(plugin: PluginProcess, credentials: dict) -> None:
    with pytest.raises(PluginError) as raised:
        invoke(plugin, credentials, [QUESTION], [WEATHER], model="chat_llava")
    assert raised.value.error_type == "InvokeBadRequestError"
    assert "model 'chat_llava' cannot call tools: its chat template renders none" in raised.value.message
    still_serving(plugin, credentials)


def test_tool_features_follow_the_template(plugin: PluginProcess, credentials: dict) -> None:
    def schema(model: str) -> dict:
        data = {"provider": "triton_multimodal", "model_type": "llm", "model": model, "credentials": credentials}
        [answer] = plugin.call("model", "get_ai_model_schemas", data)
        return answer["model_schema"]

    tools = {"tool-call", "multi-tool-call", "stream-tool-call"}
    assert tools <= set(schema("chat")["features"])  # the bundled chat's YAML (the provider check holds it to it)
    assert not tools & set(schema("chat_llava")["features"])  # LLaVA's template renders no tools
    assert "document" in schema("chat_llava")["features"]  # it sees images: PDF pages too
    rules = {r["name"] for r in schema("chat_llava")["parameter_rules"]}
    assert {"response_format", "json_schema"} <= rules and "enable_thinking" not in rules
    data = {"provider": "triton_multimodal", "credentials": credentials}
    [answer] = plugin.call("model", "validate_provider_credentials", data)
    assert answer["result"] is True  # the server's chat has every feature the YAML promises


def test_the_thinking_switch_is_offered_where_the_template_has_it(plugin: PluginProcess, credentials: dict) -> None:
    """echo_params declares tmm.thinking_switch and echoes the PARAMS_JSON it gets."""
    data = {"provider": "triton_multimodal", "model_type": "llm", "credentials": credentials}
    [thinker] = plugin.call("model", "get_ai_model_schemas", {**data, "model": "echo_params"})
    [rule] = [r for r in thinker["model_schema"]["parameter_rules"] if r["name"] == "enable_thinking"]
    assert rule["type"] == "boolean" and rule["required"] is False
    [bundled] = plugin.call("model", "get_ai_model_schemas", {**data, "model": "chat"})
    assert "enable_thinking" not in {r["name"] for r in bundled["model_schema"]["parameter_rules"]}
    sent = json.loads(text_of(invoke(plugin, credentials, [QUESTION], model="echo_params", enable_thinking=False)))
    assert sent["enable_thinking"] is False
    assert "enable_thinking" not in json.loads(text_of(invoke(plugin, credentials, [QUESTION], model="echo_params")))


# --- structured output ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "blocking"])
def test_structured_output_with_a_nested_schema(plugin: PluginProcess, credentials: dict, stream: bool) -> None:
    wrapper = json.dumps({"schema": NESTED, "name": "llm_response"})  # as Dify sends it
    ask = {"role": "user", "content": "The weather as JSON."}
    for seed in (3, 4):
        chunks = invoke(
            plugin, credentials, [ask], stream=stream, temperature=0.9, seed=seed, max_tokens=200,
            response_format="json_schema", json_schema=wrapper,
        )  # fmt: skip
        assert chunks[-1]["delta"]["finish_reason"] == "stop"
        jsonschema.validate(json.loads(text_of(chunks)), NESTED)


BAD_SCHEMAS = {
    "not a JSON schema": ({"type": "objekt"}, "json_schema is not a valid JSON schema: at $.type: 'objekt'"),
    "cannot be enforced": ({"type": "array", "uniqueItems": True}, "cannot be enforced by structured output"),
    "not JSON": ("{not json", "json_schema is not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_SCHEMAS))
def test_an_invalid_schema_is_refused(plugin: PluginProcess, credentials: dict, case: str) -> None:
    schema, fragment = BAD_SCHEMAS[case]
    raw = schema if isinstance(schema, str) else json.dumps({"schema": schema, "name": "llm_response"})
    with pytest.raises(PluginError) as raised:
        invoke(plugin, credentials, [QUESTION], response_format="json_schema", json_schema=raw)
    assert raised.value.error_type == "InvokeBadRequestError" and fragment in raised.value.message
    still_serving(plugin, credentials)


# --- documents ------------------------------------------------------------------------------------


def document(data: bytes) -> dict:
    return {"type": "document", "format": "pdf", "mime_type": "application/pdf",
            "base64_data": base64.b64encode(data).decode()}  # fmt: skip


def test_a_three_page_pdf_is_answered(plugin: PluginProcess, credentials: dict) -> None:
    def ask(*parts: dict) -> list[dict]:
        message = {"role": "user", "content": [{"type": "text", "data": "What does it say?"}, *parts]}
        return invoke(plugin, credentials, [message], temperature=0.8, seed=1, max_tokens=8)

    one, three = ask(document(fx.pdf(1))), ask(document(fx.pdf(3)))
    assert len(text_of(three)) > 0 and three[-1]["delta"]["finish_reason"] == "length"
    # each page reaches the model as an image: two more pages, twice one page's image tokens more
    per_page = one[-1]["delta"]["usage"]["prompt_tokens"] - ask()[-1]["delta"]["usage"]["prompt_tokens"]
    assert three[-1]["delta"]["usage"]["prompt_tokens"] - one[-1]["delta"]["usage"]["prompt_tokens"] > per_page


BAD_DOCUMENTS = {
    "encrypted": (fx.encrypted_pdf, "document 1: the PDF is protected by a password"),
    "too many pages": (lambda: fx.pdf(9), "document 1 has 9 pages"),
    "not a PDF": (fx.png, "document 1 is not a PDF file (image/png)"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_a_bad_document_is_refused(plugin: PluginProcess, credentials: dict, case: str) -> None:
    make, fragment = BAD_DOCUMENTS[case]
    message = {"role": "user", "content": [{"type": "text", "data": "Summarise."}, document(make())]}
    with pytest.raises(PluginError) as raised:
        invoke(plugin, credentials, [message])
    assert raised.value.error_type == "InvokeBadRequestError" and fragment in raised.value.message
    still_serving(plugin, credentials)


# --- the API key -----------------------------------------------------------------------------------

KEY = "tmm-key-5b9e07c41d"


def test_the_api_key_opens_a_restricted_server_and_never_shows(plugin: PluginProcess, tmp_path) -> None:
    """Triton's own API-key mechanism on HTTP and gRPC: the model answers only with the key's header
    (which Triton's gRPC side reads as "triton-grpc-protocol-<header>").

    HTTP health and the repository index stay open: the test server's own start-up polls them."""
    restricted = [
        f"--http-restricted-api=metadata,model-config,inference:x-triton-key={KEY}",
        f"--grpc-restricted-protocol=health,metadata,model-config,model-repository,inference:x-triton-key={KEY}",
    ]
    server = TritonServer(WORK / "repository", models=["echo_chat"], log_path=tmp_path / "restricted.log",
                          exit_timeout_s=2, extra_args=restricted)  # fmt: skip
    errors = []
    with server:
        creds = {"server_url": server.http_url, "grpc_endpoint": server.grpc_url}
        for wrong in ({}, {"api_key": KEY[::-1], "api_key_header": "X-Triton-Key"}, {"api_key": KEY}):
            with pytest.raises(PluginError) as raised:  # no key, a wrong key, the right key under X-API-Key
                invoke(plugin, {**creds, **wrong}, [QUESTION], model="echo_chat")
            assert raised.value.error_type == "InvokeAuthorizationError"
            errors.append(raised.value.message)
        keyed = {**creds, "api_key": KEY, "api_key_header": "X-Triton-Key"}
        echoed = text_of(invoke(plugin, keyed, [QUESTION], model="echo_chat"))  # HTTP config, then the gRPC stream
        assert "the time?" in echoed
        with pytest.raises(PluginError) as raised:
            invoke(plugin, keyed, [QUESTION], model="no_such_model")
        errors.append(raised.value.message)
    seen = "\n".join([*errors, *plugin.stderr_tail, json.dumps(plugin.logs)])
    assert KEY not in seen and KEY[::-1] not in seen
