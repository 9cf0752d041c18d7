"""What the project's Python files import, read with ``ast`` (nothing is executed).

Every import counts: at module level, inside a function (a lazy import is still a
dependency) and under ``if TYPE_CHECKING:`` (a module that names another's types depends
on it, and two modules that do so both ways are one module in two files). Calls of
``importlib.import_module("name")`` / ``__import__("name")`` with a literal name count too.

A plugin runs with its own folder as the working directory, so its modules are named
from there (``models.common``) and may import the core (``tritonmm``) by its top-level name;
the ``plugins/*/tritonmm`` links to the core are never followed.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tritonmm", "tritonmm_server", "devtools")  # importable from the repository root
PLUGINS = ROOT / "plugins"


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name as written (relative imports resolved)
    names: tuple[str, ...]  # for ``from m import a, b``: ("a", "b"); else ()
    line: int


def python_files(folder: Path) -> Iterator[Path]:
    """Real ``.py`` files under ``folder``: links are not followed, hidden and cache dirs skipped."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d != "__pycache__" and not (here / d).is_symlink()
        )
        for name in sorted(filenames):
            path = here / name
            if name.endswith(".py") and not path.is_symlink():
                yield path


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> Iterator[Import]:
    """Every import in ``path`` (module ``module``), wherever it sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            yield Import(_absolute(node, package), tuple(a.name for a in node.names), node.lineno)
        elif isinstance(node, ast.Call) and _dynamic_import_target(node):
            yield Import(_dynamic_import_target(node), (), node.lineno)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".") if package else []
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _dynamic_import_target(node: ast.Call) -> str:
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("__import__", "import_module")
    )
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return ""


# --- the project's import graph ------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    key: str  # unique across the project: "tritonmm.chat", "plugins/tools:tools.ocr"
    name: str  # the name it is imported by
    path: Path
    scope: str  # "" for the root packages, else the plugin folder ("plugins/tools")


def project_modules() -> list[Module]:
    modules = [
        Module(module_name(p, ROOT), module_name(p, ROOT), p, "")
        for package in PACKAGES
        for p in python_files(ROOT / package)
    ]
    for plugin in sorted(p for p in PLUGINS.iterdir() if p.is_dir()):
        scope = plugin.relative_to(ROOT).as_posix()
        for path in python_files(plugin):
            name = module_name(path, plugin)
            modules.append(Module(f"{scope}:{name}", name, path, scope))
    return modules


def import_graph(modules: list[Module]) -> dict[str, set[str]]:
    """``key -> keys it imports``; a ``from m import x`` where ``m.x`` is a module points at ``m.x``."""
    by_scope: dict[str, dict[str, str]] = {}
    for m in modules:
        by_scope.setdefault(m.scope, {})[m.name] = m.key
    shared = by_scope.get("", {})
    graph: dict[str, set[str]] = {}
    for m in modules:
        visible = {**shared, **by_scope.get(m.scope, {})}  # a plugin sees its own modules and the core
        edges: set[str] = set()
        for imp in imports_of(m.path, m.name):
            targets = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in visible]
            if len(targets) < len(imp.names) or not imp.names:
                targets.append(imp.module)
            edges.update(visible[t] for t in targets if t in visible and visible[t] != m.key)
        graph[m.key] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """The shortest loop through ``component[0]``, for the failure message: a -> b -> ... -> a."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return [*component, component[0]]
