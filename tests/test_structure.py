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
    files = repository_files()
    assert len(files) > 100
    this_file = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_NOTES.search(line)
    ]
    assert not offenders, "cite docs/ instead of notes outside the repository:\n" + "\n".join(offenders)


def repository_files() -> list[Path]:
    """Tracked and new (not ignored) text files that may carry citations; links are skipped."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return [
        ROOT / name
        for name in listed
        if name and Path(name).suffix in CITABLE_SUFFIXES and (ROOT / name).is_file() and not (ROOT / name).is_symlink()
    ]


DOC_LINK = re.compile(r"docs/([\w-]+\.md)(?:#([\w.-]+))?")
RELATIVE_DOC_LINK = re.compile(r"\]\(([\w-]+\.md)?(?:#([\w.-]+))?\)")
DAEMON_RULE = re.compile(r"§(\d+(?:\.\d+)?)")


def anchors(page: Path) -> set[str]:
    """Explicit ``<a id>`` anchors and the ids GitHub gives headings."""
    text = page.read_text()
    explicit = set(re.findall(r'<a id="([^"]+)"></a>', text))
    headings = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    return explicit | {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_cited_docs_page_and_anchor_exists() -> None:
    docs = ROOT / "docs"
    cited: list[tuple[str, str, str]] = []  # (where, page, anchor)
    for path in repository_files():
        text = path.read_text(errors="replace")
        where = str(path.relative_to(ROOT))
        cited += [(where, page, anchor) for page, anchor in DOC_LINK.findall(text)]
        if path.parent == docs:
            cited += [(where, page or path.name, anchor) for page, anchor in RELATIVE_DOC_LINK.findall(text)]
    assert len(cited) > 20
    # tests name made-up pages as data (glob cases); a link with an anchor is checked everywhere
    cited = [(where, page, anchor) for where, page, anchor in cited if anchor or not where.startswith("tests/")]
    broken = [
        f"{where}: docs/{page}" + (f"#{anchor}" if anchor else "")
        for where, page, anchor in cited
        if not (docs / page).is_file() or (anchor and anchor not in anchors(docs / page))
    ]
    assert not broken, "links to docs/ pages or anchors that do not exist:\n" + "\n".join(sorted(set(broken)))


def test_every_daemon_rule_cited_by_the_devtools_is_in_the_daemon_page() -> None:
    """``[§x.y ...]`` in a validator message is section x.y of docs/dify-daemon.md (§9.n: pitfall n)."""
    page = (ROOT / "docs" / "dify-daemon.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", page, re.M))
    pitfalls = page.split("\n## 9. Pitfalls", 1)[1]
    sections |= {f"9.{n}" for n in re.findall(r"^(\d+)\. ", pitfalls, re.M)}
    cited = {
        (str(path.relative_to(ROOT)), number)
        for path in python_files(ROOT / "devtools")
        for number in DAEMON_RULE.findall(path.read_text())
    }
    assert len(cited) > 20
    missing = sorted(f"{where}: §{number}" for where, number in cited if number not in sections)
    assert not missing, "rules cited by devtools that docs/dify-daemon.md does not have:\n" + "\n".join(missing)


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


def test_anchors_are_the_ids_github_gives(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '# Title\n\n<a id="binary-tensors"></a>\n### 2.2 Python environment\n## 9. Pitfalls, install time\n'
    )
    assert anchors(page) == {"title", "binary-tensors", "22-python-environment", "9-pitfalls-install-time"}
