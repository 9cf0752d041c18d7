"""The platforms an offline package is built for: the Python the daemon installs a plugin into.

The daemon always creates the plugin's venv with ``uv venv --python 3.12`` (§2.2) and its image is
linux amd64 or arm64 (Ubuntu 24.04, glibc 2.39, python3.12 3.12.3). Wheels are chosen for CPython
3.12 on manylinux up to ``manylinux_2_28``: the oldest glibc line that the numpy and pillow wheels
for 3.12 still support, so an offline package also runs on a daemon built on an older distribution.
The builder picks wheels with these tags and the validator checks them with the same tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags

PYTHON_VERSION = (3, 12)
PYTHON_FULL_VERSION = "3.12.3"  # the daemon image's python3.12; lock markers rarely look past 3.12
GLIBC_MINOR_MAX = 28
# Legacy manylinux names of glibc 2.17, 2.12 and 2.5 (PEP 599, PEP 571, PEP 513).
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
OFFLINE_REQUIREMENTS_FIRST_LINE = "--no-index --find-links=./wheels/"


@dataclass(frozen=True)
class Target:
    """One platform: ``arch`` as Dify's manifest names it, ``machine`` as wheels and markers do."""

    arch: str
    machine: str
    glibc_minor_min: int  # the first manylinux line that has wheels for this machine

    @property
    def key(self) -> str:
        return f"linux-{self.arch}"

    def describe(self) -> str:
        return f"CPython {PYTHON_VERSION[0]}.{PYTHON_VERSION[1]} on linux {self.arch} (manylinux_2_{GLIBC_MINOR_MAX})"

    def platform_tags(self) -> list[str]:
        """Platform tags from the newest glibc allowed down to the oldest, as pip orders them."""
        tags = []
        for minor in range(GLIBC_MINOR_MAX, self.glibc_minor_min - 1, -1):
            tags.append(f"manylinux_2_{minor}_{self.machine}")
            if minor in LEGACY_MANYLINUX:
                tags.append(f"{LEGACY_MANYLINUX[minor]}_{self.machine}")
        return tags

    def supported_tags(self) -> list[Tag]:
        """Every wheel tag this platform installs, the most specific first."""
        platforms = self.platform_tags()
        abi = f"cp{PYTHON_VERSION[0]}{PYTHON_VERSION[1]}"
        return [
            *cpython_tags(PYTHON_VERSION, abis=[abi], platforms=platforms),
            *compatible_tags(PYTHON_VERSION, interpreter=abi, platforms=platforms),
        ]

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values of the daemon's venv (all of them, so nothing leaks from this host)."""
        return {
            "implementation_name": "cpython",
            "implementation_version": PYTHON_FULL_VERSION,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": PYTHON_FULL_VERSION,
            "python_version": f"{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}",
            "sys_platform": "linux",
            "extra": "",
        }

    def marker_holds(self, marker: str | Marker | None) -> bool:
        if marker is None or marker == "":
            return True
        parsed = marker if isinstance(marker, Marker) else Marker(marker)
        return parsed.evaluate(self.marker_environment())


TARGETS = {
    "amd64": Target("amd64", "x86_64", glibc_minor_min=5),
    "arm64": Target("arm64", "aarch64", glibc_minor_min=17),
}
