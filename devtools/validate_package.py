"""Check a built ``.difypkg`` against the rules Dify applies when the package is installed.

The Dify plugin daemon, the Dify API and the ``dify_plugin`` SDK each refuse packages for their own
reasons, and most of those refusals only show up on a running Dify (upload error, HTTP 400, or a
plugin that never sends its first heartbeat). This module encodes those rules so a package can be
checked offline, before anyone uploads it.

Every problem names the rule it enforces in square brackets, with a pointer into
``shared/reference/dify-plugin-protocol.md`` (``§x.y``), where the upstream source is cited.

Usage::

    python -m devtools.validate_package dist/*.difypkg      # exit status 1 if any problem

    from devtools.validate_package import validate
    problems = validate("dist/foo-0.1.0.difypkg")           # [] means valid
"""

from __future__ import annotations

import argparse
import datetime as dt
import posixpath
import re
import sys
import tomllib
import uuid
import zipfile
import zlib
from collections.abc import Callable, Collection, Generator, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# --------------------------------------------------------------------------------------------
# Limits and vocabularies
# --------------------------------------------------------------------------------------------

MAX_UNCOMPRESSED_BYTES = 52_428_800  # daemon MAX_PLUGIN_PACKAGE_SIZE and CLI --max-size (§1.4)
MAX_FILES = 5000  # marketplace toolkit MAX_PACKAGE_FILES (§1.4)

MANIFEST = "manifest.yaml"

VERSION_RE = r"\d{1,4}(\.\d{1,4}){2}(-\w{1,16})?"
AUTHOR_RE = r"[a-z0-9_-]{1,64}"
PLUGIN_NAME_RE = r"[a-z0-9_-]{1,128}"
IDENTIFIER_RE = r"[a-zA-Z0-9_-]+"
# time.Time.UnmarshalText (what yaml.v3 calls for created_at) accepts strict RFC 3339 only.
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

PLUGIN_TAGS = frozenset(
    [
        "search",
        "image",
        "videos",
        "weather",
        "finance",
        "design",
        "travel",
        "social",
        "news",
        "medical",
        "productivity",
        "education",
        "business",
        "entertainment",
        "utilities",
        "agent",
        "rag",
        "other",
        "trigger",
    ]
)
TOOL_TAGS = PLUGIN_TAGS - {"agent", "trigger"}  # SDK ToolLabelEnum (§1.6, §9.12)
ARCHES = frozenset({"amd64", "arm64"})
PLUGIN_CATEGORIES = ("tools", "models", "endpoints", "agent_strategies", "datasources", "triggers")
SINGLE_PROVIDER_CATEGORIES = ("models", "tools")

MODEL_TYPES = ("llm", "text-embedding", "rerank", "speech2text", "tts", "moderation")
# ``models.<key>`` in the provider YAML -> the model_type its YAMLs declare.
MODEL_SECTION_TYPES = {key.replace("-", "_"): key for key in MODEL_TYPES}
CONFIGURATE_METHODS = frozenset({"predefined-model", "customizable-model"})
CREDENTIAL_FORM_TYPES = frozenset({"text-input", "secret-input", "select", "radio", "switch"})
MODEL_FEATURES = frozenset(
    [
        "tool-call",
        "multi-tool-call",
        "agent-thought",
        "vision",
        "stream-tool-call",
        "document",
        "video",
        "audio",
        "structured-output",
    ]
)
PARAMETER_TEMPLATES = frozenset(
    [
        "temperature",
        "top_p",
        "top_k",
        "presence_penalty",
        "frequency_penalty",
        "max_tokens",
        "response_format",
        "json_schema",
    ]
)
PARAMETER_TYPES = frozenset({"float", "int", "string", "boolean", "text"})
TOOL_PARAMETER_TYPES = frozenset(
    [
        "string",
        "number",
        "boolean",
        "select",
        "secret-input",
        "file",
        "files",
        "model-selector",
        "app-selector",
        "checkbox",
        "any",
        "object",
        "array",
        "dynamic-select",
    ]
)
TOOL_PARAMETER_FORMS = frozenset({"llm", "form", "schema"})

# Artifacts that must never ship (§8.4 marketplace toolkit; §9.17 for .env).
BLOCKED_DIRS = frozenset({".git", ".venv", "__pycache__"})
BLOCKED_FILES = frozenset({".env"})
BLOCKED_SUFFIXES = (".pyc", ".difypkg", ".log", ".pem")
FORBIDDEN_DEPENDENCIES = ("torchvision", "torchaudio")

# --------------------------------------------------------------------------------------------
# Rule citations (shown in brackets after each problem)
# --------------------------------------------------------------------------------------------

R_ZIP = "§1.2/§9.4 daemon zip decoder"
R_SIZE = "§1.4 daemon MAX_PLUGIN_PACKAGE_SIZE: 50 MB uncompressed"
R_FILES = "§1.4 marketplace toolkit: at most 5000 files"
R_BLOCKED = "§8.4 marketplace toolkit blocked artifacts"
R_MANIFEST = "§1.6 daemon PluginDeclaration"
R_IDENTITY = "§1.2/§9.3 daemon identity regex: lowercase only"
R_PLUGINS = "§1.5 daemon Manifest(): every listed file is read"
R_EXCLUSIVE = (
    "§1.5/§9.1 daemon ManifestValidate: model and tool/endpoint/... cannot be provided at the same time"
)
R_ONE_PROVIDER = "§9.2 daemon keeps only one provider per category"
R_ICON = "§1.8/§9.6 icons must be files under _assets/"
R_DOCS = "§1.8/§8.4 README.md and PRIVACY.md"
R_DEPS = "§2.2 daemon installs from pyproject.toml+uv.lock, or requirements.txt when PIP_MIRROR_URL is set"
R_PYTHON = "§2.2/§9.14 the daemon always creates a Python 3.12 venv"
R_TORCH = "DESIGN §3: never install torchvision/torchaudio"
R_PROVIDER = "§1.7 model provider schema"
R_FORM = "§8.2 credential form schema"
R_MODELS = "§1.5/§1.7 daemon loads models.<type>.predefined with filepath.Match"
R_MODEL = "§1.7 model YAML schema"
R_FEATURES = "§1.7/§9.8 Dify rejects unknown features with HTTP 400"
R_TEMPLATE = "§1.7/§9.9 daemon: use_template not found"
R_TOOL_PROVIDER = "§5.4 tool provider schema"
R_TOOL = "§5.4 tool schema"
R_SOURCE = "§1.7/§5.4 SDK imports extra.python sources"

# --------------------------------------------------------------------------------------------
# Reading the package
# --------------------------------------------------------------------------------------------


class _DaemonLikeLoader(yaml.SafeLoader):
    """SafeLoader closer to the daemon's yaml.v3: duplicate keys fail, timestamps stay strings.

    PyYAML silently keeps the last of two equal keys, yaml.v3 refuses the file, so a duplicate
    key must be a problem here. Timestamps are kept as text so ``created_at`` is checked as
    written (an RFC 3339 string), not as whatever PyYAML made of it.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML reports unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (yaml.v3 in the daemon rejects it)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_DaemonLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class PackageFileError(Exception):
    """A file the checks need is missing or unparsable; the message is a complete problem."""


class PackageView:
    """Read-only access to the files (not directory entries) of an open package."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self._zf = zf
        self.files: tuple[str, ...] = tuple(
            sorted({info.filename for info in zf.infolist() if not info.is_dir()})
        )
        self._file_set = frozenset(self.files)

    def has(self, path: str) -> bool:
        return _clean(path) in self._file_set

    def has_asset(self, name: str) -> bool:
        return self.has(f"_assets/{name}")

    def read_text(self, path: str, rule: str) -> str:
        if not self.has(path):
            raise PackageFileError(f"{path}: file is missing [{rule}]")
        try:
            return self._zf.read(_clean(path)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PackageFileError(f"{path}: not valid UTF-8 ({exc}) [{rule}]") from exc

    def load_yaml(self, path: str, rule: str) -> Any:
        text = self.read_text(path, rule)
        try:
            return yaml.load(text, Loader=_DaemonLikeLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise PackageFileError(f"{path}: invalid YAML: {_one_line(exc)} [{rule}]") from exc

    def load_toml(self, path: str, rule: str) -> dict[str, Any]:
        text = self.read_text(path, rule)
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PackageFileError(f"{path}: invalid TOML: {exc} [{rule}]") from exc


def _clean(path: str) -> str:
    return posixpath.normpath(path)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def read_manifest(zf: zipfile.ZipFile) -> Any:
    """Parse ``manifest.yaml`` of an open package the way the checks do."""
    return PackageView(zf).load_yaml(MANIFEST, R_MANIFEST)


# --------------------------------------------------------------------------------------------
# Field checks: small predicates applied through tables
# --------------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, or None
_MISSING: Any = object()


@dataclass(frozen=True)
class Field:
    """One rule on one (dotted) field of a YAML document."""

    path: str
    check: Check
    rule: str
    required: bool = True


def dig(doc: Any, dotted: str) -> Any:
    """Value at ``a.b.c`` in nested mappings, or ``_MISSING``; an explicit null stays None."""
    value = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def check_fields(doc: Any, fields: Iterable[Field], where: str, prefix: str = "") -> Iterator[str]:
    if not isinstance(doc, dict):
        yield f"{where}: {prefix.rstrip('.') or 'document'} must be a mapping, got {_describe(doc)}"
        return
    for field in fields:
        value = dig(doc, field.path)
        if value is _MISSING:
            if field.required:
                yield f"{where}: {prefix}{field.path} is missing [{field.rule}]"
            continue
        error = field.check(value)
        if error:
            yield f"{where}: {prefix}{field.path} {error} [{field.rule}]"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def text(pattern: str | None = None, max_len: int | None = None) -> Check:
    regex = re.compile(pattern) if pattern else None

    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be a string, got {_describe(value)}"
        if not value:
            return "must not be empty"
        if max_len is not None and len(value) > max_len:
            return f"is longer than {max_len} characters"
        if regex and not regex.fullmatch(value):
            return f"{value!r} does not match ^{pattern}$"
        return None

    return check


def one_of(allowed: Collection[str]) -> Check:
    def check(value: Any) -> str | None:
        if not _is_member(value, allowed):
            return f"{value!r} is not one of {sorted(allowed)}"
        return None

    return check


def items_in(
    allowed: Collection[str] | None = None, *, min_items: int = 0, max_items: int | None = None
) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list, got {_describe(value)}"
        if len(value) < min_items:
            return f"must have at least {min_items} item(s)"
        if max_items is not None and len(value) > max_items:
            return f"has {len(value)} items, more than {max_items}"
        unknown = [item for item in value if allowed is not None and not _is_member(item, allowed)]
        if unknown:
            return f"has unknown value(s) {unknown} (allowed: {sorted(allowed or ())})"
        return None

    return check


def _is_member(value: Any, allowed: Collection[str]) -> bool:
    # A YAML mapping or list where a word belongs is unhashable; it is not a member, not a crash.
    return isinstance(value, str) and value in allowed


def i18n(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be an I18n mapping with en_US, got {_describe(value)}"
    en_us = value.get("en_US")
    if not isinstance(en_us, str) or not 1 <= len(en_us) <= 1023:
        return "must have an en_US text of 1-1023 characters"
    return None


def integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {_describe(value)}"
    return None


def mapping(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be a mapping, got {_describe(value)}"
    return None


def present(value: Any) -> str | None:
    return "must not be null" if value is None else None


def rfc3339(value: Any) -> str | None:
    if not isinstance(value, str) or not RFC3339_RE.fullmatch(value):
        return f"{value!r} is not an RFC 3339 timestamp like 2026-01-01T00:00:00Z"
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        return f"{value!r} is not a valid date/time ({exc})"
    return None


def not_uuid(value: Any) -> str | None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return None
    return f"{value!r} parses as a UUID"


def lacks_reserved_words(value: Any) -> str | None:
    lowered = str(value).lower()
    if "langgenius" in lowered or "dify" in lowered:
        return f"{value!r} contains 'langgenius' or 'dify'"
    return None


def features(value: Any) -> str | None:
    if isinstance(value, list) and "polling" in value:
        return (
            "contains 'polling', which Dify <= 1.14 rejects (HTTP 400 on install, dify-official-plugins#3356)"
        )
    return items_in(MODEL_FEATURES)(value)


def object_schema(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("type") != "object":
        return "must be a JSON Schema with type: object"
    if "properties" in value and not isinstance(value["properties"], dict):
        return "properties must be a mapping"
    return None


def _str_list(value: Any) -> list[str]:
    """The string items of a list field (anything else is reported by the field tables)."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _files_exist(pkg: PackageView, doc: Any, dotted: str, where: str, rule: str) -> Iterator[str]:
    """Every path named by a string or list-of-strings field exists in the package."""
    value = dig(doc, dotted)
    for path in [value] if isinstance(value, str) else _str_list(value):
        if not pkg.has(path):
            yield f"{where}: {dotted} names {path!r}, which is not in the package [{rule}]"


def _icons_exist(pkg: PackageView, doc: Any, dotted: str, where: str) -> Iterator[str]:
    """An icon field (a file name, or an I18n mapping of file names) points into _assets/."""
    value = dig(doc, dotted)
    if value is _MISSING or value is None:
        return
    names = value.items() if isinstance(value, dict) else [("", value)]
    for locale, name in names:
        label = f"{dotted}.{locale}" if locale else dotted
        if not isinstance(name, str) or not pkg.has_asset(name):
            yield f"{where}: {label} {name!r} is not a file under _assets/ [{R_ICON}]"


# --------------------------------------------------------------------------------------------
# Archive
# --------------------------------------------------------------------------------------------


def check_archive(infos: Sequence[zipfile.ZipInfo]) -> Iterator[str]:
    seen: set[str] = set()
    sizes: list[tuple[int, str]] = []
    for info in infos:
        name = info.filename
        if info.is_dir():
            yield (
                f"{name}: directory entry; the daemon fails with 'read {name}: is a directory'"
                f" [{R_ZIP}: files only]"
            )
            continue
        sizes.append((info.file_size, name))
        if name in seen:
            yield f"{name}: duplicate zip entry [{R_ZIP}]"
        seen.add(name)
        if _unsafe_path(name):
            yield f"{name}: unsafe path (absolute, '..' or backslash) [{R_ZIP}: ExtractTo rejects it]"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            yield (
                f"{name}: compression method {info.compress_type}"
                f" (Go's archive/zip reads store/deflate only) [{R_ZIP}]"
            )
        reason = _blocked_reason(name)
        if reason:
            yield f"{name}: {reason} must not be packaged [{R_BLOCKED}]"
    yield from _check_totals(sizes)


def _unsafe_path(name: str) -> bool:
    return (
        name.startswith("/")
        or re.match(r"[A-Za-z]:", name) is not None
        or "\\" in name
        or ".." in name.split("/")
    )


def _blocked_reason(name: str) -> str | None:
    *dirs, base = name.split("/")
    for part in dirs:
        if part in BLOCKED_DIRS:
            return f"{part}/ directory"
    if base in BLOCKED_FILES:
        return f"{base} file (secrets; pydantic-settings loads it at start, §9.17)"
    for suffix in BLOCKED_SUFFIXES:
        if base.endswith(suffix):
            return f"*{suffix} file"
    return None


def _check_totals(sizes: list[tuple[int, str]]) -> Iterator[str]:
    total = sum(size for size, _ in sizes)
    if total > MAX_UNCOMPRESSED_BYTES:
        largest = ", ".join(f"{name} ({size} bytes)" for size, name in sorted(sizes, reverse=True)[:5])
        yield (
            f"package: {total} bytes uncompressed, over {MAX_UNCOMPRESSED_BYTES};"
            f" largest: {largest} [{R_SIZE}]"
        )
    if len(sizes) > MAX_FILES:
        yield f"package: {len(sizes)} files, over {MAX_FILES} [{R_FILES}]"


# --------------------------------------------------------------------------------------------
# manifest.yaml, documents
# --------------------------------------------------------------------------------------------

MANIFEST_FIELDS = (
    Field("version", text(VERSION_RE), "§1.6/§9.3 daemon version regex: X.Y.Z"),
    Field("type", one_of({"plugin"}), R_MANIFEST),
    Field("author", text(AUTHOR_RE), R_IDENTITY),
    Field("author", not_uuid, "§1.2/§9.3 upload: cannot set author to an UUID", required=False),
    Field("author", lacks_reserved_words, "§8.4 marketplace toolkit reserves these", required=False),
    Field("name", text(PLUGIN_NAME_RE), R_IDENTITY),
    Field("label", i18n, R_MANIFEST),
    Field("description", i18n, R_MANIFEST),
    Field("icon", text(max_len=128), R_MANIFEST),
    Field("icon_dark", text(max_len=128), R_MANIFEST, required=False),
    Field("resource.memory", integer, R_MANIFEST),
    Field("meta.version", text(VERSION_RE), R_MANIFEST),
    Field("meta.arch", items_in(ARCHES, min_items=1), R_MANIFEST),
    Field("meta.runner.language", one_of({"python"}), "§1.6/§2.3 only python runners exist"),
    Field("meta.runner.version", text(max_len=128), f"{R_MANIFEST}; quote it, YAML reads 3.12 as a float"),
    Field("meta.runner.entrypoint", text(max_len=256), "§1.6/§2.3 launched as python -m <entrypoint>"),
    Field("created_at", rfc3339, R_MANIFEST),
    Field("tags", items_in(PLUGIN_TAGS), "§1.6 daemon plugin_tag list", required=False),
    Field("plugins", mapping, R_MANIFEST),
    Field("privacy", text(), "§1.6/§8.4 privacy policy path or URL", required=False),
)


def check_manifest(pkg: PackageView, manifest: dict[str, Any]) -> Iterator[str]:
    yield from check_fields(manifest, MANIFEST_FIELDS, MANIFEST)
    for icon in ("icon", "icon_dark"):
        yield from _icons_exist(pkg, manifest, icon, MANIFEST)
    yield from _check_entrypoint(pkg, manifest)
    yield from _check_plugin_lists(pkg, manifest)


def _check_entrypoint(pkg: PackageView, manifest: dict[str, Any]) -> Iterator[str]:
    entrypoint = dig(manifest, "meta.runner.entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint:
        return
    module = entrypoint.replace(".", "/")
    if not (pkg.has(f"{module}.py") or pkg.has(f"{module}/__main__.py")):
        yield (
            f"{MANIFEST}: meta.runner.entrypoint {entrypoint!r} needs {module}.py in the package"
            f" [§2.3 the daemon runs python -m {entrypoint}]"
        )


def _check_plugin_lists(pkg: PackageView, manifest: dict[str, Any]) -> Iterator[str]:
    plugins = manifest.get("plugins")
    if not isinstance(plugins, dict):
        return  # reported by MANIFEST_FIELDS
    declared: dict[str, list[str]] = {}
    for category in PLUGIN_CATEGORIES:
        entries = plugins.get(category) or []
        if not isinstance(entries, list) or len(_str_list(entries)) != len(entries):
            yield f"{MANIFEST}: plugins.{category} must be a list of file paths [{R_MANIFEST}]"
            continue
        declared[category] = entries
        yield from _files_exist(pkg, manifest, f"plugins.{category}", MANIFEST, R_PLUGINS)
        if category in SINGLE_PROVIDER_CATEGORIES and len(entries) > 1:
            yield (
                f"{MANIFEST}: plugins.{category} lists {len(entries)} providers,"
                f" at most one works [{R_ONE_PROVIDER}]"
            )
    if not any(declared.values()):
        yield f"{MANIFEST}: plugins declares nothing [§1.5 daemon ManifestValidate: at least one is required]"
    others = [category for category in PLUGIN_CATEGORIES if category != "models" and declared.get(category)]
    if declared.get("models") and others:
        yield f"{MANIFEST}: plugins declares models together with {others} [{R_EXCLUSIVE}]"


def check_documents(pkg: PackageView, manifest: dict[str, Any]) -> Iterator[str]:
    for document in ("README.md", "PRIVACY.md"):
        if not pkg.has(document):
            yield f"{document}: file is missing [{R_DOCS}]"
    privacy = manifest.get("privacy")
    if isinstance(privacy, str) and privacy and not re.match(r"https?://", privacy) and not pkg.has(privacy):
        yield f"{MANIFEST}: privacy names {privacy!r}, which is not in the package [{R_DOCS}]"
    if not any(name.startswith("_assets/") for name in pkg.files):
        yield "_assets/: missing or empty [§1.8/§9.6 the SDK scans _assets at start and crashes without it]"


# --------------------------------------------------------------------------------------------
# Dependency files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """A PEP 508 requirement reduced to what the consistency checks need."""

    name: str
    clauses: tuple[tuple[str, str], ...]  # (operator, version), e.g. (">=", "0.10")

    @property
    def key(self) -> str:
        return normalize_name(self.name)

    def spec(self) -> str:
        return ",".join(op + version for op, version in self.clauses)


_REQUIREMENT_RE = re.compile(
    r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*(.*)", re.S
)
_CLAUSE_RE = re.compile(r"\s*(===|==|!=|~=|<=|>=|<|>)\s*([^\s,;]+)\s*")


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: ``Dify_Plugin`` and ``dify-plugin`` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(line: str) -> Requirement | None:
    match = _REQUIREMENT_RE.fullmatch(line.split(";", 1)[0])
    if not match:
        return None
    name, rest = match.group(1), match.group(2).strip().strip("()")
    clauses: list[tuple[str, str]] = []
    if not rest.startswith("@"):  # a direct URL reference has no version to compare
        for part in filter(None, (piece.strip() for piece in rest.split(","))):
            clause = _CLAUSE_RE.fullmatch(part)
            if clause:
                clauses.append((clause.group(1), clause.group(2)))
    return Requirement(name, tuple(clauses))


def parse_requirements_txt(content: str) -> list[Requirement]:
    requirements = []
    for raw in content.replace("\\\n", " ").splitlines():
        line = re.split(r"(^|\s)#", raw, maxsplit=1)[0]
        line = re.split(r"\s--?[a-z]", line, maxsplit=1)[0].strip()  # trailing --hash=... options
        if not line or line.startswith("-"):  # -r/-e/--index-url: pip options, not requirements
            continue
        requirement = parse_requirement(line)
        if requirement:
            requirements.append(requirement)
    return requirements


def _release(version: str) -> tuple[int, ...] | None:
    """Numeric release segments, or None for versions these checks cannot order without `packaging`."""
    match = re.fullmatch(r"v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _pad(release: tuple[int, ...], length: int) -> tuple[int, ...]:
    return release + (0,) * (length - len(release))


def clause_holds(version: str, op: str, target: str) -> bool | None:
    """Whether ``version`` satisfies one ``op target`` clause; None when it cannot be decided."""
    if op == "===":
        return version == target
    wildcard = target.endswith(".*") and op in ("==", "!=")
    have, want = _release(version), _release(target[:-2] if wildcard else target)
    if have is None or want is None:
        return version == target if op == "==" else None
    if wildcard:
        hit = _pad(have, len(want))[: len(want)] == want
        return hit if op == "==" else not hit
    length = max(len(have), len(want))
    a, b = _pad(have, length), _pad(want, length)
    if op == "~=":  # ~=X.Y means >=X.Y and ==X.*
        if len(want) < 2:
            return None
        return a >= b and _pad(have, len(want))[: len(want) - 1] == want[:-1]
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def satisfies(version: str, clauses: Iterable[tuple[str, str]]) -> bool | None:
    results = [clause_holds(version, op, target) for op, target in clauses]
    if False in results:
        return False
    return None if None in results else True


def locked_versions(lock: dict[str, Any]) -> dict[str, set[str]]:
    """Normalised package name -> versions in uv.lock (forked resolutions can lock several)."""
    versions: dict[str, set[str]] = {}
    for package in lock.get("package", []):
        if isinstance(package, dict) and isinstance(package.get("name"), str):
            versions.setdefault(normalize_name(package["name"]), set()).add(str(package.get("version", "")))
    return versions


def check_dependencies(pkg: PackageView) -> Iterator[str]:
    try:
        pyproject = pkg.load_toml("pyproject.toml", R_DEPS)
        locked = locked_versions(pkg.load_toml("uv.lock", R_DEPS))
        requirements = parse_requirements_txt(pkg.read_text("requirements.txt", R_DEPS))
    except PackageFileError as exc:
        yield str(exc)
        yield from _missing_dependency_files(pkg, skip=str(exc))
        return
    project = pyproject.get("project")
    if not isinstance(project, dict):
        yield f"pyproject.toml: [project] table is missing [{R_DEPS}]"
        return
    top_level = [parse_requirement(d) for d in project.get("dependencies", []) if isinstance(d, str)]
    yield from _check_top_level([r for r in top_level if r], {r.key for r in requirements}, locked)
    yield from _check_requirements_against_lock(requirements, locked)
    yield from _check_requires_python(project.get("requires-python"))
    names = {r.key for r in top_level if r} | {r.key for r in requirements} | set(locked)
    for forbidden in FORBIDDEN_DEPENDENCIES:
        if forbidden in names:
            yield f"dependencies: {forbidden} must not be installed [{R_TORCH}]"


def _missing_dependency_files(pkg: PackageView, skip: str) -> Iterator[str]:
    """Report every missing dependency file, not just the first one that stopped the checks."""
    for name in ("pyproject.toml", "uv.lock", "requirements.txt"):
        if not pkg.has(name) and not skip.startswith(f"{name}:"):
            yield f"{name}: file is missing [{R_DEPS}]"


def _check_top_level(
    top_level: list[Requirement], required: set[str], locked: dict[str, set[str]]
) -> Iterator[str]:
    if "dify-plugin" not in {r.key for r in top_level}:
        yield (
            "pyproject.toml: dependencies do not include dify_plugin"
            " [§2.6 the plugin cannot start without the SDK]"
        )
    for requirement in top_level:
        if requirement.key not in required:
            yield (
                f"requirements.txt: does not name pyproject dependency {requirement.name!r}"
                f" (a mirror install would miss it) [{R_DEPS}]"
            )
        if requirement.key not in locked:
            yield (
                f"uv.lock: has no entry for pyproject dependency {requirement.name!r}"
                f" (uv sync --frozen would not install it; run uv lock) [{R_DEPS}]"
            )


def _check_requirements_against_lock(
    requirements: list[Requirement], locked: dict[str, set[str]]
) -> Iterator[str]:
    for requirement in requirements:
        versions = locked.get(requirement.key)
        if versions is None:
            yield (
                f"requirements.txt: {requirement.name!r} is not in uv.lock"
                f" (the two install paths differ) [{R_DEPS}]"
            )
        elif not any(satisfies(version, requirement.clauses) is not False for version in versions):
            yield (
                f"requirements.txt: {requirement.name}{requirement.spec()} disagrees with uv.lock"
                f" ({requirement.name} {', '.join(sorted(versions))}) [{R_DEPS}]"
            )


def _check_requires_python(spec: Any) -> Iterator[str]:
    if spec is None:
        return
    python = parse_requirement(f"python{spec}") if isinstance(spec, str) else None
    if python is None:
        yield f"pyproject.toml: requires-python {spec!r} is not a version specifier [{R_PYTHON}]"
        return
    # Any 3.12.x the daemon's `uv venv --python 3.12` may pick is fine.
    if not any(satisfies(f"3.12.{patch}", python.clauses) is not False for patch in range(100)):
        yield f"pyproject.toml: requires-python {spec!r} excludes Python 3.12 [{R_PYTHON}]"


# --------------------------------------------------------------------------------------------
# Model provider and model YAMLs
# --------------------------------------------------------------------------------------------

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
    try:
        doc = pkg.load_yaml(where, R_PROVIDER)
    except PackageFileError as exc:
        yield str(exc)
        return
    if not isinstance(doc, dict):
        yield f"{where}: must be a mapping [{R_PROVIDER}]"
        return
    yield from check_fields(doc, MODEL_PROVIDER_FIELDS, where)
    for icon in PROVIDER_ICONS:
        yield from _icons_exist(pkg, doc, icon, where)
    for schema in ("provider_credential_schema", "model_credential_schema"):
        yield from _check_credential_forms(dig(doc, f"{schema}.credential_form_schemas"), where, schema)
    if isinstance(doc.get("model_credential_schema"), dict):
        yield from check_fields(doc, (Field("model_credential_schema.model.label", i18n, R_FORM),), where)
    yield from _files_exist(pkg, doc, "extra.python.provider_source", where, R_SOURCE)
    yield from _files_exist(pkg, doc, "extra.python.model_sources", where, R_SOURCE)
    yield from _check_model_sections(pkg, doc, where)


def _check_credential_forms(forms: Any, where: str, schema: str) -> Iterator[str]:
    if forms is _MISSING or forms is None:
        return
    label = f"{schema}.credential_form_schemas"
    error = items_in(max_items=32)(forms)
    if error:
        yield f"{where}: {label} {error} [{R_FORM}]"
        return
    for index, form in enumerate(forms):
        prefix = f"{label}[{index}]."
        yield from check_fields(form, CREDENTIAL_FORM_FIELDS, where, prefix)
        for option_index, option in enumerate(_list_or_empty(dig(form, "options"))):
            yield from check_fields(option, FORM_OPTION_FIELDS, where, f"{prefix}options[{option_index}].")


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_model_sections(pkg: PackageView, provider: dict[str, Any], where: str) -> Iterator[str]:
    sections = provider.get("models")
    if not isinstance(sections, dict):
        sections = {}
    supported = _list_or_empty(provider.get("supported_model_types"))
    predefined_total = 0
    for key, section in sections.items():
        model_type = MODEL_SECTION_TYPES.get(key)
        if model_type is None:
            known = sorted(MODEL_SECTION_TYPES)
            yield f"{where}: models.{key} is not a model section (use {known}) [{R_MODELS}]"
            continue
        if model_type not in supported:
            yield (
                f"{where}: models.{key} is declared but {model_type!r}"
                f" is not in supported_model_types [{R_PROVIDER}]"
            )
        if not isinstance(section, dict):
            yield f"{where}: models.{key} must be a mapping [{R_MODELS}]"
            continue
        model_files, problems = _predefined_model_files(
            pkg, section.get("predefined"), f"{where}: models.{key}"
        )
        yield from problems
        predefined_total += len(model_files)
        names = yield from _check_model_files(pkg, model_files, model_type)
        yield from _check_position(pkg, section.get("position"), names, f"{where}: models.{key}.position")
    if "predefined-model" in _list_or_empty(provider.get("configurate_methods")) and not predefined_total:
        yield (
            f"{where}: configurate_methods has predefined-model"
            f" but no predefined model YAML is declared [{R_MODELS}]"
        )


def _predefined_model_files(pkg: PackageView, patterns: Any, where: str) -> tuple[list[str], list[str]]:
    """Files matched by ``predefined`` globs the way the daemon matches them, plus any problems."""
    if patterns is None:
        return [], []
    if not isinstance(patterns, list) or len(_str_list(patterns)) != len(patterns):
        return [], [f"{where}.predefined must be a list of glob patterns [{R_MODELS}]"]
    matched: set[str] = set()
    problems = []
    for pattern in patterns:
        if "**" in pattern:
            problems.append(
                f"{where}.predefined {pattern!r}: Go filepath.Match has no recursive ** [{R_MODELS}]"
            )
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


def _check_model_files(
    pkg: PackageView, paths: list[str], model_type: str
) -> Generator[str, None, set[str] | None]:
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
    for index, rule in enumerate(_list_or_empty(doc.get("parameter_rules"))):
        table = (
            TEMPLATE_RULE_FIELDS if isinstance(rule, dict) and "use_template" in rule else CUSTOM_RULE_FIELDS
        )
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
    if not isinstance(order, list) or len(_str_list(order)) != len(order):
        yield f"{position}: must be a YAML list of model names [{R_MODELS}]"
        return
    unknown = [name for name in order if names is not None and name not in names]
    if unknown:
        yield f"{position}: lists {unknown}, which no predefined model YAML declares [{R_MODELS}]"


def go_glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go ``filepath.Match`` pattern: ``*``/``?`` never cross ``/``; no ``**``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            i += 1
            if i == len(pattern):
                raise ValueError("syntax error in pattern (trailing backslash)")
            out.append(re.escape(pattern[i]))
        elif char == "[":
            i, char_class = _go_char_class(pattern, i + 1)
            out.append(char_class)
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(f"syntax error in pattern ({exc})") from exc


def _go_char_class(pattern: str, i: int) -> tuple[int, str]:
    """Translate ``[...]`` starting after the ``[``; returns the index of ``]`` and a regex class."""
    negate = pattern.startswith("^", i)
    i += negate
    body: list[str] = []
    while i < len(pattern) and pattern[i] != "]":
        if pattern[i] == "\\":
            i += 1
            if i == len(pattern):
                break
            body.append(re.escape(pattern[i]))
        else:
            body.append("-" if pattern[i] == "-" else re.escape(pattern[i]))
        i += 1
    if i >= len(pattern) or not body:
        raise ValueError("syntax error in pattern (bad [ ] class)")
    return i, f"[{'^/' if negate else ''}{''.join(body)}]"


# --------------------------------------------------------------------------------------------
# Tool provider and tool YAMLs
# --------------------------------------------------------------------------------------------

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
    try:
        doc = pkg.load_yaml(where, R_TOOL_PROVIDER)
    except PackageFileError as exc:
        yield str(exc)
        return
    if not isinstance(doc, dict):
        yield f"{where}: must be a mapping [{R_TOOL_PROVIDER}]"
        return
    yield from check_fields(doc, TOOL_PROVIDER_FIELDS, where)
    for icon in ("identity.icon", "identity.icon_dark"):
        yield from _icons_exist(pkg, doc, icon, where)
    yield from _files_exist(pkg, doc, "extra.python.source", where, R_SOURCE)
    yield from _files_exist(pkg, doc, "tools", where, R_TOOL_PROVIDER)
    for tool_path in _str_list(doc.get("tools")):
        if pkg.has(tool_path):
            yield from check_tool(pkg, tool_path)


def check_tool(pkg: PackageView, where: str) -> Iterator[str]:
    try:
        doc = pkg.load_yaml(where, R_TOOL)
    except PackageFileError as exc:
        yield str(exc)
        return
    if not isinstance(doc, dict):
        yield f"{where}: must be a mapping [{R_TOOL}]"
        return
    yield from check_fields(doc, TOOL_FIELDS, where)
    yield from _files_exist(pkg, doc, "extra.python.source", where, R_SOURCE)
    for index, parameter in enumerate(_list_or_empty(doc.get("parameters"))):
        yield from check_fields(parameter, TOOL_PARAMETER_FIELDS, where, f"parameters[{index}].")


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def validate_zip(zf: zipfile.ZipFile) -> list[str]:
    """All problems of an open package; an empty list means it is valid."""
    problems = list(check_archive(zf.infolist()))
    pkg = PackageView(zf)
    try:
        manifest = read_manifest(zf)
    except PackageFileError as exc:
        return [*problems, str(exc)]
    if not isinstance(manifest, dict):
        return [*problems, f"{MANIFEST}: must be a mapping [{R_MANIFEST}]"]
    problems += check_manifest(pkg, manifest)
    problems += check_documents(pkg, manifest)
    problems += check_dependencies(pkg)
    # Providers that are missing were already reported by the manifest checks.
    for provider in _str_list(dig(manifest, "plugins.models")):
        if pkg.has(provider):
            problems += check_model_provider(pkg, provider)
    for provider in _str_list(dig(manifest, "plugins.tools")):
        if pkg.has(provider):
            problems += check_tool_provider(pkg, provider)
    return problems


def validate(path: str | Path) -> list[str]:
    """All problems of the package at ``path``; an empty list means it is valid."""
    try:
        with zipfile.ZipFile(path) as zf:
            return validate_zip(zf)
    except (OSError, zipfile.BadZipFile, zlib.error) as exc:  # zlib.error: corrupt deflate data
        return [f"{path}: not a readable zip archive ({exc}) [{R_ZIP}]"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.validate_package",
        description="Check .difypkg files against the Dify daemon/SDK install rules.",
    )
    parser.add_argument("packages", nargs="+", type=Path, help=".difypkg files to check")
    args = parser.parse_args(argv)
    failed = False
    for package in args.packages:
        problems = validate(package)
        if problems:
            failed = True
            print(f"{package}: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"{package}: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
