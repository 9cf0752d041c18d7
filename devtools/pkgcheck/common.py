"""Shared footing for the package checks: reading files as the daemon does, rule ids, field tables."""

from __future__ import annotations

import posixpath
import re
import tomllib
import zipfile
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

IDENTIFIER_RE = r"[a-zA-Z0-9_-]+"

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
R_EXCLUSIVE = "§1.5/§9.1 daemon ManifestValidate: model and tool/endpoint/... cannot be provided at the same time"
R_ONE_PROVIDER = "§9.2 daemon keeps only one provider per category"
R_ICON = "§1.8/§9.6 icons must be files under _assets/"
R_DOCS = "§1.8/§8.4 README.md and PRIVACY.md"
R_DEPS = "§2.2 daemon installs from pyproject.toml+uv.lock, or requirements.txt when PIP_MIRROR_URL is set"
R_PYTHON = "§2.2/§9.14 the daemon always creates a Python 3.12 venv"
R_TORCH = "docs/decisions.md#no-torchvision: never install torchvision/torchaudio"
R_PROVIDER = "§1.7 model provider schema"
R_FORM = "§8.2 credential form schema"
R_MODELS = "§1.5/§1.7 daemon loads models.<type>.predefined with filepath.Match"
R_MODEL = "§1.7 model YAML schema"
R_FEATURES = "§1.7/§9.8 Dify rejects unknown features with HTTP 400"
R_TEMPLATE = "§1.7/§9.9 daemon: use_template not found"
R_TOOL_PROVIDER = "§5.4 tool provider schema"
R_TOOL = "§5.4 tool schema"
R_SOURCE = "§1.7/§5.4 SDK imports extra.python sources"
R_OFFLINE = "§2.2 daemon: pyproject.toml wins over requirements.txt, uv pip install -r requirements.txt offline"
R_WHEELS = "§2.2 uv pip install --no-index resolves from wheels/ alone"
R_I18N = "§1.8 Dify's UI languages: en_US, zh_Hans, ja_JP, pt_BR, each under 1024 characters"
R_README = "§1.8 daemon AvailableI18nReadme: readme/README_<lang>.md"

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
        self.files: tuple[str, ...] = tuple(sorted({info.filename for info in zf.infolist() if not info.is_dir()}))
        self._file_set = frozenset(self.files)

    def has(self, path: str) -> bool:
        return _clean(path) in self._file_set

    def has_asset(self, name: str) -> bool:
        return self.has(f"_assets/{name}")

    def read_bytes(self, path: str, rule: str) -> bytes:
        if not self.has(path):
            raise PackageFileError(f"{path}: file is missing [{rule}]")
        return self._zf.read(_clean(path))

    def read_text(self, path: str, rule: str) -> str:
        data = self.read_bytes(path, rule)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PackageFileError(f"{path}: not valid UTF-8 ({exc}) [{rule}]") from exc

    def load_yaml(self, path: str, rule: str) -> Any:
        text = self.read_text(path, rule)
        try:
            return yaml.load(text, Loader=_DaemonLikeLoader)  # a SafeLoader subclass, so as safe as yaml.safe_load
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


# --------------------------------------------------------------------------------------------
# Field checks: small predicates applied through tables
# --------------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, or None
MISSING: Any = object()


@dataclass(frozen=True)
class Field:
    """One rule on one (dotted) field of a YAML document."""

    path: str
    check: Check
    rule: str
    required: bool = True


def dig(doc: Any, dotted: str) -> Any:
    """Value at ``a.b.c`` in nested mappings, or ``MISSING``; an explicit null stays None."""
    value = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def check_fields(doc: Any, fields: Iterable[Field], where: str, prefix: str = "") -> Iterator[str]:
    if not isinstance(doc, dict):
        yield f"{where}: {prefix.rstrip('.') or 'document'} must be a mapping, got {describe(doc)}"
        return
    for field in fields:
        value = dig(doc, field.path)
        if value is MISSING:
            if field.required:
                yield f"{where}: {prefix}{field.path} is missing [{field.rule}]"
            continue
        error = field.check(value)
        if error:
            yield f"{where}: {prefix}{field.path} {error} [{field.rule}]"


def describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def text(pattern: str | None = None, max_len: int | None = None) -> Check:
    regex = re.compile(pattern) if pattern else None

    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be a string, got {describe(value)}"
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


def items_in(allowed: Collection[str] | None = None, *, min_items: int = 0, max_items: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list, got {describe(value)}"
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
        return f"must be an I18n mapping with en_US, got {describe(value)}"
    en_us = value.get("en_US")
    if not isinstance(en_us, str) or not 1 <= len(en_us) <= 1023:
        return "must have an en_US text of 1-1023 characters"
    return None


def integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {describe(value)}"
    return None


def mapping(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be a mapping, got {describe(value)}"
    return None


def present(value: Any) -> str | None:
    return "must not be null" if value is None else None


def str_list(value: Any) -> list[str]:
    """The string items of a list field (anything else is reported by the field tables)."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def files_exist(pkg: PackageView, doc: Any, dotted: str, where: str, rule: str) -> Iterator[str]:
    """Every path named by a string or list-of-strings field exists in the package."""
    value = dig(doc, dotted)
    for path in [value] if isinstance(value, str) else str_list(value):
        if not pkg.has(path):
            yield f"{where}: {dotted} names {path!r}, which is not in the package [{rule}]"


def icons_exist(pkg: PackageView, doc: Any, dotted: str, where: str) -> Iterator[str]:
    """An icon field (a file name, or an I18n mapping of file names) points into _assets/."""
    value = dig(doc, dotted)
    if value is MISSING or value is None:
        return
    names = value.items() if isinstance(value, dict) else [("", value)]
    for locale, name in names:
        label = f"{dotted}.{locale}" if locale else dotted
        if not isinstance(name, str) or not pkg.has_asset(name):
            yield f"{where}: {label} {name!r} is not a file under _assets/ [{R_ICON}]"


def load_mapping(pkg: PackageView, where: str, rule: str) -> tuple[dict, str | None]:
    """A YAML file that must hold a mapping: the mapping, or the problem with it."""
    try:
        doc = pkg.load_yaml(where, rule)
    except PackageFileError as exc:
        return {}, str(exc)
    if not isinstance(doc, dict):
        return {}, f"{where}: must be a mapping [{rule}]"
    return doc, None


def list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
