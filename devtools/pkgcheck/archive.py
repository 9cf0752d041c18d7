"""Zip-level checks: what the daemon's decoder and the marketplace toolkit refuse before reading any file."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator, Sequence

from devtools.pkgcheck.common import R_BLOCKED, R_FILES, R_SIZE, R_ZIP

MAX_UNCOMPRESSED_BYTES = 52_428_800  # daemon MAX_PLUGIN_PACKAGE_SIZE and CLI --max-size (§1.4)
MAX_FILES = 5000  # marketplace toolkit MAX_PACKAGE_FILES (§1.4)

# Artifacts that must never ship (§8.4 marketplace toolkit; §9.17 for .env).
BLOCKED_DIRS = frozenset({".git", ".venv", "__pycache__"})
BLOCKED_FILES = frozenset({".env"})
BLOCKED_SUFFIXES = (".pyc", ".difypkg", ".log", ".pem")


def check_archive(infos: Sequence[zipfile.ZipInfo]) -> Iterator[str]:
    seen: set[str] = set()
    sizes: list[tuple[int, str]] = []
    for info in infos:
        name = info.filename
        if info.is_dir():
            yield (
                f"{name}: directory entry; the daemon fails with 'read {name}: is a directory' [{R_ZIP}: files only]"
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
                f"{name}: compression method {info.compress_type} (Go's archive/zip reads store/deflate only) [{R_ZIP}]"
            )
        reason = _blocked_reason(name)
        if reason:
            yield f"{name}: {reason} must not be packaged [{R_BLOCKED}]"
    yield from _check_totals(sizes)


def _unsafe_path(name: str) -> bool:
    return name.startswith("/") or re.match(r"[A-Za-z]:", name) is not None or "\\" in name or ".." in name.split("/")


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
        yield (f"package: {total} bytes uncompressed, over {MAX_UNCOMPRESSED_BYTES}; largest: {largest} [{R_SIZE}]")
    if len(sizes) > MAX_FILES:
        yield f"package: {len(sizes)} files, over {MAX_FILES} [{R_FILES}]"
