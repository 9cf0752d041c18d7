"""``python -m devtools.bench``: run the benchmark (see the package's docstring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devtools.bench.groups import GROUPS
from devtools.bench.report import write_page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.bench",
        description="Measure the project side by side and write bench/results/ and docs/benchmarks.md.",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and cases: a few minutes")
    parser.add_argument(
        "--cases", default=",".join(GROUPS), help=f"comma-separated groups (default: all): {', '.join(GROUPS)}"
    )
    parser.add_argument("--page-only", action="store_true", help="only rewrite the page from bench/results/")
    parser.add_argument(
        "--out", type=Path, help="write the results and a page into this folder instead (bench/results/ and docs/ stay)"
    )
    args = parser.parse_args(argv)
    if args.page_only:
        print(write_page())
        return 0
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or not names:
        parser.error(f"unknown case group(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(GROUPS)}")
    from devtools.bench.runner import run_groups

    command = ["python", "-m", "devtools.bench", *(argv or sys.argv[1:])]
    if args.out:
        return run_groups(names, args.quick, command, args.out, args.out / "benchmarks.md")
    return run_groups(names, args.quick, command)


if __name__ == "__main__":
    sys.exit(main())
