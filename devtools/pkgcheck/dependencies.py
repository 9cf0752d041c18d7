"""Checks that pyproject.toml, uv.lock and requirements.txt agree, since the daemon may install from either."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from devtools.pkgcheck.common import R_DEPS, R_PYTHON, R_TORCH, PackageFileError, PackageView

FORBIDDEN_DEPENDENCIES = ("torchvision", "torchaudio")


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


_REQUIREMENT_RE = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*(.*)", re.DOTALL)
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


def _check_top_level(top_level: list[Requirement], required: set[str], locked: dict[str, set[str]]) -> Iterator[str]:
    if "dify-plugin" not in {r.key for r in top_level}:
        yield ("pyproject.toml: dependencies do not include dify_plugin [§2.6 the plugin cannot start without the SDK]")
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


def _check_requirements_against_lock(requirements: list[Requirement], locked: dict[str, set[str]]) -> Iterator[str]:
    for requirement in requirements:
        versions = locked.get(requirement.key)
        if versions is None:
            yield (
                f"requirements.txt: {requirement.name!r} is not in uv.lock (the two install paths differ) [{R_DEPS}]"
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
