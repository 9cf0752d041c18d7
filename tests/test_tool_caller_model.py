"""The tiny tool-calling chat model: a real checkpoint whose greedy decoding makes known calls.

Built in a temp dir, loaded through AutoProcessor / AutoModelForMultimodalLM as the chat
engine loads a checkpoint, prompted through its own chat template with tools, and its
generated tokens split by the hermes parser that its template selects.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForMultimodalLM, AutoProcessor

from tritonmm.tool_calls import ToolCallFamily, ToolCallStream, detect_tool_support
from tritonmm_server.tiny.tool_caller import ANSWER, KNOWN_CALLS, build_tool_caller


def _tool(name: str, properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": f"The {name} tool.", "parameters": schema}}


WEATHER = _tool("get_weather", {"city": {"type": "string", "description": "A city."}}, ["city"])
TIME = _tool("get_time", {}, [])  # an empty parameter schema
SEARCH = _tool("search", {"query": {"type": "string"}}, ["query"])
QUESTION = {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris, and the time?"}]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    path = build_tool_caller(tmp_path_factory.mktemp("tool-caller") / "checkpoint")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForMultimodalLM.from_pretrained(path, dtype="auto").eval()
    return processor, model


def _generate(tiny, messages: list[dict], tools: list[dict] | None, max_new_tokens: int = 24, **sampling):
    """(the generated token ids, the text deltas one token at a time) of greedy decoding unless told otherwise."""
    processor, model = tiny
    inputs = processor.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    sampling = sampling or {"do_sample": False}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    eos = processor.tokenizer.eos_token_id
    text_ids = new[:-1] if new and new[-1] == eos else new
    return new, [processor.tokenizer.decode([token]) for token in text_ids]


def _split(tiny, deltas: list[str], tools: list[dict]):
    """The deltas through the streaming filter of the family the model's template selects."""
    support = detect_tool_support(tiny[0].chat_template)
    stream = ToolCallStream(support.family, [t["function"]["name"] for t in tools])
    shown = [stream.feed(delta) for delta in deltas]
    end = stream.finish()
    return "".join(shown) + end.text, [(c.name, json.loads(c.arguments_json)) for c in end.calls]


def _ends_with_eos(tiny, ids: list[int]) -> bool:
    return ids[-1] == tiny[0].tokenizer.eos_token_id


def test_its_template_renders_tools_in_the_hermes_family(tiny):
    support = detect_tool_support(tiny[0].chat_template)
    assert support.supports_tool_calls
    assert support.family is ToolCallFamily.HERMES
    assert support.string_arguments  # history arguments may come as Dify's JSON strings


@pytest.mark.parametrize(
    ("tools", "calls"),
    [
        ([WEATHER, TIME], ["get_weather", "get_time"]),  # two calls in one turn
        ([TIME, WEATHER, SEARCH], ["get_weather", "get_time"]),
        ([WEATHER], ["get_weather"]),
        ([SEARCH, TIME], ["get_time"]),  # the empty-schema tool: arguments {}
    ],
)
def test_greedy_decoding_calls_the_known_tools_offered(tiny, tools, calls):
    ids, deltas = _generate(tiny, [QUESTION], tools)
    content, parsed = _split(tiny, deltas, tools)
    assert parsed == [(name, KNOWN_CALLS[name]) for name in calls]
    assert content == ""
    assert _ends_with_eos(tiny, ids)
    assert "".join(deltas).startswith("<tool_call>\n{")  # real markup, which the filter kept out of the text


def test_after_the_tool_results_it_answers_in_text_and_stops(tiny):
    history = [
        QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [  # as Dify sends them: arguments as JSON text
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "Sunny, 22 C"},
        {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "14:05"},
    ]
    prompt = tiny[0].apply_chat_template(history, tools=[WEATHER, TIME], add_generation_prompt=True, tokenize=False)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n14:05\n</tool_response>" in prompt
    ids, deltas = _generate(tiny, history, [WEATHER, TIME])
    content, parsed = _split(tiny, deltas, [WEATHER, TIME])
    assert (content, parsed) == (ANSWER, [])
    assert _ends_with_eos(tiny, ids)

    # A new question after the answer is a new round of calls.
    follow_up = [*history, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": "And in Rome?"}]
    _, deltas = _generate(tiny, follow_up, [WEATHER, TIME])
    assert _split(tiny, deltas, [WEATHER, TIME])[1] == [("get_weather", {"city": "Paris"}), ("get_time", {})]


def test_a_question_with_an_image_still_calls(tiny):
    question = {
        "role": "user",
        "content": [{"type": "image", "image": Image.new("RGB", (80, 60), "red")}, *QUESTION["content"]],
    }
    _, deltas = _generate(tiny, [question], [WEATHER])
    assert _split(tiny, deltas, [WEATHER])[1] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("tools", [None, [SEARCH]])
def test_without_a_known_tool_it_babbles_without_markup_until_max_tokens(tiny, tools):
    ids, deltas = _generate(tiny, [QUESTION], tools, max_new_tokens=20)
    assert len(ids) == 20 and not _ends_with_eos(tiny, ids)
    text = "".join(deltas)
    assert "<tool_call>" not in text and "</tool_call>" not in text and ANSWER not in text
    assert len(set(ids)) > 5


def test_sampling_babble_varies_with_the_seed(tiny):
    def sample(seed: int) -> str:
        torch.manual_seed(seed)
        return "".join(_generate(tiny, [QUESTION], None, max_new_tokens=16, do_sample=True, temperature=1.0)[1])

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_the_checkpoint_is_float32_and_stops_on_im_end(tiny):
    processor, model = tiny
    assert model.dtype == torch.float32  # the arranged attention scores need float32
    assert processor.tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id == processor.tokenizer.eos_token_id
    assert {p.name for p in Path(model.name_or_path).glob("*.json")} >= {"config.json", "generation_config.json"}
