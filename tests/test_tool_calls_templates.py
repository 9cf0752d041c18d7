"""Tool calls against real published chat templates (tests/fixtures/chat_templates, sources in its README).

Which family each template writes and whether it renders tools; an agent history
(tools, an assistant turn with calls, tool results) rendered through it; and the
assistant turn the template itself writes for a call, which is the text the model
was trained to emit, parsed back into the same calls. Rendered with transformers'
own chat-template renderer, the one the server's processor uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from tritonmm.tool_calls import ToolCallFamily, ToolCallStream, detect_tool_support, mistral_call_id, parse_tool_calls

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
HERMES, LLAMA3, MISTRAL = ToolCallFamily.HERMES, ToolCallFamily.LLAMA3, ToolCallFamily.MISTRAL

# file: (renders tools, family, takes a past call's arguments as JSON text)
DETECTED = {
    "qwen2.5-7b-instruct.jinja": (True, HERMES, False),
    "qwen3-0.6b.jinja": (True, HERMES, True),
    "hermes-2-pro-llama-3-8b-tool_use.jinja": (True, HERMES, False),
    "llama-3.1-8b-instruct.jinja": (True, LLAMA3, False),
    "llama-3.2-11b-vision-instruct.jinja": (True, LLAMA3, False),
    "mistral-nemo-instruct-2407.jinja": (True, MISTRAL, False),
    "mistral-common-v3_spm.jinja": (True, MISTRAL, True),
    "mistral-common-v7_image.jinja": (True, MISTRAL, True),
    "mistral-common-v11_image.jinja": (True, MISTRAL, True),
    "qwen2.5-vl-7b-instruct.jinja": (False, None, False),
    "smolvlm-instruct.jinja": (False, None, False),
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city's name."}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]
CALLS = [("get_weather", {"city": "Paris"}), ("get_time", {})]
QUESTION = "What's the weather in Paris, and what time is it?"
RESULTS = ("Sunny, 22 C", "14:05")


@dataclass(frozen=True)
class Case:
    template: str
    several_calls: bool  # Llama 3.x templates refuse more than one call per turn
    bos: str
    eos: str
    end_of_turn: str  # what follows a call turn in the template (the model stops on it)
    extra: dict = field(default_factory=dict)


CASES = [
    Case("qwen2.5-7b-instruct.jinja", True, "", "<|im_end|>", "<|im_end|>\n"),
    Case("qwen3-0.6b.jinja", True, "", "<|im_end|>", "<|im_end|>\n", {"enable_thinking": False}),
    Case("hermes-2-pro-llama-3-8b-tool_use.jinja", False, "<|begin_of_text|>", "<|im_end|>", "<|im_end|>\n"),
    Case("llama-3.1-8b-instruct.jinja", False, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    Case("llama-3.2-11b-vision-instruct.jinja", False, "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    Case("mistral-nemo-instruct-2407.jinja", True, "<s>", "</s>", "</s>"),
    Case("mistral-common-v3_spm.jinja", True, "<s>", "</s>", "</s>"),
    Case("mistral-common-v7_image.jinja", True, "<s>", "</s>", "</s>"),
    Case("mistral-common-v11_image.jinja", True, "<s>", "</s>", "</s>"),
]


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def _render(case: Case, messages: list[dict], add_generation_prompt: bool) -> str:
    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=TOOLS,
        chat_template=_template(case.template),
        add_generation_prompt=add_generation_prompt,
        bos_token=case.bos,
        eos_token=case.eos,
        **case.extra,
    )
    return rendered[0]


def _history(case: Case, call_ids: list[str] | None = None) -> list[dict]:
    """Question, the assistant's calls, their results: arguments passed as the template wants them."""
    support = detect_tool_support(_template(case.template))
    calls = CALLS if case.several_calls else CALLS[:1]
    ids = call_ids or [f"call_{i:024x}" for i in range(len(calls))]
    if support.family is MISTRAL and call_ids is None:
        ids = [mistral_call_id(i) for i in ids]
    tool_calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args) if support.string_arguments else args},
        }
        for call_id, (name, args) in zip(ids, calls, strict=True)
    ]
    results = [
        {"role": "tool", "tool_call_id": call_id, "name": name, "content": result}
        for call_id, (name, _), result in zip(ids, calls, RESULTS, strict=False)
    ]
    return [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "", "tool_calls": tool_calls},
        *results,
    ]


@pytest.mark.parametrize(("name", "expected"), sorted(DETECTED.items()))
def test_family_and_tool_rendering_detected_from_the_template(name, expected):
    support = detect_tool_support(_template(name))
    assert (support.renders_tools, support.family, support.string_arguments) == expected
    assert support.supports_tool_calls == (expected[0] and expected[1] is not None)


def test_every_fixture_is_covered():
    assert sorted(p.name for p in TEMPLATES.glob("*.jinja")) == sorted(DETECTED)


def test_tools_only_named_in_text_are_not_rendered_tools():
    template = "{{ 'We have tools!' }}{% for m in messages %}{{ m.content }}{% endfor %}{{ builtin_tools }}"
    assert not detect_tool_support(template).renders_tools
    assert detect_tool_support("{% if tools %}{{ tools | tojson }}{% endif %}").renders_tools
    assert detect_tool_support(None) == detect_tool_support("")
    assert not detect_tool_support(None).supports_tool_calls


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.template)
def test_agent_history_renders_through_the_template(case):
    messages = [*_history(case), {"role": "user", "content": "Thanks! And tomorrow?"}]
    if detect_tool_support(_template(case.template)).family is MISTRAL:
        messages.insert(-1, {"role": "assistant", "content": "Sunny, 22 C in Paris; it is 14:05."})
    prompt = _render(case, messages, add_generation_prompt=True)
    assert "get_weather" in prompt and "get_time" in prompt  # the tools offered
    assert '"city": "Paris"' in prompt  # the past call, its arguments as JSON
    assert "&#34;" not in prompt and '\\"city' not in prompt  # neither escaped nor double-encoded
    assert RESULTS[0] in prompt
    assert prompt.rstrip().endswith(("assistant", "[/INST]", "<|end_header_id|>", "<think>\n\n</think>"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.template)
def test_the_templates_own_call_turn_parses_back_into_the_calls(case):
    """What the template writes after the generation prompt is what the model emits for these calls."""
    history = _history(case)
    prompt = _render(case, history[:1], add_generation_prompt=True)
    with_calls = _render(case, history[:2], add_generation_prompt=False)
    assert with_calls.startswith(prompt)
    output = with_calls[len(prompt) :]
    assert output.endswith(case.end_of_turn)
    output = output[: -len(case.end_of_turn)]
    family = detect_tool_support(_template(case.template)).family
    expected = CALLS if case.several_calls else CALLS[:1]
    parsed = parse_tool_calls(output, family, ["get_weather", "get_time"])
    assert [(c.name, json.loads(c.arguments_json)) for c in parsed.calls] == expected
    assert parsed.content == ""
    stream = ToolCallStream(family, ["get_weather", "get_time"])
    shown = "".join(stream.feed(ch) for ch in output)
    end = stream.finish()
    assert shown + end.text == "" and [c.name for c in end.calls] == [name for name, _ in expected]


@pytest.mark.parametrize("case", [c for c in CASES if "mistral-common" in c.template], ids=lambda c: c.template)
def test_mistral_templates_refuse_our_call_ids_unless_mapped(case):
    ours = [f"call_{i:024x}" for i in range(len(CALLS))]
    with pytest.raises(jinja2.TemplateError, match="9"):
        _render(case, _history(case, call_ids=ours), add_generation_prompt=True)
    mapped = [mistral_call_id(i) for i in ours]
    prompt = _render(case, _history(case, call_ids=mapped), add_generation_prompt=True)
    assert all(i in prompt for i in mapped)
