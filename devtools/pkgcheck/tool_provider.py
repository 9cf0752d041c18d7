"""Checks of the tool provider YAML and the tool YAMLs it lists, as the SDK loads them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from devtools.pkgcheck.common import (
    IDENTIFIER_RE,
    R_SOURCE,
    R_TOOL,
    R_TOOL_PROVIDER,
    Field,
    PackageView,
    check_fields,
    files_exist,
    i18n,
    icons_exist,
    items_in,
    list_or_empty,
    load_mapping,
    mapping,
    one_of,
    str_list,
    text,
)
from devtools.pkgcheck.manifest import PLUGIN_TAGS

TOOL_TAGS = PLUGIN_TAGS - {"agent", "trigger"}  # SDK ToolLabelEnum (§1.6, §9.12)
TOOL_PARAMETER_TYPES = frozenset(
    "string number boolean select secret-input file files model-selector app-selector checkbox any object array"
    " dynamic-select".split()
)
TOOL_PARAMETER_FORMS = frozenset({"llm", "form", "schema"})


def object_schema(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("type") != "object":
        return "must be a JSON Schema with type: object"
    if "properties" in value and not isinstance(value["properties"], dict):
        return "properties must be a mapping"
    return None


TOOL_PROVIDER_FIELDS = (
    Field("identity.author", text(), R_TOOL_PROVIDER),
    Field("identity.name", text(IDENTIFIER_RE), R_TOOL_PROVIDER),
    Field("identity.label", i18n, R_TOOL_PROVIDER),
    Field("identity.description", i18n, R_TOOL_PROVIDER),
    Field("identity.icon", text(), R_TOOL_PROVIDER),
    Field("identity.tags", items_in(TOOL_TAGS), "§9.12 SDK ToolLabelEnum (no agent/trigger)", required=False),
    Field(
        "credentials_for_provider",
        mapping,
        "§5.4/§9.10 the SDK crashes at start on a list or null; use a mapping or {}",
        required=False,
    ),
    Field("tools", items_in(min_items=1), R_TOOL_PROVIDER),
    Field("extra.python.source", text(), R_SOURCE),
)
TOOL_FIELDS = (
    Field("identity.name", text(IDENTIFIER_RE), R_TOOL),
    Field("identity.author", text(), R_TOOL),
    Field("identity.label", i18n, R_TOOL),
    Field("description.human", i18n, R_TOOL),
    Field("description.llm", text(), R_TOOL),
    Field("parameters", items_in(), R_TOOL, required=False),
    Field("output_schema", object_schema, R_TOOL, required=False),
    Field("extra.python.source", text(), R_SOURCE),
)
TOOL_PARAMETER_FIELDS = (
    Field("name", text(), R_TOOL),
    Field("type", one_of(TOOL_PARAMETER_TYPES), R_TOOL),
    Field("form", one_of(TOOL_PARAMETER_FORMS), R_TOOL),
    Field("label", i18n, R_TOOL),
    Field("human_description", i18n, R_TOOL),
)


def check_tool_provider(pkg: PackageView, where: str) -> Iterator[str]:
    doc, problem = load_mapping(pkg, where, R_TOOL_PROVIDER)
    if problem:
        yield problem
        return
    yield from check_fields(doc, TOOL_PROVIDER_FIELDS, where)
    for icon in ("identity.icon", "identity.icon_dark"):
        yield from icons_exist(pkg, doc, icon, where)
    yield from files_exist(pkg, doc, "extra.python.source", where, R_SOURCE)
    yield from files_exist(pkg, doc, "tools", where, R_TOOL_PROVIDER)
    for tool_path in str_list(doc.get("tools")):
        if pkg.has(tool_path):
            yield from check_tool(pkg, tool_path)


def check_tool(pkg: PackageView, where: str) -> Iterator[str]:
    doc, problem = load_mapping(pkg, where, R_TOOL)
    if problem:
        yield problem
        return
    yield from check_fields(doc, TOOL_FIELDS, where)
    yield from files_exist(pkg, doc, "extra.python.source", where, R_SOURCE)
    for index, parameter in enumerate(list_or_empty(doc.get("parameters"))):
        yield from check_fields(parameter, TOOL_PARAMETER_FIELDS, where, f"parameters[{index}].")
