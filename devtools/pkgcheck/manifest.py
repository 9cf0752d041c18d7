"""Checks of manifest.yaml and the documents it points to, the first file the daemon reads."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

from devtools.pkgcheck.common import (
    R_DOCS,
    R_EXCLUSIVE,
    R_IDENTITY,
    R_MANIFEST,
    R_ONE_PROVIDER,
    R_PLUGINS,
    Field,
    PackageView,
    check_fields,
    dig,
    files_exist,
    i18n,
    icons_exist,
    integer,
    items_in,
    mapping,
    one_of,
    str_list,
    text,
)

MANIFEST = "manifest.yaml"

VERSION_RE = r"\d{1,4}(\.\d{1,4}){2}(-\w{1,16})?"
AUTHOR_RE = r"[a-z0-9_-]{1,64}"
PLUGIN_NAME_RE = r"[a-z0-9_-]{1,128}"
# time.Time.UnmarshalText (what yaml.v3 calls for created_at) accepts strict RFC 3339 only.
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

PLUGIN_TAGS = frozenset(
    "search image videos weather finance design travel social news medical productivity education business"
    " entertainment utilities agent rag other trigger".split()
)
ARCHES = frozenset({"amd64", "arm64"})
PLUGIN_CATEGORIES = ("tools", "models", "endpoints", "agent_strategies", "datasources", "triggers")
SINGLE_PROVIDER_CATEGORIES = ("models", "tools")


def read_manifest(zf: zipfile.ZipFile) -> Any:
    """Parse ``manifest.yaml`` of an open package the way the checks do."""
    return PackageView(zf).load_yaml(MANIFEST, R_MANIFEST)


def rfc3339(value: Any) -> str | None:
    if not isinstance(value, str) or not RFC3339_RE.fullmatch(value):
        return f"{value!r} is not an RFC 3339 timestamp like 2026-01-01T00:00:00Z"
    try:
        dt.datetime.fromisoformat(value)  # Python >= 3.11 reads a trailing Z
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
        yield from icons_exist(pkg, manifest, icon, MANIFEST)
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
        if not isinstance(entries, list) or len(str_list(entries)) != len(entries):
            yield f"{MANIFEST}: plugins.{category} must be a list of file paths [{R_MANIFEST}]"
            continue
        declared[category] = entries
        yield from files_exist(pkg, manifest, f"plugins.{category}", MANIFEST, R_PLUGINS)
        if category in SINGLE_PROVIDER_CATEGORIES and len(entries) > 1:
            yield (
                f"{MANIFEST}: plugins.{category} lists {len(entries)} providers, at most one works [{R_ONE_PROVIDER}]"
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
