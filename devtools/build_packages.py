"""Build every Dify plugin under ``plugins/*/`` into a reproducible, validated ``.difypkg``.

Usage::

    python -m devtools.build_packages [--out dist] [--online-only] [plugin_dir ...]

A plugin directory is one that holds a ``manifest.yaml``. Each one becomes
``<out>/<name>-<version>.difypkg`` (the daemon installs its dependencies from PyPI) and, unless
``--online-only``, ``<name>-<version>-offline-linux-amd64.difypkg`` and ``...-arm64.difypkg`` (every
dependency as a wheel inside, for daemons without internet; see devtools.offline_wheels). The
command prints each package's path, size, sha256 and file count. The offline packages are built
by default because the closed networks Triton mostly lives in need them; their wheels are cached
under ``.cache/wheels/<platform>``, so only the first build downloads them (about 100 MB).

Why not ``dify plugin package``: it needs the Go CLI (and ``uv``), stamps files with their
filesystem times, and walks with Go's ``filepath.WalkDir``, which does not follow symlinks, so
the ``tritonmm -> ../../tritonmm`` link to the shared core library would break it. This builder
produces the same layout the CLI does (docs/dify-daemon.md §1.1: sorted entries, deflate,
files only, ``/`` separators, no zip comment), follows symlinks, and fixes every timestamp and
permission, so the same sources always give the same bytes (with the same zlib).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import hashlib
import io
import os
import re
import stat
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.offline_wheels import WheelError, fetch_wheels
from devtools.pkgcheck import read_manifest, validate_zip
from devtools.pkgcheck.platforms import OFFLINE_REQUIREMENTS_FIRST_LINE, TARGETS, Target

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
FILE_MODE = 0o644
DEFLATE_LEVEL = 6  # explicit, so the output does not depend on zipfile's default
UNIX_SYSTEM = 3  # zip "made by" value under which external_attr holds a Unix mode
# Never packaged, whatever the ignore file says: bytecode is machine-specific and unreproducible.
ALWAYS_IGNORED = ("__pycache__/", "*.pyc")
WHEEL_CACHE = REPO_ROOT / ".cache" / "wheels"
# Left out of an offline package: the daemon prefers pyproject.toml + uv.lock over requirements.txt
# and `uv sync` would reach PyPI for the URLs in the lock; requirements.txt is written anew.
ONLINE_ONLY_FILES = frozenset({"pyproject.toml", "uv.lock", "requirements.txt"})


class BuildError(Exception):
    """A plugin could not be packaged; ``problems`` lists validation failures, if any."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


# --------------------------------------------------------------------------------------------
# Ignore rules (the daemon's .difyignore semantics)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    """One gitignore line, matched like go-git's ``gitignore.Pattern`` that the daemon uses.

    A pattern without ``/`` (apart from a trailing one) matches any single path component, so
    ``lib/`` drops every ``lib`` directory at any depth. A pattern with ``/`` is anchored to the
    plugin root and matched component by component, ``**`` standing for any number of them.
    """

    parts: tuple[str, ...]
    dir_only: bool

    @classmethod
    def parse(cls, line: str) -> IgnorePattern | None:
        line = line.strip()
        # `!pattern` lines are no-ops: the daemon stops at the first Exclude match and never
        # consults Include results (fs.go Walk), so a negation cannot re-include anything.
        if not line or line.startswith(("#", "!")):
            return None
        dir_only = line.endswith("/")
        return cls(tuple((line[:-1] if dir_only else line).split("/")), dir_only)

    def excludes(self, path: Sequence[str], is_dir: bool) -> bool:
        if len(self.parts) == 1:
            return self._name_match(path, is_dir)
        return self._glob_match(list(path), is_dir)

    def _name_match(self, path: Sequence[str], is_dir: bool) -> bool:
        for index, name in enumerate(path):
            if _component_match(self.parts[0], name):
                # A dir-only pattern still matches files *inside* a matching directory.
                return not (self.dir_only and not is_dir and index == len(path) - 1)
        return False

    def _glob_match(self, path: list[str], is_dir: bool) -> bool:
        # Port of go-git's globMatch; a leading "" (pattern starting with "/") just anchors.
        matched, can_traverse, trailing_star = False, False, False
        for index, part in enumerate(self.parts):
            if part == "":
                can_traverse = False
                continue
            if part == "**":
                if index == len(self.parts) - 1:
                    matched = trailing_star = bool(path) or is_dir
                    break
                can_traverse = True
                continue
            if not path:
                return False
            if can_traverse:
                can_traverse = False
                while path:
                    name = path.pop(0)
                    if _component_match(part, name):
                        matched = True
                        break
                    if not path:
                        return False
            else:
                if not _component_match(part, path[0]):
                    return False
                matched = True
                path = path[1:]
                if not path and index < len(self.parts) - 1:
                    matched = False  # a file cannot match a pattern that continues below it
        if matched and (not path or trailing_star) and self.dir_only and not is_dir:
            return False
        return matched


@functools.lru_cache(maxsize=512)
def _component_regex(pattern: str) -> re.Pattern[str]:
    # git's wildmatch on one path component: fnmatch plus `\x` escapes and `[^...]` negation.
    translated = re.sub(r"\\(.)", lambda m: f"[{m.group(1)}]", pattern).replace("[^", "[!")
    return re.compile(fnmatch.translate(translated))


def _component_match(pattern: str, name: str) -> bool:
    return _component_regex(pattern).match(name) is not None


@dataclass(frozen=True)
class IgnoreRules:
    patterns: tuple[IgnorePattern, ...]

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> IgnoreRules:
        parsed = (IgnorePattern.parse(line) for line in [*lines, *ALWAYS_IGNORED])
        return cls(tuple(pattern for pattern in parsed if pattern))

    @classmethod
    def for_plugin(cls, plugin_dir: Path) -> IgnoreRules:
        """Root ``.difyignore``, or ``.gitignore`` only if that cannot be read (like the daemon)."""
        for name in (".difyignore", ".gitignore"):
            try:
                return cls.from_lines((plugin_dir / name).read_text(encoding="utf-8").splitlines())
            except OSError:
                continue
        return cls.from_lines(())

    def excludes(self, path: Sequence[str], is_dir: bool) -> bool:
        return any(pattern.excludes(path, is_dir) for pattern in self.patterns)


# --------------------------------------------------------------------------------------------
# Collecting and zipping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    arcname: str  # path inside the package, "/"-separated
    path: Path  # where the bytes come from (through any symlinks)

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class GeneratedFile:
    """A package entry written by the builder itself (the offline requirements.txt)."""

    arcname: str
    content: bytes

    def read(self) -> bytes:
        return self.content


PackageEntry = SourceFile | GeneratedFile


def collect_files(plugin_dir: Path) -> list[SourceFile]:
    """Files to package, sorted by archive name; symlinks are followed, ignored paths pruned."""
    root = plugin_dir.resolve()
    files: list[SourceFile] = []
    _walk(root, (), IgnoreRules.for_plugin(root), frozenset({root}), files)
    return sorted(files, key=lambda source: source.arcname)


def _walk(
    directory: Path,
    rel: tuple[str, ...],
    rules: IgnoreRules,
    ancestors: frozenset[Path],
    out: list[SourceFile],
) -> None:
    with os.scandir(directory) as entries:
        ordered = sorted(entries, key=lambda entry: entry.name)
    for entry in ordered:
        parts = (*rel, entry.name)
        arcname = "/".join(parts)
        is_dir = entry.is_dir()  # follows symlinks
        if rules.excludes(parts, is_dir):
            continue
        if is_dir:
            real = Path(entry.path).resolve()
            if real in ancestors:
                raise BuildError(f"{arcname}: symlink loop back to {real}")
            _walk(Path(entry.path), parts, rules, ancestors | {real}, out)
        elif entry.is_file():
            out.append(SourceFile(arcname, Path(entry.path)))
        elif entry.is_symlink():
            raise BuildError(f"{arcname}: dangling symlink to {os.readlink(entry.path)}")
        else:
            raise BuildError(f"{arcname}: not a regular file or directory")


def write_zip(files: Iterable[PackageEntry]) -> bytes:
    """Zip ``files`` deterministically: sorted, files only, fixed time and mode, deflate."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sorted(files, key=lambda item: item.arcname):
            info = zipfile.ZipInfo(source.arcname, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = UNIX_SYSTEM
            info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
            archive.writestr(info, source.read(), compresslevel=DEFLATE_LEVEL)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    size: int
    sha256: str
    file_count: int


def build_plugin(plugin_dir: Path, out_dir: Path) -> BuiltPackage:
    """Package one plugin into ``out_dir``; raises BuildError instead of writing an invalid one."""
    _require_manifest(plugin_dir)
    return _write_package(plugin_dir, collect_files(plugin_dir), out_dir, suffix="")


def build_offline_plugin(
    plugin_dir: Path, out_dir: Path, target: Target, wheel_cache: Path = WHEEL_CACHE
) -> BuiltPackage:
    """The offline variant for ``target``: the wheels of every locked runtime dependency under
    ``wheels/``, a requirements.txt that installs only from them, no pyproject.toml or uv.lock."""
    _require_manifest(plugin_dir)
    try:
        wheels = fetch_wheels(plugin_dir / "uv.lock", target, wheel_cache / target.key)
    except WheelError as exc:
        raise BuildError(f"{plugin_dir}: {exc}") from exc
    requirements = "".join(f"{wheel.name}=={wheel.version}\n" for wheel in wheels)
    files: list[PackageEntry] = [f for f in collect_files(plugin_dir) if f.arcname not in ONLINE_ONLY_FILES]
    files.append(GeneratedFile("requirements.txt", f"{OFFLINE_REQUIREMENTS_FIRST_LINE}\n{requirements}".encode()))
    files += [SourceFile(f"wheels/{wheel.filename}", wheel.path) for wheel in wheels]
    return _write_package(plugin_dir, files, out_dir, suffix=f"-offline-{target.key}")


def _require_manifest(plugin_dir: Path) -> None:
    if not (plugin_dir / "manifest.yaml").is_file():
        raise BuildError(f"{plugin_dir}: no manifest.yaml, not a plugin directory")


def _write_package(plugin_dir: Path, files: list[PackageEntry], out_dir: Path, suffix: str) -> BuiltPackage:
    data = write_zip(files)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        problems = validate_zip(archive)
        if problems:
            raise BuildError(f"{plugin_dir}: the package fails validation", problems)
        manifest = read_manifest(archive)
    target = out_dir / f"{manifest['name']}-{manifest['version']}{suffix}.difypkg"
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)  # never leave a half-written package under the final name
    return BuiltPackage(target, len(data), hashlib.sha256(data).hexdigest(), len(files))


def discover_plugins(plugins_root: Path) -> list[Path]:
    return sorted(path.parent for path in plugins_root.glob("*/manifest.yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.build_packages",
        description="Build plugins/*/ into deterministic, validated .difypkg files (online and offline).",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="output directory (default: dist)")
    parser.add_argument(
        "--online-only",
        action="store_true",
        help="skip the offline linux-amd64/arm64 packages (their wheels: .cache/wheels, ~100 MB once)",
    )
    parser.add_argument("plugin_dirs", nargs="*", type=Path, help="plugin directories (default: plugins/*/)")
    args = parser.parse_args(argv)
    plugin_dirs = args.plugin_dirs or discover_plugins(REPO_ROOT / "plugins")
    if not plugin_dirs:
        print(
            f"error: no plugin (a directory with manifest.yaml) under {REPO_ROOT / 'plugins'}",
            file=sys.stderr,
        )
        return 1
    status = 0
    for plugin_dir in plugin_dirs:
        builds = [functools.partial(build_plugin, plugin_dir, args.out)]
        if not args.online_only:
            builds += [functools.partial(build_offline_plugin, plugin_dir, args.out, t) for t in TARGETS.values()]
        for build in builds:
            started = time.perf_counter()
            try:
                built = build()
            except BuildError as exc:
                status = 1
                print(f"error: {exc}", file=sys.stderr)
                for problem in exc.problems:
                    print(f"  - {problem}", file=sys.stderr)
                break  # the offline variants would fail the same way
            print(
                f"{built.path}  {built.size} bytes  sha256={built.sha256}  {built.file_count} files"
                f"  ({time.perf_counter() - started:.1f} s)"
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
