"""Checks of the model provider YAML and the model YAMLs it declares, as the daemon and SDK load them."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from devtools.pkgcheck.common import (
    IDENTIFIER_RE,
    MISSING,
    R_FEATURES,
    R_FORM,
    R_MODEL,
    R_MODELS,
    R_PROVIDER,
    R_SOURCE,
    R_TEMPLATE,
    Field,
    PackageFileError,
    PackageView,
    check_fields,
    dig,
    files_exist,
    i18n,
    icons_exist,
    integer,
    items_in,
    list_or_empty,
    load_mapping,
    mapping,
    one_of,
    present,
    str_list,
    text,
)
from devtools.pkgcheck.go_glob import go_glob_regex

MODEL_TYPES = ("llm", "text-embedding", "rerank", "speech2text", "tts", "moderation")
# ``models.<key>`` in the provider YAML -> the model_type its YAMLs declare.
MODEL_SECTION_TYPES = {key.replace("-", "_"): key for key in MODEL_TYPES}
CONFIGURATE_METHODS = frozenset({"predefined-model", "customizable-model"})
CREDENTIAL_FORM_TYPES = frozenset({"text-input", "secret-input", "select", "radio", "switch"})
MODEL_FEATURES = frozenset(
    "tool-call multi-tool-call agent-thought vision stream-tool-call document video audio structured-output".split()
)
PARAMETER_TEMPLATES = frozenset(
    "temperature top_p top_k presence_penalty frequency_penalty max_tokens response_format json_schema".split()
)
PARAMETER_TYPES = frozenset({"float", "int", "string", "boolean", "text"})


def features(value: Any) -> str | None:
    if isinstance(value, list) and "polling" in value:
        return "contains 'polling', which Dify <= 1.14 rejects (HTTP 400 on install, dify-official-plugins#3356)"
    return items_in(MODEL_FEATURES)(value)


MODEL_PROVIDER_FIELDS = (
    Field("provider", text(IDENTIFIER_RE), R_PROVIDER),
    Field("label", i18n, R_PROVIDER),
    Field("icon_small", i18n, R_PROVIDER),
    Field("supported_model_types", items_in(MODEL_TYPES, min_items=1, max_items=16), R_PROVIDER),
    Field("configurate_methods", items_in(CONFIGURATE_METHODS, min_items=1, max_items=16), R_PROVIDER),
    Field("provider_credential_schema", mapping, R_PROVIDER, required=False),
    Field("model_credential_schema", mapping, R_PROVIDER, required=False),
    Field("models", mapping, R_PROVIDER, required=False),
    Field("extra.python.provider_source", text(), R_SOURCE),
    Field("extra.python.model_sources", items_in(min_items=1), R_SOURCE),
)
PROVIDER_ICONS = ("icon_small", "icon_large", "icon_small_dark", "icon_large_dark")
CREDENTIAL_FORM_FIELDS = (
    Field("variable", text(), R_FORM),
    Field("label", i18n, R_FORM),
    Field("type", one_of(CREDENTIAL_FORM_TYPES), R_FORM),
    Field("options", items_in(max_items=128), R_FORM, required=False),
)
FORM_OPTION_FIELDS = (Field("value", present, R_FORM), Field("label", i18n, R_FORM))
MODEL_FIELDS = (
    Field("model", text(max_len=255), R_MODEL),
    Field("model_type", one_of(MODEL_TYPES), R_MODEL),
    Field("label", i18n, R_MODEL, required=False),
    Field("features", features, R_FEATURES, required=False),
    Field("model_properties", mapping, "§1.7/§9.9 the SDK requires model_properties"),
    Field("parameter_rules", items_in(max_items=128), R_MODEL, required=False),
)
LLM_PROPERTY_FIELDS = (
    Field("model_properties.mode", one_of({"chat", "completion"}), R_MODEL),
    Field("model_properties.context_size", integer, R_MODEL),
)
TEMPLATE_RULE_FIELDS = (
    Field("name", text(), R_MODEL),
    Field("use_template", one_of(PARAMETER_TEMPLATES), R_TEMPLATE),
)
CUSTOM_RULE_FIELDS = (
    Field("name", text(), R_MODEL),
    Field("type", one_of(PARAMETER_TYPES), R_MODEL),
    Field("label", i18n, R_MODEL),
)


def check_model_provider(pkg: PackageView, where: str) -> Iterator[str]:
    doc, problem = load_mapping(pkg, where, R_PROVIDER)
    if problem:
        yield problem
        return
    yield from check_fields(doc, MODEL_PROVIDER_FIELDS, where)
    for icon in PROVIDER_ICONS:
        yield from icons_exist(pkg, doc, icon, where)
    for schema in ("provider_credential_schema", "model_credential_schema"):
        yield from _check_credential_forms(dig(doc, f"{schema}.credential_form_schemas"), where, schema)
    if isinstance(doc.get("model_credential_schema"), dict):
        yield from check_fields(doc, (Field("model_credential_schema.model.label", i18n, R_FORM),), where)
    yield from files_exist(pkg, doc, "extra.python.provider_source", where, R_SOURCE)
    yield from files_exist(pkg, doc, "extra.python.model_sources", where, R_SOURCE)
    yield from _check_model_sections(pkg, doc, where)


def _check_credential_forms(forms: Any, where: str, schema: str) -> Iterator[str]:
    if forms is MISSING or forms is None:
        return
    label = f"{schema}.credential_form_schemas"
    error = items_in(max_items=32)(forms)
    if error:
        yield f"{where}: {label} {error} [{R_FORM}]"
        return
    for index, form in enumerate(forms):
        prefix = f"{label}[{index}]."
        yield from check_fields(form, CREDENTIAL_FORM_FIELDS, where, prefix)
        for option_index, option in enumerate(list_or_empty(dig(form, "options"))):
            yield from check_fields(option, FORM_OPTION_FIELDS, where, f"{prefix}options[{option_index}].")


def _check_model_sections(pkg: PackageView, provider: dict[str, Any], where: str) -> Iterator[str]:
    sections = provider.get("models")
    if not isinstance(sections, dict):
        sections = {}
    supported = list_or_empty(provider.get("supported_model_types"))
    predefined_total = 0
    for key, section in sections.items():
        model_type = MODEL_SECTION_TYPES.get(key)
        if model_type is None:
            known = sorted(MODEL_SECTION_TYPES)
            yield f"{where}: models.{key} is not a model section (use {known}) [{R_MODELS}]"
            continue
        if model_type not in supported:
            yield (
                f"{where}: models.{key} is declared but {model_type!r} is not in supported_model_types [{R_PROVIDER}]"
            )
        if not isinstance(section, dict):
            yield f"{where}: models.{key} must be a mapping [{R_MODELS}]"
            continue
        model_files, problems = _predefined_model_files(pkg, section.get("predefined"), f"{where}: models.{key}")
        yield from problems
        predefined_total += len(model_files)
        names = yield from _check_model_files(pkg, model_files, model_type)
        yield from _check_position(pkg, section.get("position"), names, f"{where}: models.{key}.position")
    if "predefined-model" in list_or_empty(provider.get("configurate_methods")) and not predefined_total:
        yield (
            f"{where}: configurate_methods has predefined-model but no predefined model YAML is declared [{R_MODELS}]"
        )


def _predefined_model_files(pkg: PackageView, patterns: Any, where: str) -> tuple[list[str], list[str]]:
    """Files matched by ``predefined`` globs the way the daemon matches them, plus any problems."""
    if patterns is None:
        return [], []
    if not isinstance(patterns, list) or len(str_list(patterns)) != len(patterns):
        return [], [f"{where}.predefined must be a list of glob patterns [{R_MODELS}]"]
    matched: set[str] = set()
    problems = []
    for pattern in patterns:
        if "**" in pattern:
            problems.append(f"{where}.predefined {pattern!r}: Go filepath.Match has no recursive ** [{R_MODELS}]")
        try:
            regex = go_glob_regex(pattern)
        except ValueError as exc:
            problems.append(f"{where}.predefined {pattern!r}: {exc} [{R_MODELS}]")
            continue
        hits = {name for name in pkg.files if regex.fullmatch(name) and not name.endswith("_position.yaml")}
        if not hits:
            problems.append(f"{where}.predefined {pattern!r} matches no file in the package [{R_MODELS}]")
        matched |= hits
    return sorted(matched), problems


def _check_model_files(pkg: PackageView, paths: list[str], model_type: str) -> Generator[str, None, set[str] | None]:
    """Check each model YAML; return (as the generator's value) the model names declared.

    None instead of a set when some YAML could not be parsed: its name is then unknown, and the
    position check would only repeat the parse error as a second, misleading problem.
    """
    names: set[str] | None = set()
    for path in paths:
        try:
            doc = pkg.load_yaml(path, R_MODEL)
        except PackageFileError as exc:
            yield str(exc)
            names = None
            continue
        if not isinstance(doc, dict):
            yield f"{path}: must be a mapping [{R_MODEL}]"
            continue
        yield from check_model_yaml(doc, path, model_type)
        if names is not None and isinstance(doc.get("model"), str):
            names.add(doc["model"])
    return names


def check_model_yaml(doc: dict[str, Any], where: str, expected_type: str) -> Iterator[str]:
    yield from check_fields(doc, MODEL_FIELDS, where)
    model_type = doc.get("model_type")
    if model_type in MODEL_TYPES and model_type != expected_type:
        section = expected_type.replace("-", "_")
        yield f"{where}: model_type {model_type!r} but it is listed under models.{section} [{R_MODEL}]"
    if model_type == "llm" and isinstance(doc.get("model_properties"), dict):
        yield from check_fields(doc, LLM_PROPERTY_FIELDS, where)
    for index, rule in enumerate(list_or_empty(doc.get("parameter_rules"))):
        table = TEMPLATE_RULE_FIELDS if isinstance(rule, dict) and "use_template" in rule else CUSTOM_RULE_FIELDS
        yield from check_fields(rule, table, where, f"parameter_rules[{index}].")


def _check_position(pkg: PackageView, position: Any, names: set[str] | None, where: str) -> Iterator[str]:
    if position is None:
        return
    if not isinstance(position, str):
        yield f"{where} must be a file path [{R_MODELS}]"
        return
    try:
        order = pkg.load_yaml(position, R_MODELS)
    except PackageFileError as exc:
        yield str(exc)
        return
    if not isinstance(order, list) or len(str_list(order)) != len(order):
        yield f"{position}: must be a YAML list of model names [{R_MODELS}]"
        return
    unknown = [name for name in order if names is not None and name not in names]
    if unknown:
        yield f"{position}: lists {unknown}, which no predefined model YAML declares [{R_MODELS}]"
