"""Dify's response_format / json_schema parameters, as the core library parses them."""

from __future__ import annotations

import json

import pytest

from tritonmm.contract import PARAM_JSON_SCHEMA, PARAM_RESPONSE_FORMAT, RESPONSE_JSON_OBJECT, RESPONSE_JSON_SCHEMA
from tritonmm.errors import InvalidInput
from tritonmm.structured_output import MAX_SCHEMA_BYTES, ResponseFormat, parse_response_format

# Property order matters (it is the order the model writes them in), so "b" comes first on purpose.
SCHEMA = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"enum": [1, 2]}}, "required": ["a"]}


def test_difys_wrapper_string_gives_the_schema_and_its_name() -> None:
    wrapped = json.dumps({"schema": SCHEMA, "name": "llm_response"})
    fmt = parse_response_format("json_schema", wrapped)
    assert fmt == ResponseFormat(
        RESPONSE_JSON_SCHEMA, schema_json=json.dumps(SCHEMA, separators=(",", ":")), name="llm_response"
    )
    assert list(fmt.schema()["properties"]) == ["b", "a"]


@pytest.mark.parametrize(
    "given", [json.dumps(SCHEMA), SCHEMA, {"schema": SCHEMA}], ids=["bare string", "bare object", "wrapper object"]
)
def test_bare_schemas_and_parsed_objects_are_taken(given: object) -> None:
    fmt = parse_response_format("json_schema", given)
    assert fmt is not None and fmt.schema() == SCHEMA and fmt.name == ""


def test_response_format_decides_and_a_leftover_schema_is_ignored() -> None:
    assert parse_response_format(None, None) is None
    assert parse_response_format("", "") is None
    assert parse_response_format("text", json.dumps(SCHEMA)) is None
    assert parse_response_format("json_object", json.dumps(SCHEMA)) == ResponseFormat(RESPONSE_JSON_OBJECT)
    # no response_format at all: a schema alone asks for it
    assert parse_response_format(None, json.dumps(SCHEMA)).kind == RESPONSE_JSON_SCHEMA


def test_to_params_carries_the_schema_object() -> None:
    assert parse_response_format("json_schema", SCHEMA).to_params() == {
        PARAM_RESPONSE_FORMAT: RESPONSE_JSON_SCHEMA,
        PARAM_JSON_SCHEMA: SCHEMA,
    }
    assert ResponseFormat(RESPONSE_JSON_OBJECT).to_params() == {PARAM_RESPONSE_FORMAT: RESPONSE_JSON_OBJECT}
    assert ResponseFormat(RESPONSE_JSON_OBJECT).schema() == {"type": "object"}


@pytest.mark.parametrize(
    ("response_format", "json_schema", "message"),
    [
        ("xml", None, "response_format must be one of text, json_object, json_schema, got 'xml'"),
        (3, None, "response_format must be a string, got int"),
        ("json_schema", None, "response_format is json_schema, but no json_schema was given"),
        ("json_schema", "  ", "response_format is json_schema, but no json_schema was given"),
        ("json_schema", '{"type": "object",}', "json_schema is not valid JSON: Expecting property name"),
        ("json_schema", "[1, 2]", "json_schema must be a JSON object (a schema), got an array"),
        ("json_schema", "true", "json_schema must be a JSON object (a schema), got the boolean true"),
        ("json_schema", '{"schema": "object"}', "json_schema: 'schema' must be a JSON object, got a string"),
        ("json_schema", '{"schema": {}, "name": 7}', "json_schema: 'name' must be a string, got a number"),
        ("json_schema", 12, "json_schema must be a JSON string or object, got int"),
    ],
)
def test_bad_parameters_are_refused_with_the_problem_named(response_format, json_schema, message) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_response_format(response_format, json_schema)
    assert str(caught.value).startswith(message)


def test_an_oversized_schema_is_refused_with_its_size() -> None:
    huge = {"enum": ["x" * 100] * (MAX_SCHEMA_BYTES // 100)}
    for given in (huge, json.dumps(huge)):
        with pytest.raises(
            InvalidInput, match=rf"json_schema is \d+ bytes; the most a schema may have is {MAX_SCHEMA_BYTES}"
        ):
            parse_response_format("json_schema", given)
