"""Checks of an offline package: requirements.txt that installs from ``wheels/`` alone, and wheels that resolve.

The daemon installs from requirements.txt only when there is no pyproject.toml (§2.2), with
``uv pip install -r requirements.txt`` and no index of its own, so the first line of requirements.txt
(``--no-index --find-links=./wheels/``) decides whether the install stays inside the package. What
uv would then resolve is checked here without running it: every requirement has its wheel, every
wheel fits one platform the daemon runs on (CPython 3.12, linux amd64 or arm64), and the
``Requires-Dist`` of every wheel installed is met by another wheel in the package.
"""

from __future__ import annotations

import email.parser
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from devtools.pkgcheck.common import R_OFFLINE, R_TORCH, R_WHEELS, PackageFileError, PackageView
from devtools.pkgcheck.dependencies import FORBIDDEN_DEPENDENCIES
from devtools.pkgcheck.platforms import OFFLINE_REQUIREMENTS_FIRST_LINE, PYTHON_FULL_VERSION, TARGETS, Target

WHEELS_DIR = "wheels/"


def is_offline(pkg: PackageView) -> bool:
    """An offline package carries wheels, or a requirements.txt that turns the index off."""
    if any(name.startswith(WHEELS_DIR) for name in pkg.files):
        return True
    try:
        first = pkg.read_text("requirements.txt", R_OFFLINE).lstrip().split("\n", 1)[0]
    except PackageFileError:
        return False
    return first.startswith("--no-index")


@dataclass(frozen=True)
class PackedWheel:
    path: str  # inside the package
    name: NormalizedName
    version: Version
    tags: frozenset[Tag]


@dataclass
class _Findings:
    problems: list[str] = field(default_factory=list)

    def add(self, problem: str) -> None:
        self.problems.append(problem)


def check_offline_dependencies(pkg: PackageView) -> Iterator[str]:
    for name in ("pyproject.toml", "uv.lock"):
        if pkg.has(name):
            yield (
                f"{name}: must not be in an offline package; the daemon installs from it instead of"
                f" requirements.txt and reaches PyPI (dify-plugin-daemon#734) [{R_OFFLINE}]"
            )
    try:
        lines = pkg.read_text("requirements.txt", R_OFFLINE).splitlines()
    except PackageFileError as exc:
        yield str(exc)
        return
    first = lines[0].strip() if lines else ""
    if first != OFFLINE_REQUIREMENTS_FIRST_LINE:
        yield (
            f"requirements.txt: the first line must be {OFFLINE_REQUIREMENTS_FIRST_LINE!r}, not {first!r};"
            f" otherwise uv looks for the wheels on an index [{R_OFFLINE}]"
        )
    findings = _Findings()
    wheels = _packed_wheels(pkg, findings)
    target = _target(wheels, findings)
    requirements = _pinned_requirements(lines[1:], target, findings)
    installed = _resolve(pkg, requirements, wheels, target, findings)
    yield from findings.problems
    for wheel in wheels.values():
        if wheel.name not in installed:
            yield f"{wheel.path}: no requirement needs it; uv never installs it [{R_WHEELS}]"
    if "dify-plugin" not in installed:
        yield "requirements.txt: dify_plugin is not installed [§2.6 the plugin cannot start without the SDK]"
    for forbidden in FORBIDDEN_DEPENDENCIES:
        if forbidden in installed:
            yield f"dependencies: {forbidden} must not be installed [{R_TORCH}]"


def _packed_wheels(pkg: PackageView, findings: _Findings) -> dict[NormalizedName, PackedWheel]:
    wheels: dict[NormalizedName, PackedWheel] = {}
    for path in pkg.files:
        if not path.startswith(WHEELS_DIR):
            continue
        filename = path[len(WHEELS_DIR) :]
        if "/" in filename or not filename.endswith(".whl"):
            findings.add(f"{path}: only wheel files belong directly in wheels/ [{R_WHEELS}]")
            continue
        try:
            name, version, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename as exc:
            findings.add(f"{path}: not a wheel file name ({exc}) [{R_WHEELS}]")
            continue
        if name in wheels:
            findings.add(f"{path}: a second wheel of {name} (also {wheels[name].path}) [{R_WHEELS}]")
            continue
        wheels[name] = PackedWheel(path, name, version, tags)
    return wheels


def _target(wheels: dict[NormalizedName, PackedWheel], findings: _Findings) -> Target:
    """The platform every wheel fits; when none fits all, the closest one, with the misfits reported."""
    misfits = {}
    for target in TARGETS.values():
        supported = set(target.supported_tags())
        misfits[target.arch] = [wheel for wheel in wheels.values() if not wheel.tags & supported]
    arch = min(misfits, key=lambda key: len(misfits[key]))  # dicts keep order: amd64 wins ties
    target = TARGETS[arch]
    for wheel in misfits[arch]:
        tags = ", ".join(sorted(str(tag) for tag in wheel.tags))
        findings.add(f"{wheel.path}: not installable on {target.describe()} (tags {tags}) [{R_WHEELS}]")
    return target


def _pinned_requirements(lines: list[str], target: Target, findings: _Findings) -> list[Requirement]:
    requirements = []
    for number, raw in enumerate(lines, start=2):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            findings.add(
                f"requirements.txt:{number}: option {line!r}; only the first line may hold options [{R_OFFLINE}]"
            )
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            findings.add(f"requirements.txt:{number}: {exc} [{R_OFFLINE}]")
            continue
        pins = [spec for spec in requirement.specifier if spec.operator in ("==", "===") and "*" not in spec.version]
        if requirement.url or len(pins) != 1 or len(requirement.specifier) != 1:
            findings.add(f"requirements.txt:{number}: {line!r} must pin one version (name==version) [{R_OFFLINE}]")
            continue
        if target.marker_holds(requirement.marker):
            requirements.append(requirement)
    return requirements


def _resolve(
    pkg: PackageView,
    requirements: list[Requirement],
    wheels: dict[NormalizedName, PackedWheel],
    target: Target,
    findings: _Findings,
) -> set[NormalizedName]:
    """Names uv would install from wheels/, following each wheel's Requires-Dist; misses are findings."""
    installed: set[NormalizedName] = set()
    pending: list[tuple[Requirement, str]] = [(r, "requirements.txt") for r in requirements]
    expanded: set[tuple[NormalizedName, frozenset[str]]] = set()
    unmet: set[NormalizedName] = set()  # each unmet project once, named by the first that wants it
    while pending:
        requirement, wanted_by = pending.pop(0)
        name = canonicalize_name(requirement.name)
        wheel = wheels.get(name)
        if wheel is None or not requirement.specifier.contains(wheel.version, prereleases=True):
            if name not in unmet:
                unmet.add(name)
                held = f"wheels/ holds {wheel.path}" if wheel else "wheels/ has no wheel of it"
                findings.add(f"{wanted_by}: requires {requirement}, but {held} (the install would fail) [{R_WHEELS}]")
            continue
        installed.add(name)
        extras = frozenset(requirement.extras)
        if (name, extras) in expanded:
            continue
        expanded.add((name, extras))
        for dependency in _requires_dist(pkg, wheel, target, extras, findings):
            pending.append((dependency, wheel.path))
    return installed


def _requires_dist(
    pkg: PackageView, wheel: PackedWheel, target: Target, extras: frozenset[str], findings: _Findings
) -> list[Requirement]:
    metadata = _metadata(pkg, wheel, findings)
    if metadata is None:
        return []
    requires_python = metadata.get("Requires-Python")
    try:
        if requires_python and not SpecifierSet(requires_python).contains(PYTHON_FULL_VERSION, prereleases=True):
            findings.add(f"{wheel.path}: Requires-Python {requires_python} excludes {PYTHON_FULL_VERSION} [{R_WHEELS}]")
    except InvalidSpecifier:
        findings.add(f"{wheel.path}: Requires-Python {requires_python!r} is not a version specifier [{R_WHEELS}]")
    environment = target.marker_environment()
    dependencies = []
    for line in metadata.get_all("Requires-Dist") or []:
        try:
            dependency = Requirement(line)
        except InvalidRequirement as exc:
            findings.add(f"{wheel.path}: Requires-Dist {line!r} cannot be read ({exc}) [{R_WHEELS}]")
            continue
        marker = dependency.marker
        if marker is None or any(marker.evaluate({**environment, "extra": e}) for e in ("", *sorted(extras))):
            dependencies.append(dependency)
    return dependencies


def _metadata(pkg: PackageView, wheel: PackedWheel, findings: _Findings) -> email.message.Message | None:
    try:
        with zipfile.ZipFile(io.BytesIO(pkg.read_bytes(wheel.path, R_WHEELS))) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                findings.add(f"{wheel.path}: has {len(names)} .dist-info/METADATA files, not 1 [{R_WHEELS}]")
                return None
            text = archive.read(names[0]).decode("utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError) as exc:
        findings.add(f"{wheel.path}: not a readable wheel ({exc}) [{R_WHEELS}]")
        return None
    return email.parser.Parser().parsestr(text, headersonly=True)
