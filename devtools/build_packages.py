"""Build every Dify plugin under ``plugins/*/`` into a reproducible, validated ``.difypkg``.

Usage::

    python -m devtools.build_packages [--out dist] [plugin_dir ...]

A plugin directory is one that holds a ``manifest.yaml``. Each one becomes
``<out>/<name>-<version>.difypkg`` and the command prints its path, size, sha256 and file count.

Why not ``dify plugin package``: it needs the Go CLI (and ``uv``), stamps files with their
filesystem times, and walks with Go's ``filepath.WalkDir``, which does not follow symlinks, so
the ``tritonmm -> ../../tritonmm`` link to the shared core library would break it. This builder
produces the same layout the CLI does (§1.1 of the protocol reference: sorted entries, deflate,
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
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.pkgcheck import read_manifest, validate_zip

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
FILE_MODE = 0o644
DEFLATE_LEVEL = 6  # explicit, so the output does not depend on zipfile's default
UNIX_SYSTEM = 3  # zip "made by" value under which external_attr holds a Unix mode
# Never packaged, whatever the ignore file says: bytecode is machine-specific and unreproducible.
ALWAYS_IGNORED = ("__pycache__/", "*.pyc")


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


def write_zip(files: Iterable[SourceFile]) -> bytes:
    """Zip ``files`` deterministically: sorted, files only, fixed time and mode, deflate."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sorted(files, key=lambda item: item.arcname):
            info = zipfile.ZipInfo(source.arcname, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = UNIX_SYSTEM
            info.external_attr = (stat.S_IFREG | FILE_MODE) << 16
            archive.writestr(info, source.path.read_bytes(), compresslevel=DEFLATE_LEVEL)
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
    if not (plugin_dir / "manifest.yaml").is_file():
        raise BuildError(f"{plugin_dir}: no manifest.yaml, not a plugin directory")
    files = collect_files(plugin_dir)
    data = write_zip(files)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        problems = validate_zip(archive)
        if problems:
            raise BuildError(f"{plugin_dir}: the package fails validation", problems)
        manifest = read_manifest(archive)
    target = out_dir / f"{manifest['name']}-{manifest['version']}.difypkg"
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
        description="Build plugins/*/ into deterministic, validated .difypkg files.",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="output directory (default: dist)")
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
        try:
            built = build_plugin(plugin_dir, args.out)
        except BuildError as exc:
            status = 1
            print(f"error: {exc}", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            continue
        print(f"{built.path}  {built.size} bytes  sha256={built.sha256}  {built.file_count} files")
    return status


if __name__ == "__main__":
    sys.exit(main())
