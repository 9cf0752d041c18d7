"""The wheels of an offline package: every runtime dependency a plugin's ``uv.lock`` pins, for one platform.

The lock is the one source of truth: it already holds the resolved versions, the URL and sha256 of
every wheel and sdist, and the markers of every dependency edge. So nothing is resolved again here
(no drift from what ``uv sync --frozen`` installs online): the dependency graph is walked from the
plugin project with the target's marker values, the best wheel for the target's tags is taken for
each locked package, downloaded once into a per-platform cache and checked against the lock's hash.
A package that has no wheel for the platform but an sdist is built into a wheel, which must then be
pure Python (a compiled one could not be built for another machine here).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename

from devtools.pkgcheck.platforms import Target
from devtools.plugin_harness import python312, uv_binary

# Wheels built from sdists carry this time in their zip entries (setuptools, hatchling, flit read it).
SOURCE_DATE_EPOCH = "315532800"
DOWNLOAD_TIMEOUT_S = 120


class WheelError(Exception):
    """The lock cannot give a complete wheel set for the platform; the message says which package."""


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    entry: dict[str, Any]  # the [[package]] table of uv.lock


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: Path  # in the cache

    @property
    def filename(self) -> str:
        return self.path.name


# --------------------------------------------------------------------------------------------
# Which packages: the lock's graph, walked for one platform
# --------------------------------------------------------------------------------------------


def read_lock(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WheelError(f"{path}: cannot read the lock ({exc}); an offline package is built from uv.lock") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WheelError(f"{path}: invalid TOML ({exc})") from exc


def runtime_packages(lock: dict[str, Any], target: Target) -> list[LockedPackage]:
    """The locked packages ``uv sync --no-dev`` installs on ``target``, sorted by name (the project excluded)."""
    packages = [p for p in lock.get("package", []) if isinstance(p, dict) and isinstance(p.get("name"), str)]
    roots = [p for p in packages if _is_project(p)]
    if len(roots) != 1:
        raise WheelError(f"uv.lock: expected one project package (source '.'), found {len(roots)}")
    chosen: dict[str, LockedPackage] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    pending = list(_edges(roots[0], (), target))
    while pending:
        dependency = pending.pop()
        package = _resolve(packages, dependency, target)
        name, version = canonicalize_name(package["name"]), str(package.get("version", ""))
        known = chosen.get(name)
        if known and known.version != version:
            raise WheelError(f"uv.lock: {name} is locked at {known.version} and {version} for {target.key}")
        chosen[name] = LockedPackage(name, version, package)
        extras = tuple(sorted(dependency.get("extra") or ()))
        if (name, extras) not in seen:
            seen.add((name, extras))
            pending.extend(_edges(package, extras, target))
    return sorted(chosen.values(), key=lambda package: package.name)


def _is_project(package: dict[str, Any]) -> bool:
    source = package.get("source") or {}
    return source.get("virtual") == "." or source.get("editable") == "."


def _edges(package: dict[str, Any], extras: tuple[str, ...], target: Target) -> Iterator[dict[str, Any]]:
    """Dependencies of a locked package (and of its requested extras) whose markers hold on ``target``."""
    optional = package.get("optional-dependencies") or {}
    for dependency in [*package.get("dependencies", []), *(d for extra in extras for d in optional.get(extra, []))]:
        if target.marker_holds(dependency.get("marker")):
            yield dependency


def _resolve(packages: list[dict[str, Any]], dependency: dict[str, Any], target: Target) -> dict[str, Any]:
    name = canonicalize_name(dependency["name"])
    candidates = [p for p in packages if canonicalize_name(p["name"]) == name]
    if "version" in dependency:
        candidates = [p for p in candidates if str(p.get("version")) == str(dependency["version"])]
    if len(candidates) > 1:  # a forked resolution: keep the fork whose markers hold here
        candidates = [p for p in candidates if any(target.marker_holds(m) for m in p.get("resolution-markers") or [""])]
    if len(candidates) != 1:
        raise WheelError(f"uv.lock: {len(candidates)} locked entries match dependency {name} on {target.key}")
    return candidates[0]


# --------------------------------------------------------------------------------------------
# Which file: the best wheel for the platform, fetched once and checked against the lock
# --------------------------------------------------------------------------------------------


def best_wheel(package: LockedPackage, supported: list[Tag]) -> dict[str, Any] | None:
    """The lock's wheel entry whose tags come first in ``supported``, as pip and uv prefer them."""
    rank = {tag: index for index, tag in enumerate(supported)}
    best: tuple[int, str, dict[str, Any]] | None = None
    for wheel in package.entry.get("wheels", []):
        filename = _filename(wheel)
        score = min((rank[tag] for tag in parse_wheel_filename(filename)[3] if tag in rank), default=None)
        if score is not None and (best is None or (score, filename) < best[:2]):
            best = (score, filename, wheel)
    return best[2] if best else None


def fetch_wheels(lock_path: Path, target: Target, cache_dir: Path) -> list[Wheel]:
    """Every runtime wheel for ``target``, from ``cache_dir`` or downloaded into it (sorted by name)."""
    lock = read_lock(lock_path)
    supported = target.supported_tags()
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = []
    for package in runtime_packages(lock, target):
        entry = best_wheel(package, supported)
        if entry is not None:
            path = _fetch(entry, cache_dir / _filename(entry))
        elif package.entry.get("sdist"):
            path = _wheel_from_sdist(package, cache_dir, supported)
        else:
            raise WheelError(
                f"uv.lock: {package.name} {package.version} has no wheel for {target.describe()}, nor an sdist"
            )
        wheels.append(Wheel(package.name, package.version, path))
    return wheels


def _filename(entry: dict[str, Any]) -> str:
    url = entry.get("url") or entry.get("path") or ""
    return url.rsplit("/", 1)[-1]


def _fetch(entry: dict[str, Any], dest: Path) -> Path:
    """The file of a lock entry at ``dest``: taken from the cache when its hash matches, else downloaded."""
    algorithm, _, expected = str(entry.get("hash", "")).partition(":")
    if algorithm != "sha256" or not expected:
        raise WheelError(f"uv.lock: {dest.name} has no sha256 hash")
    if dest.is_file() and _sha256(dest) == expected:
        return dest
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        with urllib.request.urlopen(entry["url"], timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise WheelError(f"download of {entry['url']} failed: {exc}") from exc
    actual = _sha256(partial)
    if actual != expected:
        partial.unlink()
        raise WheelError(f"{entry['url']}: sha256 {actual} is not the locked {expected}")
    os.replace(partial, dest)
    return dest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_from_sdist(package: LockedPackage, cache_dir: Path, supported: list[Tag]) -> Path:
    """Build the locked sdist into a wheel once (cached by the sdist's hash); it must be pure Python."""
    sdist = package.entry["sdist"]
    built_dir = cache_dir / "built" / str(sdist.get("hash", "")).partition(":")[2]
    existing = sorted(built_dir.glob("*.whl")) if built_dir.is_dir() else []
    if existing:
        return existing[0]
    with tempfile.TemporaryDirectory(prefix="sdist-") as scratch:
        archive = _fetch(sdist, Path(scratch) / _filename(sdist))
        out = Path(scratch) / "out"
        env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        result = subprocess.run(
            [uv_binary(), "build", "--wheel", "--python", python312(), "--out-dir", str(out), str(archive)],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if result.returncode != 0:
            raise WheelError(
                f"{package.name} {package.version}: building a wheel from its sdist failed:\n{result.stderr[-2000:]}"
            )
        [built] = sorted(out.glob("*.whl"))
        tags = parse_wheel_filename(built.name)[3]
        if not any(tag in supported for tag in tags) or any(tag.platform != "any" for tag in tags):
            raise WheelError(
                f"{package.name} {package.version}: its sdist builds {built.name}, not a pure-Python wheel;"
                " an offline package can only carry it if the lock has a wheel for the platform"
            )
        built_dir.mkdir(parents=True, exist_ok=True)
        final = built_dir / built.name
        shutil.copyfile(built, built_dir / f".{built.name}.partial")
        os.replace(built_dir / f".{built.name}.partial", final)
        return final
