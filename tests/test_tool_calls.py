"""Tool-call parsers and the streaming filter, on model outputs written in each family's format.

Every output is also streamed one character at a time and in random chunkings: the
text shown and the calls must be the same however the deltas fall, and valid markup
must never reach the text.
"""

from __future__ import annotations

import json
import logging
import random
import re

import pytest

from tritonmm.tool_calls import (
    ToolCallFamily,
    ToolCallStream,
    call_format,
    mistral_call_id,
    new_call_id,
    parse_tool_calls,
)

TOOLS = ("get_weather", "get_time")
WEATHER = ("get_weather", {"city": "Paris"})
TIME = ("get_time", {})

HERMES_WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
HERMES_TIME = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
LLAMA_WEATHER = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
LLAMA_TIME = '{"name": "get_time", "parameters": {}}'

# (family, model output, content the user reads, calls)
VALID = [
    ("hermes", HERMES_WEATHER, "", [WEATHER]),
    ("hermes", f"{HERMES_WEATHER}\n{HERMES_TIME}", "", [WEATHER, TIME]),
    ("hermes", f"Let me look that up.\n{HERMES_WEATHER}", "Let me look that up.", [WEATHER]),
    ("hermes", f"{HERMES_TIME}\n\nI asked for the time.", "I asked for the time.", [TIME]),
    ("hermes", HERMES_TIME, "", [TIME]),
    ("hermes", '<tool_call>\n{"name": "get_time"}\n</tool_call>', "", [TIME]),  # no arguments at all
    ("hermes", '<tool_call>\n{"name": "get_time", "arguments": {}}\n', "", [TIME]),  # cut off before the closer
    (
        "hermes",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        "",
        [WEATHER],
    ),
    (
        "hermes",
        '<tool_call>\n{"arguments": {"city": "Zürich"}, "name": "get_weather"}\n</tool_call>',
        "",
        [("get_weather", {"city": "Zürich"})],
    ),
    ("hermes", "No tools needed: 3 < 4 and <b>bold</b> <tool", "No tools needed: 3 < 4 and <b>bold</b> <tool", []),
    ("llama3", LLAMA_WEATHER, "", [WEATHER]),
    ("llama3", f"<|python_tag|>{LLAMA_WEATHER}; {LLAMA_TIME}", "", [WEATHER, TIME]),
    ("llama3", f"{LLAMA_WEATHER};{LLAMA_TIME}", "", [WEATHER, TIME]),
    ("llama3", f"Let me check.<|python_tag|>{LLAMA_WEATHER}", "Let me check.", [WEATHER]),
    ("llama3", LLAMA_TIME, "", [TIME]),
    ("llama3", f" \n{LLAMA_WEATHER}\n", "", [WEATHER]),
    ("llama3", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "", [WEATHER]),
    ("llama3", "It is {warm} today.", "It is {warm} today.", []),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', "", [WEATHER]),
    (
        "mistral",
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"}, '
        '{"name": "get_time", "arguments": {}}]',
        "",
        [WEATHER, TIME],
    ),
    ("mistral", 'Checking.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', "Checking.", [WEATHER]),
    (
        "mistral",
        '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{}',
        "",
        [WEATHER, TIME],
    ),
    ("mistral", "[TOOL_CALLS]get_time{}", "", [TIME]),  # [ARGS] dropped by a decoder
    ("mistral", "Plain [INST]-free text [TOOL", "Plain [INST]-free text [TOOL", []),
]

# (family, model output, what the warning says) - all of it comes back as text
MALFORMED = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par</tool_call>', "not valid JSON"),
    ("hermes", '<tool_call>\n{"name": "get_stock", "arguments": {}}\n</tool_call>', "not one of the tools offered"),
    ("hermes", '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>', "no function name"),
    ("hermes", '<tool_call>\n["get_time"]\n</tool_call>', "not a JSON object"),
    ("hermes", '<tool_call>\n{"name": "get_time", "arguments": {}} and more\n</tool_call>', "text follows"),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": [1, 2]}\n</tool_call>', "not a JSON object"),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": "Paris"}\n</tool_call>', "not JSON"),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arg', "not valid JSON"),  # cut off mid-call
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": }', "not valid JSON"),
    ("llama3", '{"name": "get_stock", "parameters": {}}', "not one of the tools offered"),
    ("llama3", '{"parameters": {"city": "Paris"}}', "no function name"),
    ("llama3", f"{LLAMA_WEATHER}; {{broken", "not valid JSON"),  # one bad call refuses the section
    ("llama3", f"{LLAMA_WEATHER} and then some", "text follows"),
    ("llama3", '{"name": "get_weather", "parameters": "Paris"}', "not JSON"),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}', "not valid JSON"),
    ("mistral", '[TOOL_CALLS][{"name": "get_stock", "arguments": {}}]', "not one of the tools offered"),
    ("mistral", "[TOOL_CALLS][]", "non-empty JSON list"),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"', "not valid JSON"),
    ("mistral", "[TOOL_CALLS][ARGS]{}", "no function name"),
    ("mistral", "[TOOL_CALLS]get_time", "has no arguments"),
]

CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def _chunkings(text: str) -> list[list[str]]:
    """Whole, one character at a time, and random cuts (fixed seeds)."""
    cuts = [[text], list(text)]
    for seed in range(12):
        rng = random.Random(seed)
        pieces, pos = [], 0
        while pos < len(text):
            size = rng.randint(1, 9)
            pieces.append(text[pos : pos + size])
            pos += size
        cuts.append(pieces)
    return cuts


def _stream(family: str, chunks: list[str], tool_names=TOOLS):
    stream = ToolCallStream(family, tool_names)
    shown = [stream.feed(chunk) for chunk in chunks]
    end = stream.finish()
    shown.append(end.text)
    assert "".join(shown) == end.content
    return end, shown


def _pairs(calls) -> list[tuple[str, dict]]:
    return [(call.name, json.loads(call.arguments_json)) for call in calls]


def _markup(family: str) -> tuple[str, ...]:
    fmt = call_format(family)
    return (*fmt.openers, *((fmt.closer,) if fmt.closer else ()), "[ARGS]", '"name"')


@pytest.mark.parametrize(("family", "output", "content", "calls"), VALID)
def test_valid_output_splits_into_content_and_calls_however_it_streams(family, output, content, calls):
    for chunks in _chunkings(output):
        end, shown = _stream(family, chunks)
        assert end.content == content
        assert _pairs(end.calls) == calls
        assert all(CALL_ID.fullmatch(call.id) for call in end.calls)
        assert len({call.id for call in end.calls}) == len(end.calls)
        for delta in shown:
            assert not any(marker in delta for marker in _markup(family)), delta


@pytest.mark.parametrize(("family", "output", "reason"), MALFORMED)
def test_malformed_call_comes_back_as_the_text_the_model_wrote(family, output, reason, caplog):
    for chunks in _chunkings(output):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tritonmm.tool_calls.stream"):
            end, _ = _stream(family, chunks)
        assert end.calls == ()
        assert end.content == output
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert reason in caplog.records[0].getMessage()


def test_one_broken_hermes_block_among_good_ones_stays_text_alone():
    broken = '<tool_call>\n{"name": "get_time", "arguments": {oops}}\n</tool_call>'
    output = f"{HERMES_WEATHER}\n{broken}\n{HERMES_TIME}"
    for chunks in _chunkings(output):
        end, _ = _stream("hermes", chunks)
        assert _pairs(end.calls) == [WEATHER, TIME]
        assert end.content == broken  # the whitespace touching the good calls goes with them


def test_text_before_a_call_is_shown_before_the_call_arrives():
    stream = ToolCallStream("hermes", TOOLS)
    assert stream.feed("Let me look") == "Let me look"
    assert stream.feed(" that up.") == " that up."
    assert stream.feed("\n<tool_") == ""  # the newline may touch a call, "<tool_" may open one
    assert stream.feed('call>\n{"name": "get_weather", ') == ""
    assert stream.feed('"arguments": {"city": "Paris"}}\n</tool_call>') == ""
    end = stream.finish()
    assert end.text == ""
    assert end.content == "Let me look that up."
    assert _pairs(end.calls) == [WEATHER]


def test_a_held_prefix_that_opens_no_call_is_released():
    stream = ToolCallStream("hermes", TOOLS)
    assert stream.feed("a list <tool") == "a list"
    assert stream.feed("s> of things") == " <tools> of things"
    assert stream.finish().text == ""


def test_llama_output_that_starts_as_json_is_held_to_the_end():
    stream = ToolCallStream("llama3", TOOLS)
    assert stream.feed("  ") == ""
    assert stream.feed('{"answer": ') == ""
    assert stream.feed("42}") == ""
    end = stream.finish()  # JSON, but no call: shown whole at the end
    assert end.text == '  {"answer": 42}'
    assert end.calls == ()


def test_any_name_is_a_call_without_a_tool_list():
    output = '<tool_call>\n{"name": "get_stock", "arguments": {"symbol": "ACME"}}\n</tool_call>'
    parsed = parse_tool_calls(output, ToolCallFamily.HERMES, tool_names=None)
    assert _pairs(parsed.calls) == [("get_stock", {"symbol": "ACME"})]
    assert parsed.content == ""


def test_an_empty_tool_list_accepts_no_call():
    parsed = parse_tool_calls(HERMES_TIME, "hermes", tool_names=())
    assert parsed.calls == ()
    assert parsed.content == HERMES_TIME


def test_parse_tool_calls_is_the_stream_on_a_whole_text():
    parsed = parse_tool_calls(f"Sure.\n{HERMES_WEATHER}", "hermes", TOOLS)
    assert parsed.content == "Sure."
    assert _pairs(parsed.calls) == [WEATHER]


def test_call_ids_are_fresh():
    ids = {new_call_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(CALL_ID.fullmatch(i) for i in ids)


def test_mistral_call_id_is_nine_letters_or_digits_and_stable():
    mapped = mistral_call_id("call_0123456789abcdef01234567")
    assert len(mapped) == 9 and mapped.isalnum()
    assert mistral_call_id("call_0123456789abcdef01234567") == mapped
    assert mistral_call_id("call_0123456789abcdef01234568") != mapped
    assert mistral_call_id("a1b2c3d4e") == "a1b2c3d4e"


def test_unknown_family_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown tool-call family 'chatml'; known: hermes, llama3, mistral"):
        ToolCallStream("chatml")


def test_a_finished_stream_takes_no_more_text():
    stream = ToolCallStream("hermes")
    stream.finish()
    with pytest.raises(RuntimeError, match="after finish"):
        stream.feed("x")
    with pytest.raises(RuntimeError, match="twice"):
        stream.finish()
