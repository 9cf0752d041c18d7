"""What the container image installs, derived from ``tritonmm_server/requirements.txt`` (the one list).

    python3 deploy/image_requirements.py --torch tritonmm_server/requirements.txt   # the torch pin alone
    python3 deploy/image_requirements.py tritonmm_server/requirements.txt           # everything else

The image installs torch first, in a layer of its own (a few GB that a change elsewhere
should not rebuild), from PyPI's default index: on Linux x86_64 that is the CUDA build
of the same pinned version the local venv runs as +cpu. Everything else follows, minus
what only a local install needs: ``nvidia-pytriton`` carries its own tritonserver binary,
and the image runs NVIDIA's. Stdlib only: it runs on the image's bare python3.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# Needed only outside the image (the image has /opt/tritonserver).
LOCAL_ONLY = frozenset({"nvidia-pytriton"})
# Never installed: pip would replace the pinned torch with the build they were made for.
FORBIDDEN = frozenset({"torchvision", "torchaudio"})
TORCH = "torch"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class RequirementsError(ValueError):
    pass


def _name(line: str) -> str | None:
    """The normalised project name a requirement line installs; None for comments and blanks."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    if text.startswith("-"):
        raise RequirementsError(f"{line.strip()!r}: options and nested files are not expected in the requirements")
    match = _NAME.match(text)
    if match is None:
        raise RequirementsError(f"{line.strip()!r} is not a requirement")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def split_requirements(text: str) -> tuple[str, list[str]]:
    """(the exact torch pin, the other requirement lines the image installs)."""
    torch: list[str] = []
    rest: list[str] = []
    for line in text.splitlines():
        name = _name(line)
        if name is None or name in LOCAL_ONLY:
            continue
        if name in FORBIDDEN:
            raise RequirementsError(f"{line.strip()!r}: {name} must never be installed next to the pinned torch")
        (torch if name == TORCH else rest).append(line.split("#", 1)[0].strip())
    if len(torch) != 1 or not re.fullmatch(r"torch==\d+(\.\d+)+", torch[0]):
        raise RequirementsError(f"expected one exact pin torch==X.Y.Z, found {torch or 'none'}")
    return torch[0], rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--torch", action="store_true", help="print the torch pin only")
    args = parser.parse_args(argv)
    try:
        torch, rest = split_requirements(args.requirements.read_text())
    except (OSError, RequirementsError) as exc:
        print(f"error: {args.requirements}: {exc}", file=sys.stderr)
        return 1
    print(torch if args.torch else "\n".join(rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
