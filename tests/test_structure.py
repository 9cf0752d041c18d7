"""The shape of the code: small modules, no import cycles, nothing cited from outside the repository.

These read files only (no imports of the code under test), so they fail with a list of
every offender rather than at the first one.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.import_scan import ROOT, cycle_path, cycles, import_graph, project_modules, python_files

MAX_LINES = 400
SIZED = ("tritonmm", "tritonmm_server", "plugins", "devtools")

# What the code relies on is written down in docs/ (docs/decisions.md, docs/dify-daemon.md);
# a pointer to notes a person who clones the repository does not have is a dead end.
OUTSIDE_NOTES = re.compile(
    r"notes,? §"  # "notes §5.1", "server notes, §5.1"
    r"|\.\./shared\b|shared/reference"
    r"|(?<![\w./])reference/"  # "reference/offline-models.md"; URLs such as docs.python.org/3/reference/ pass
    r"|DESIGN\.md|DESIGN §|STYLE\.md"
    r"|triton-server-notes|offline-models\.md|production-notes|dify-plugin-protocol|anchors-and-user-needs"
    r"|protocol §|protocol reference"
)
CITABLE_SUFFIXES = {".py", ".sh", ".md", ".yaml", ".yml", ".pbtxt", ".toml", ".txt", ".cfg", ".ini"}


def test_no_module_over_the_size_budget() -> None:
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for folder in SIZED
        for path in python_files(ROOT / folder)
    }
    assert len(sizes) > 50  # the walk found the code
    over = {path: lines for path, lines in sorted(sizes.items()) if lines > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by what they do): {over}"


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = import_graph(modules)
    assert sum(len(edges) for edges in graph.values()) > 50  # the scan found the imports
    loops = [" -> ".join(cycle_path(graph, component)) for component in cycles(graph)]
    assert not loops, "import cycles (move the shared part into a module both can import):\n" + "\n".join(loops)


def test_nothing_cites_notes_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    this_file = Path(__file__).resolve()
    files = [
        ROOT / name
        for name in listed
        if name and Path(name).suffix in CITABLE_SUFFIXES and not (ROOT / name).is_symlink()
    ]
    assert len(files) > 100
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.is_file() and path.resolve() != this_file
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert not offenders, "cite docs/ instead of notes outside the repository:\n" + "\n".join(offenders)


# --- the scanners themselves: each catches what it is for ------------------------------------------


def test_cycle_finder_reports_a_loop_and_passes_a_tree() -> None:
    tree = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert cycles(tree) == []
    looped = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    [component] = cycles(looped)
    assert component == ["a", "b", "c"]
    assert cycle_path(looped, component) == ["a", "b", "c", "a"]


def test_outside_notes_pattern_catches_the_known_forms() -> None:
    caught = [
        "(notes §5.1)",
        "server notes, §5.1",
        "`../shared/DESIGN.md` in the team workspace",
        "(reference/offline-models.md §4)",
        "(triton-server-notes §3)",
        "DESIGN §3: never install torchvision",
        "shared/reference/dify-plugin-protocol.md",
    ]
    assert [s for s in caught if not OUTSIDE_NOTES.search(s)] == []
    passed = ["see docs/decisions.md#binary-tensors", "https://docs.python.org/3/reference/datamodel.html"]
    assert [s for s in passed if OUTSIDE_NOTES.search(s)] == []
