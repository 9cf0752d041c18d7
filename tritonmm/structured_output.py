"""Structured output: Dify's ``response_format`` and ``json_schema`` parameters, parsed once.

Dify declares structured output for a model whose parameter rules include
``response_format`` (``text``, ``json_object``, ``json_schema``) and ``json_schema``.
Its native path sends ``response_format="json_schema"`` and, in ``json_schema``, a
JSON string ``{"schema": {...}, "name": "llm_response"}``; a bare schema object
(with or without the wrapper, as a string or already parsed) is taken too.

The rules, decided once here for the plugin and the server:

* ``response_format`` decides. ``text`` (or nothing) means free text, ``json_object``
  any JSON object, ``json_schema`` a document that the schema accepts. A
  ``json_schema`` value next to ``text`` or ``json_object`` is ignored: Dify keeps a
  parameter's value when the user switches the format back.
* With no ``response_format`` at all, a non-empty ``json_schema`` asks for that schema.
* The schema must be a JSON object (not ``true``/``false``, not a list) of at most
  ``MAX_SCHEMA_BYTES``.

This module checks the form only: it runs in the plugin, which has no JSON-schema
library. The server checks the schema itself (JSON-schema meta-validation, then
what grammar-constrained decoding can enforce) and refuses it with a message
naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritonmm.contract import (
    PARAM_JSON_SCHEMA,
    PARAM_RESPONSE_FORMAT,
    RESPONSE_JSON_OBJECT,
    RESPONSE_JSON_SCHEMA,
    RESPONSE_TEXT,
)
from tritonmm.errors import InvalidInput

__all__ = ["MAX_SCHEMA_BYTES", "RESPONSE_FORMATS", "ResponseFormat", "parse_response_format"]

RESPONSE_FORMATS = (RESPONSE_TEXT, RESPONSE_JSON_OBJECT, RESPONSE_JSON_SCHEMA)
# A schema becomes a grammar on the server; one this large is pasted data, not a schema.
MAX_SCHEMA_BYTES = 64 * 1024
_WRAPPER_KEY = "schema"  # Dify's {"schema": ..., "name": ...}


@dataclass(frozen=True)
class ResponseFormat:
    """What the model's answer must be: any JSON object, or a document the schema accepts."""

    kind: str  # RESPONSE_JSON_OBJECT or RESPONSE_JSON_SCHEMA
    # The schema as compact JSON text, keys in the order given (property order is the
    # order the model writes them in); "" for json_object.
    schema_json: str = ""
    name: str = ""  # the schema's name in Dify's wrapper ("llm_response"), for messages only

    def schema(self) -> dict[str, Any]:
        """The schema as an object; ``{"type": "object"}`` for json_object."""
        return json.loads(self.schema_json) if self.schema_json else {"type": "object"}

    def to_params(self) -> dict[str, Any]:
        """The ``PARAMS_JSON`` entries that carry this format to the server."""
        params: dict[str, Any] = {PARAM_RESPONSE_FORMAT: self.kind}
        if self.kind == RESPONSE_JSON_SCHEMA:
            params[PARAM_JSON_SCHEMA] = self.schema()
        return params


def parse_response_format(response_format: str | None, json_schema: str | Mapping | None) -> ResponseFormat | None:
    """The requested format, or None for free text.

    ``json_schema`` is Dify's JSON string or an already-parsed object. Raises
    ``InvalidInput`` naming the parameter and the problem.
    """
    if response_format is not None and not isinstance(response_format, str):
        raise InvalidInput(f"{PARAM_RESPONSE_FORMAT} must be a string, got {type(response_format).__name__}")
    kind = (response_format or "").strip()
    if kind and kind not in RESPONSE_FORMATS:
        raise InvalidInput(f"{PARAM_RESPONSE_FORMAT} must be one of {', '.join(RESPONSE_FORMATS)}, got {kind!r}")
    has_schema = json_schema is not None and not (isinstance(json_schema, str) and not json_schema.strip())
    if kind == RESPONSE_JSON_OBJECT:
        return ResponseFormat(RESPONSE_JSON_OBJECT)
    if kind == RESPONSE_TEXT or (not kind and not has_schema):
        return None
    if not has_schema:
        raise InvalidInput(f"{PARAM_RESPONSE_FORMAT} is {RESPONSE_JSON_SCHEMA}, but no {PARAM_JSON_SCHEMA} was given")
    schema, name = _unwrap(_as_object(json_schema))
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidInput(
            f"{PARAM_JSON_SCHEMA} is {len(text.encode())} bytes; the most a schema may have is {MAX_SCHEMA_BYTES}"
        )
    return ResponseFormat(RESPONSE_JSON_SCHEMA, schema_json=text, name=name)


def _as_object(value: str | Mapping) -> Any:
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"{PARAM_JSON_SCHEMA} must be a JSON string or object, got {type(value).__name__}")
    if len(value.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidInput(
            f"{PARAM_JSON_SCHEMA} is {len(value.encode())} bytes; the most a schema may have is {MAX_SCHEMA_BYTES}"
        )
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{PARAM_JSON_SCHEMA} is not valid JSON: {exc}") from None


def _unwrap(value: Any) -> tuple[Mapping, str]:
    """(schema, name) from Dify's wrapper or a bare schema."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{PARAM_JSON_SCHEMA} must be a JSON object (a schema), got {_json_type(value)}")
    if _WRAPPER_KEY not in value:  # "schema" is no JSON-schema keyword: a bare schema
        return value, ""
    schema, name = value[_WRAPPER_KEY], value.get("name", "")
    if not isinstance(schema, Mapping):
        raise InvalidInput(f"{PARAM_JSON_SCHEMA}: 'schema' must be a JSON object, got {_json_type(schema)}")
    if not isinstance(name, str):
        raise InvalidInput(f"{PARAM_JSON_SCHEMA}: 'name' must be a string, got {_json_type(name)}")
    return schema, name


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as a user wrote it."""
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    names = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
