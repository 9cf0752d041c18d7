"""An agent's history through real published vision templates, as the chat engine builds it; and what the
launcher reads from a checkpoint's template files (tool-call family, thinking switch).

The engine's :class:`Conversation` output is rendered with transformers' own renderer (the one the
processor uses) through the Llama 3.2 Vision and Mistral image templates and the tiny tool caller's
ChatML template: two calls in one assistant turn, then both results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from tritonmm.chat_wire import WireMessage, text_part
from tritonmm.tool_calls import ToolCall, detect_tool_support, mistral_call_id
from tritonmm_server.checkpoints.chat_template import read_chat_template, template_parameters
from tritonmm_server.engines.chat.conversation import Conversation, parse_tools
from tritonmm_server.engines.chat.media import DecodedMedia
from tritonmm_server.tiny.tool_caller import TOOL_CALLER_TEMPLATE

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
CALLS = (ToolCall("call_weather_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_time_2", "get_time", "{}"))
TOOLS = parse_tools(
    json.dumps([
        {"name": "get_weather", "description": "The weather.",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "get_time", "description": "The time.", "parameters": {}},
    ])
)  # fmt: skip
HISTORY = [
    WireMessage("user", (text_part("Weather in Paris, and the time?"),)),
    WireMessage("assistant", (), CALLS),
    # The results come in the other order: each is matched to its call by id.
    WireMessage("tool", (text_part("TIME-RESULT 12:00"),), tool_call_id="call_time_2", name="get_time"),
    WireMessage("tool", (text_part("WEATHER-RESULT sunny"),), tool_call_id="call_weather_1", name="get_weather"),
]
NO_MEDIA = DecodedMedia(images={}, videos={}, audios={})


class _NoAddedTokens:
    added_tokens_decoder: dict = {}


def render(template: str, **extra) -> str:
    support = detect_tool_support(template)
    conversation = Conversation(_NoAddedTokens(), template, support.family, support.string_arguments)
    messages = conversation.messages(HISTORY, NO_MEDIA)
    rendered, _ = render_jinja_template(
        conversations=[messages], tools=TOOLS, chat_template=template, add_generation_prompt=True, **extra
    )
    return rendered[0]


def test_llama_3_2_vision_gets_one_call_per_turn_each_followed_by_its_result() -> None:
    """Its template refuses two calls in one turn; the turn is split and each result follows its call."""
    prompt = render((TEMPLATES / "llama-3.2-11b-vision-instruct.jinja").read_text(), bos_token="<|begin_of_text|>")
    weather_call = prompt.index('{"name": "get_weather", "parameters": {"city": "Paris"}}')
    time_call = prompt.index('{"name": "get_time", "parameters": {}}')
    assert weather_call < prompt.index("WEATHER-RESULT") < time_call < prompt.index("TIME-RESULT")
    assert prompt.count("<|start_header_id|>ipython<|end_header_id|>") == 2


@pytest.mark.parametrize("name", ["mistral-common-v7_image.jinja", "mistral-common-v11_image.jinja"])
def test_mistral_templates_get_nine_character_ids_the_same_for_a_call_and_its_result(name: str) -> None:
    prompt = render((TEMPLATES / name).read_text(), bos_token="<s>", eos_token="</s>")
    for call in CALLS:
        assert prompt.count(mistral_call_id(call.id)) == 2  # in the call and in its result
        assert call.id not in prompt
    assert prompt.index("TIME-RESULT") < prompt.index("WEATHER-RESULT")  # results keep their order


def test_the_tool_callers_chatml_template_takes_the_arguments_as_json_text() -> None:
    prompt = render(TOOL_CALLER_TEMPLATE)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\nTIME-RESULT 12:00\n</tool_response>" in prompt


# --- what the launcher reads from a checkpoint -------------------------------------------------------


def _fixture(name: str) -> str:
    return (TEMPLATES / name).read_text()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"chat_template.jinja": _fixture("qwen3-0.6b.jinja")}, ("hermes", "true")),
        (
            {"tokenizer_config.json": {"chat_template": [
                {"name": "default", "template": _fixture("llama-3.2-11b-vision-instruct.jinja")},
                {"name": "rag", "template": "{{ documents }}"},
            ]}},
            ("llama3", "false"),
        ),
        ({"chat_template.json": {"chat_template": _fixture("mistral-common-v7_image.jinja")}}, ("mistral", "false")),
        ({"processor_config.json": {"chat_template": _fixture("smolvlm-instruct.jinja")}}, ("", "false")),
        ({"config.json": {}}, ("", "false")),  # no template at all
        # the .jinja file wins over a template in the tokenizer config
        (
            {"chat_template.jinja": _fixture("smolvlm-instruct.jinja"),
             "tokenizer_config.json": {"chat_template": _fixture("qwen3-0.6b.jinja")}},
            ("", "false"),
        ),
    ],
)  # fmt: skip
def test_the_launcher_reads_tools_and_the_thinking_switch_from_the_checkpoint(
    tmp_path: Path, files: dict, expected: tuple[str, str]
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    assert template_parameters(tmp_path) == {"tmm.tool_call_family": expected[0], "tmm.thinking_switch": expected[1]}


def test_the_tiny_tool_caller_checkpoint_declares_hermes(tiny_model) -> None:
    directory = tiny_model("tool-caller")
    assert read_chat_template(directory) == TOOL_CALLER_TEMPLATE
    assert template_parameters(directory) == {"tmm.tool_call_family": "hermes", "tmm.thinking_switch": "false"}
    assert template_parameters(tiny_model("idefics3"))["tmm.tool_call_family"] == ""
