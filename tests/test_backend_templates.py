"""The built-in chat templates write what the families' published templates write, and pasted
templates render in the sandbox (tests/fixtures/chat_templates: the published templates)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from tritonmm.errors import InvalidInput
from tritonmm.interfaces.options import BackendOptions
from tritonmm.interfaces.prompt import render_prompt
from tritonmm.interfaces.templates import _ENV, builtin, custom
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart, Tool
from tritonmm.tool_calls import ToolCall, ToolCallFamily, parse_tool_calls

PUBLISHED = Path(__file__).parent / "fixtures" / "chat_templates"
DATE = "04 Dec 2026"
IMAGE = MediaPart(Modality.IMAGE)
WEATHER = Tool("get_weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def text(role: str, value: str) -> Message:
    return Message(role, (TextPart(value),))


CHAT = [text("system", "You are terse."), text("user", "Hi there"), text("assistant", "Hello!"), text("user", "Bye")]
WITH_IMAGE = [
    text("system", "You are terse."),
    text("user", "Hi there"),
    text("assistant", "Hello!"),
    Message("user", (TextPart("What is in it?"), IMAGE)),
]


def tool_round(call_id: str) -> list[Message]:
    call = ToolCall(call_id, "get_weather", '{"city": "Paris"}')
    return [
        text("system", "You are terse."),
        text("user", "Weather in Paris?"),
        Message("assistant", (), tool_calls=(call,)),
        Message("tool", (TextPart("18 C, sunny"),), tool_call_id=call_id, name="get_weather"),
        text("assistant", "It is 18 C."),
        text("user", "And tomorrow?"),
    ]


def hf_messages(messages: list[Message], *, string_arguments: bool = False) -> list[dict]:
    """The same conversation as Hugging Face's apply_chat_template is handed it."""
    out = []
    for m in messages:
        parts = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"} for p in m.parts]
        content = parts if any(p["type"] == "image" for p in parts) else "".join(p["text"] for p in parts)
        entry: dict = {"role": m.role, "content": content}
        if m.tool_calls:
            entry["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": c.arguments_json if string_arguments else json.loads(c.arguments_json)}}
                for c in m.tool_calls
            ]  # fmt: skip
        if m.role == "tool":
            entry |= {"tool_call_id": m.tool_call_id, "name": m.name}
        out.append(entry)
    return out


def published(name: str, messages: list[dict], tools: list[Tool] = (), eos: str = "") -> str:
    tool_dicts = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                     "parameters": t.parameters}} for t in tools]  # fmt: skip
    template = _ENV.from_string((PUBLISHED / name).read_text())
    return template.render(
        messages=messages, tools=tool_dicts or None, add_generation_prompt=True, bos_token="", eos_token=eos,
        date_string=DATE,
    )  # fmt: skip


def ours(family: str, messages: list[Message], tools: list[Tool] = ()) -> str:
    return render_prompt(builtin(family), messages, tools, today=datetime.date(2026, 12, 4))


@pytest.mark.parametrize(
    ("family", "file", "messages"),
    [
        ("chatml", "qwen2.5-7b-instruct.jinja", CHAT),
        ("qwen2_vl", "qwen2.5-vl-7b-instruct.jinja", CHAT),
        ("qwen2_vl", "qwen2.5-vl-7b-instruct.jinja", WITH_IMAGE),
        ("qwen2_vl", "qwen2.5-vl-7b-instruct.jinja", CHAT[1:]),  # its default system prompt
        ("llama3", "llama-3.1-8b-instruct.jinja", CHAT),
        ("llama3_vision", "llama-3.2-11b-vision-instruct.jinja", WITH_IMAGE),
        ("llama3_vision", "llama-3.2-11b-vision-instruct.jinja", WITH_IMAGE[1:]),  # no system turn with images
        ("mistral", "mistral-common-v7_image.jinja", CHAT),
        ("pixtral", "mistral-common-v7_image.jinja", WITH_IMAGE),
    ],
)
def test_a_conversation_renders_as_the_published_template_writes_it(family, file, messages) -> None:
    eos = builtin(family).eos_token
    assert ours(family, messages) == published(file, hf_messages(messages), eos=eos)


@pytest.mark.parametrize(
    ("family", "file", "call_id", "string_arguments"),
    [
        ("chatml", "qwen2.5-7b-instruct.jinja", "call_abc", False),
        ("llama3", "llama-3.1-8b-instruct.jinja", "call_abc", False),
        ("mistral", "mistral-common-v7_image.jinja", "abc123XYZ", True),
    ],
)
def test_tools_calls_and_results_render_as_published(family, file, call_id, string_arguments) -> None:
    messages = tool_round(call_id)
    expected = published(
        file, hf_messages(messages, string_arguments=string_arguments), [WEATHER], builtin(family).eos_token
    )
    assert ours(family, messages, [WEATHER]) == expected


def test_mistral_call_ids_become_nine_characters_as_its_tokenizer_requires() -> None:
    prompt = ours("mistral", tool_round("call_0123456789abcdef"), [WEATHER])
    ids = {prompt.split('"id": "')[1][:9], prompt.split("[TOOL_RESULTS]")[1][:9]}
    assert len(ids) == 1 and len(ids.pop()) == 9


def test_gemma3_turns_fold_the_system_prompt_into_the_first_user_turn() -> None:
    assert ours("gemma3", WITH_IMAGE) == (
        "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhat is in it?<start_of_image><end_of_turn>\n"
        "<start_of_turn>model\n"
    )


@pytest.mark.parametrize("family", ["chatml", "llama3", "mistral"])
def test_a_call_written_in_the_family_layout_parses_back(family) -> None:
    """What the template writes for a past call is what the family's parser reads."""
    call = ToolCall("abc123XYZ", "get_weather", '{"city": "Paris"}')
    history = ours(family, [text("user", "?"), Message("assistant", (), tool_calls=(call,))], [WEATHER])
    written = {"chatml": "<tool_call>", "llama3": '{"name"', "mistral": "[TOOL_CALLS]"}[family]
    section = history[history.rindex(written) :]
    section = section.split("<|im_end|>")[0].split("<|eot_id|>")[0].split("</s>")[0]
    parsed = parse_tool_calls(section, builtin(family).tool_family)
    assert [(c.name, json.loads(c.arguments_json)) for c in parsed.calls] == [("get_weather", {"city": "Paris"})]


# --- pasted templates ------------------------------------------------------------------------


def test_a_pasted_template_takes_lists_of_parts_when_it_iterates_content() -> None:
    smolvlm = custom((PUBLISHED / "smolvlm-instruct.jinja").read_text())
    assert smolvlm.content_lists and smolvlm.images and smolvlm.tool_family is None
    prompt = render_prompt(smolvlm, [Message("user", (TextPart("What is this?"), IMAGE))])
    assert prompt == "<|im_start|>User: What is this?<image><end_of_utterance>\nAssistant:"
    llama = custom((PUBLISHED / "llama-3.1-8b-instruct.jinja").read_text())
    assert not llama.content_lists and not llama.images and llama.tool_family is ToolCallFamily.LLAMA3


def test_a_template_pasted_as_json_or_as_tokenizer_config_is_unwrapped() -> None:
    source = (PUBLISHED / "qwen2.5-7b-instruct.jinja").read_text()
    for pasted in (json.dumps(source), json.dumps({"chat_template": source, "eos_token": "<|im_end|>"})):
        template = custom(pasted)
        assert template.source == source and template.tool_family is ToolCallFamily.HERMES
    named = json.dumps(
        [{"name": "default", "template": "{{ messages[0].content }}"}, {"name": "tool_use", "template": source}]
    )
    both = custom(named)
    assert render_prompt(both, [text("user", "plain")]) == "plain"
    assert "<tools>" in render_prompt(both, [text("user", "plain")], [WEATHER])


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        ("", "is empty"),
        ("{% for m in messages %}{{ m.content }", "not valid Jinja: line 1"),
        ('"unterminated', "not valid JSON"),
        ('[{"name": "tool_use", "template": "x"}]', "none is named 'default'"),
    ],
)
def test_a_bad_pasted_template_is_refused_naming_the_problem(pasted, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        custom(pasted)


def test_raise_exception_and_the_sandbox_refuse_with_a_clear_error() -> None:
    strict = custom("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(InvalidInput, match="refused the conversation: roles must alternate"):
        render_prompt(strict, [text("user", "x")])
    escape = custom("{{ messages.__class__.__mro__ }}")
    with pytest.raises(InvalidInput, match="sandbox forbids|failed on this conversation"):
        render_prompt(escape, [text("user", "x")])


def test_the_form_names_a_missing_pasted_template() -> None:
    with pytest.raises(InvalidInput, match="'custom_chat_template' is empty"):
        BackendOptions.from_credentials({"chat_template": "custom"}).chat_template()
    with pytest.raises(InvalidInput, match="'chat_template' must be one of"):
        BackendOptions.from_credentials({"chat_template": "llama2"})
