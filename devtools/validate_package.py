"""Command line for devtools.pkgcheck: check built ``.difypkg`` files before anyone uploads them.

Usage::

    python -m devtools.validate_package dist/*.difypkg      # exit status 1 if any problem
    python -m devtools.validate_package --public-key keys/tritonmm.public.pem dist/*.signed.difypkg
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.pkgcheck import validate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.validate_package",
        description="Check .difypkg files against the Dify daemon/SDK install rules.",
    )
    parser.add_argument("packages", nargs="+", type=Path, help=".difypkg files to check")
    parser.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        help="require a signature this PEM key verifies (repeatable: any one of them)",
    )
    args = parser.parse_args(argv)
    failed = False
    for package in args.packages:
        problems = validate(package, args.public_key)
        if problems:
            failed = True
            print(f"{package}: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"{package}: OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
