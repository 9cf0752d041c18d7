"""Offline checks of a built ``.difypkg`` against the rules Dify applies when the package is installed.

The Dify plugin daemon, the Dify API and the ``dify_plugin`` SDK each refuse packages for their own
reasons, and most of those refusals only show up on a running Dify (upload error, HTTP 400, or a
plugin that never sends its first heartbeat). This package encodes those rules so a package can be
checked offline, before anyone uploads it; one module per area of the package.

Every problem names the rule it enforces in square brackets; ``§x.y`` is the section of
``docs/dify-daemon.md`` that states the rule (``§9.n``: item n of its pitfalls list).

Usage::

    from devtools.pkgcheck import validate
    problems = validate("dist/foo-0.1.0.difypkg")           # [] means valid
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from devtools.pkgcheck.archive import MAX_UNCOMPRESSED_BYTES, check_archive
from devtools.pkgcheck.common import R_MANIFEST, R_SIZE, R_ZIP, PackageFileError, PackageView, dig, str_list
from devtools.pkgcheck.dependencies import check_dependencies
from devtools.pkgcheck.manifest import MANIFEST, check_documents, check_manifest, read_manifest
from devtools.pkgcheck.model_provider import check_model_provider
from devtools.pkgcheck.offline import check_offline_dependencies, is_offline
from devtools.pkgcheck.signature import (
    R_SIGNATURE,
    SignatureError,
    check_signature,
    load_public_key,
    verify_zip,
)
from devtools.pkgcheck.tool_provider import check_tool_provider
from devtools.pkgcheck.translations import check_translations

__all__ = ["read_manifest", "validate", "validate_zip"]


def validate_zip(zf: zipfile.ZipFile) -> list[str]:
    """All problems of an open package; an empty list means it is valid."""
    problems = [*check_archive(zf.infolist()), *check_signature(zf)]
    pkg = PackageView(zf)
    try:
        manifest = read_manifest(zf)
    except PackageFileError as exc:
        return [*problems, str(exc)]
    if not isinstance(manifest, dict):
        return [*problems, f"{MANIFEST}: must be a mapping [{R_MANIFEST}]"]
    problems += check_manifest(pkg, manifest)
    problems += check_documents(pkg, manifest)
    problems += check_offline_dependencies(pkg) if is_offline(pkg) else check_dependencies(pkg)
    problems += check_translations(pkg)
    # Providers that are missing were already reported by the manifest checks.
    for provider in str_list(dig(manifest, "plugins.models")):
        if pkg.has(provider):
            problems += check_model_provider(pkg, provider)
    for provider in str_list(dig(manifest, "plugins.tools")):
        if pkg.has(provider):
            problems += check_tool_provider(pkg, provider)
    return problems


def validate(path: str | Path, public_keys: Sequence[Path] = ()) -> list[str]:
    """All problems of the package at ``path``; an empty list means it is valid.

    With ``public_keys`` (PEM files), the package must also carry a signature one of them verifies.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            problems = validate_zip(zf)
            if public_keys:
                problems += _verify_signature(zf, public_keys)
        size = os.path.getsize(path)
    except (OSError, zipfile.BadZipFile, zlib.error) as exc:  # zlib.error: corrupt deflate data
        return [f"{path}: not a readable zip archive ({exc}) [{R_ZIP}]"]
    if size > MAX_UNCOMPRESSED_BYTES:  # the upload itself is capped too, before anything is unpacked
        problems.append(f"{path}: the file is {size} bytes, over {MAX_UNCOMPRESSED_BYTES} [{R_SIZE}]")
    return problems


def _verify_signature(zf: zipfile.ZipFile, public_keys: Sequence[Path]) -> list[str]:
    try:
        keys = [load_public_key(Path(key).read_bytes()) for key in public_keys]
    except (OSError, SignatureError) as exc:
        return [f"signature: the public key cannot be used: {exc} [{R_SIGNATURE}]"]
    try:
        verify_zip(zf, keys)
    except SignatureError as exc:
        return [f"signature: {exc} [{R_SIGNATURE}]"]
    return []
