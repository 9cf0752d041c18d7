"""The chat engine as an agent uses it, on the tiny tool-calling build (a real Idefics3 checkpoint whose
weights make known calls): tools, the agent's history, malformed calls, structured output, PDF documents
and the thinking switch; each on both generation paths (the shared batch and a generate per request)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from transformers import AutoTokenizer

from tests import media_fixtures as fx
from tritonmm.chat_wire import WireMessage, encode_messages, media_part, text_part
from tritonmm.contract import FINISH_LENGTH, FINISH_STOP, FINISH_TOOL_CALLS
from tritonmm.structured_output import parse_response_format
from tritonmm.tool_calls import ToolCall, ToolCallFamily
from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.chat.batching import BatchLimits
from tritonmm_server.engines.chat.engine import ChatEngine
from tritonmm_server.engines.chat.params import GenerationParams
from tritonmm_server.engines.chat.template import ChatTemplate
from tritonmm_server.engines.chat.token_stream import TokenText
from tritonmm_server.tiny.tool_caller import ANSWER, KNOWN_CALLS

GREEDY = GenerationParams(max_tokens=40, temperature=0)
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}  # fmt: skip
TIME = {"name": "get_time", "description": "The time now.", "parameters": {}}  # an empty parameter schema
LOOKUP = {"name": "lookup", "description": "Looks a word up.", "parameters": {"type": "object", "properties": {}}}
QUESTION = WireMessage("user", (text_part("What's the weather in Paris, and the time?"),))
NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "kind": {"enum": ["sunny", "rainy", "snowy"]},
        "hours": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}, "dry": {"type": "boolean"}},
                "required": ["hour", "dry"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["city", "kind", "hours"],
    "additionalProperties": False,
}


def _engine(directory: Path, batching: BatchLimits | None, **options) -> ChatEngine:
    return ChatEngine(
        directory, video_max_frames=2, video_fps=1.0, max_images=4, num_threads=2, batching=batching, **options
    )


@pytest.fixture(scope="module", params=["batched", "alone"])
def engine(request: pytest.FixtureRequest, tiny_model: Callable[[str], Path]) -> ChatEngine:
    batching = BatchLimits(max_sequences=4, max_waiting=4, kv_cache_bytes=2**28) if request.param == "batched" else None
    engine = _engine(tiny_model("tool-caller"), batching, tool_call_family="hermes")
    assert (engine.batching is None) == (request.param == "alone")
    yield engine
    engine.close()


def ask(engine: ChatEngine, messages: list[WireMessage], tools: list[dict] | None, params=GREEDY, **kwargs):
    """(the text shown, the output) of one request."""
    tools_json = json.dumps(tools) if tools is not None else None
    documents = kwargs.pop("documents", [])
    prepared = engine.prepare(encode_messages(messages), [], [], [], documents, tools_json=tools_json)
    output = engine.generate(prepared, params, **kwargs)
    return "".join(output), output


# --- tool calls ----------------------------------------------------------------------------------


def test_tools_offered_give_parsed_calls_and_no_markup(engine: ChatEngine) -> None:
    text, output = ask(engine, [QUESTION], [WEATHER, TIME])
    assert text == ""  # the markup never comes out as text
    assert [(c.name, json.loads(c.arguments_json)) for c in output.tool_calls] == list(KNOWN_CALLS.items())
    assert all(c.id.startswith("call_") for c in output.tool_calls) and len({c.id for c in output.tool_calls}) == 2
    assert output.finish_reason == FINISH_TOOL_CALLS
    assert output.completion_tokens > 0


def test_a_tool_with_an_empty_parameter_schema_is_called_with_no_arguments(engine: ChatEngine) -> None:
    text, output = ask(engine, [QUESTION], [TIME])
    assert text == "" and [(c.name, c.arguments_json) for c in output.tool_calls] == [("get_time", "{}")]


def test_the_tool_results_lead_to_an_answer(engine: ChatEngine) -> None:
    calls = (ToolCall("call_a", "get_weather", '{"city": "Paris"}'), ToolCall("call_b", "get_time", "{}"))
    history = [
        QUESTION,
        WireMessage("assistant", (), calls),
        WireMessage("tool", (text_part("Sunny, 24 C"),), tool_call_id="call_a", name="get_weather"),
        WireMessage("tool", (text_part("12:00"),), tool_call_id="call_b", name="get_time"),
    ]
    text, output = ask(engine, history, [WEATHER, TIME])
    assert (text, output.tool_calls, output.finish_reason) == (ANSWER, (), FINISH_STOP)


def test_a_call_of_a_tool_not_offered_comes_back_as_text_with_a_warning(
    engine: ChatEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The prompt names get_weather, which is not offered: the model calls it anyway."""
    asks_for_weather = WireMessage("user", (text_part("Use get_weather for Paris."),))
    with caplog.at_level(logging.WARNING, logger="tritonmm.tool_calls.stream"):
        text, output = ask(engine, [asks_for_weather], [LOOKUP])
    assert output.tool_calls == () and output.finish_reason == FINISH_STOP
    assert text.startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert "'get_weather', which is not one of the tools offered" in caplog.text


def test_without_tools_the_markup_is_not_parsed(engine: ChatEngine) -> None:
    """No tools, no filter: every token's text comes out, one piece per token."""
    messages = encode_messages([QUESTION])
    prepared = engine.prepare(messages, [], [])
    pieces = list(engine.generate(prepared, GenerationParams(max_tokens=8, temperature=0)))
    assert len(pieces) == 8


def test_bad_tools_are_named(engine: ChatEngine) -> None:
    messages = encode_messages([QUESTION])
    for tools, fragment in [
        ("[{]", "TOOLS_JSON is not valid JSON"),
        ('{"name": "x"}', "TOOLS_JSON must be a JSON list"),
        ('[{"description": "x"}]', "tool 1 needs a non-empty 'name'"),
        ('[{"name": "a", "parameters": [1]}]', "tool 'a' needs a string 'description' and an object 'parameters'"),
        ('[{"name": "a"}, {"name": "a"}]', "two tools have the same name"),
    ]:
        with pytest.raises(InputError, match=fragment):
            engine.prepare(messages, [], [], tools_json=tools)


# --- structured output -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_a_nested_schema_holds_even_for_a_random_model(engine: ChatEngine, seed: int) -> None:
    response_format = parse_response_format("json_schema", json.dumps({"schema": NESTED_SCHEMA, "name": "weather"}))
    params = GenerationParams(max_tokens=200, temperature=0.9, seed=seed)
    text, output = ask(
        engine,
        [WireMessage("user", (text_part("JSON, please."),))],
        None,
        params,
        constraint=engine.constraint(response_format),
    )
    assert output.finish_reason == FINISH_STOP
    jsonschema.validate(json.loads(text), NESTED_SCHEMA)


def test_an_unenforceable_schema_is_refused_before_generation(engine: ChatEngine) -> None:
    unique = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    with pytest.raises(InputError, match="cannot be enforced by structured output: .*uniqueItems"):
        engine.constraint(parse_response_format("json_schema", json.dumps(unique)))
    with pytest.raises(InputError, match="is not a valid JSON schema"):
        engine.constraint(parse_response_format("json_schema", json.dumps({"type": "objekt"})))


# --- documents ---------------------------------------------------------------------------------


def test_a_pdf_is_read_as_its_pages(engine: ChatEngine) -> None:
    def prompt(pages: int) -> int:
        message = WireMessage("user", (text_part("Summarise."), media_part("document", 0)))
        return engine.prepare(encode_messages([message]), [], [], [], [fx.pdf(pages)]).prompt_tokens

    one, three = prompt(1), prompt(3)
    assert three - one == 2 * (one - prompt_without_document(engine))  # every page costs one image's tokens
    message = WireMessage("user", (text_part("Summarise."), media_part("document", 0)))
    prepared = engine.prepare(encode_messages([message]), [], [], [], [fx.pdf(3)])
    assert prepared.document_pages == {0: 3} and prepared.image_count == 3


def prompt_without_document(engine: ChatEngine) -> int:
    # The marker line that announces the pages stays: only the pages differ.
    message = WireMessage("user", (text_part("Summarise."), text_part("Document pages:")))
    return engine.prepare(encode_messages([message]), [], []).prompt_tokens


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (fx.encrypted_pdf(), "document 1: the PDF is protected by a password"),
        (fx.pdf(9), "document 1 has 9 pages"),
        (b"%PDF-1.7 broken", "document 1"),
    ],
)
def test_bad_documents_are_refused_by_name(engine: ChatEngine, document: bytes, fragment: str) -> None:
    message = WireMessage("user", (text_part("Summarise."), media_part("document", 0)))
    with pytest.raises(InputError, match=fragment):
        engine.prepare(encode_messages([message]), [], [], [], [document])


def test_a_document_reference_past_the_tensor_is_named(engine: ChatEngine) -> None:
    message = WireMessage("user", (media_part("document", 1),))
    with pytest.raises(InputError, match="document 2 is missing: the request carries 1 document"):
        engine.prepare(encode_messages([message]), [], [], [], [fx.pdf(1)])


# --- what the config claims about the template --------------------------------------------------


def test_a_family_on_a_template_without_tools_fails_the_load(tiny_model: Callable[[str], Path]) -> None:
    with pytest.raises(
        ValueError, match="tmm.tool_call_family is hermes, but the chat template of idefics3 renders no tools"
    ):
        _engine(tiny_model("idefics3"), None, tool_call_family="hermes")
    with pytest.raises(ValueError, match="tmm.tool_call_family must be one of hermes, llama3, mistral or empty"):
        _engine(tiny_model("tool-caller"), None, tool_call_family="qwen")
    with pytest.raises(ValueError, match="tmm.thinking_switch is true, but the chat template of tool-caller"):
        _engine(tiny_model("tool-caller"), None, thinking_switch=True)


def test_tools_for_a_model_without_a_family_are_refused(tiny_model: Callable[[str], Path]) -> None:
    plain = _engine(tiny_model("tool-caller"), None)  # the config names no family
    with pytest.raises(InputError, match="model tool-caller cannot call tools: its chat template renders none"):
        plain.prepare(encode_messages([QUESTION]), [], [], tools_json=json.dumps([WEATHER]))
    with pytest.raises(InputError, match="model tool-caller has no thinking switch"):
        plain.prepare(encode_messages([QUESTION]), [], [], enable_thinking=False)


# --- reasoning -------------------------------------------------------------------------------------

# Qwen3's thinking layout, on the tiny build's tokens: off writes an empty think block into the
# prompt; on, this template opens the block itself and the model writes the rest.
THINKING_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message.role + '\\n' }}"
    "{% for part in message.content %}{{ part.text }}{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def thinker(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> ChatEngine:
    directory = tmp_path_factory.mktemp("thinker") / "checkpoint"
    shutil.copytree(tiny_model("tool-caller"), directory)
    (directory / "chat_template.jinja").write_text(THINKING_TEMPLATE)
    return _engine(directory, None, thinking_switch=True)


def test_thinking_off_goes_through_the_template(thinker: ChatEngine) -> None:
    messages = encode_messages([QUESTION])
    off = thinker.prepare(messages, [], [], enable_thinking=False)
    on = thinker.prepare(messages, [], [], enable_thinking=True)
    default = thinker.prepare(messages, [], [])
    decode = thinker.tokenizer.decode
    assert decode(off.inputs["input_ids"][0]).endswith("assistant\n<think>\n\n</think>\n\n")
    assert decode(on.inputs["input_ids"][0]).endswith("assistant\n<think>\n")
    assert (off.opens_thinking, on.opens_thinking, default.opens_thinking) == (False, True, True)


def test_a_prompt_that_opens_the_think_block_gets_the_opener_in_the_answer(thinker: ChatEngine) -> None:
    on = thinker.prepare(encode_messages([QUESTION]), [], [])
    pieces = list(thinker.generate(on, GenerationParams(max_tokens=3, temperature=0.8, seed=1)))
    assert pieces[0] == "<think>\n" and len(pieces) == 4  # the opener, then one piece per token
    off = thinker.prepare(encode_messages([QUESTION]), [], [], enable_thinking=False)
    output = thinker.generate(off, GenerationParams(max_tokens=3, temperature=0.8, seed=1))
    assert len(list(output)) == 3 and output.finish_reason == FINISH_LENGTH


# --- call markers that are special tokens ----------------------------------------------------------


def test_a_familys_special_call_marker_reaches_the_parser_and_other_specials_do_not(
    tiny_model: Callable[[str], Path],
) -> None:
    """Llama 3 starts a call with <|python_tag|>, a special token: kept in the text when tools are offered."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("tool-caller"))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|python_tag|>"]}, replace_extra_special_tokens=False)
    hidden = ChatTemplate._hidden_when_calling(tokenizer, ToolCallFamily.LLAMA3)
    tag, start = tokenizer.convert_tokens_to_ids(["<|python_tag|>", "<|im_start|>"])
    assert tag not in hidden and start in hidden
    assert ChatTemplate._hidden_when_calling(tokenizer, ToolCallFamily.HERMES) is None  # no special markers
    ids = tokenizer.encode('<|im_start|><|python_tag|>{"name": "f"}', add_special_tokens=False)

    def text(hidden_ids: frozenset[int] | None) -> str:
        decoder = TokenText(tokenizer, frozenset({tokenizer.eos_token_id}), (), 100, hidden_ids)
        return "".join(decoder.push(i) for i in ids)

    assert text(hidden) == '<|python_tag|>{"name": "f"}'
    assert text(None) == '{"name": "f"}'  # without tools: every special token dropped
