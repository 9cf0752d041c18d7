"""Render a runtime copy of the bundled model repository with per-machine parameters.

The bundled ``model_repository/`` stays untouched; the launcher renders a copy in
its work dir with ``tmm.*`` string parameters (model path, weights kind, context
size) set in each ``config.pbtxt``. The pbtxt edit is a small token-level transform
rather than a protobuf round trip: no protobuf dependency, and comments and layout
of the hand-written configs survive.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "config.pbtxt"
# Written into every rendered repository; render_repository only ever deletes a
# destination that carries it (or is empty), never an arbitrary directory.
MARKER_NAME = ".tritonmm-rendered"
SKIPPED_DIRS = frozenset({"__pycache__"})


class RepositoryError(ValueError):
    """The source repository or a config cannot be rendered as asked."""


# --- a minimal protobuf text-format tokenizer ---------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "string", "number", "punct", "other"
    text: str
    start: int
    end: int


_TOKEN_RE = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>[-+]?[0-9.][A-Za-z0-9_.+-]*)
    | (?P<punct>[{}\[\]<>:,;])
    | (?P<other>.)
    """,
    re.VERBOSE,
)
_OPEN = "{[<"
_CLOSE = "}]>"


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup or "other"
        if kind in ("space", "comment"):
            continue
        if kind == "other" and match.group() in ('"', "'"):
            line = text.count("\n", 0, match.start()) + 1
            raise RepositoryError(f"unterminated string on line {line}")
        tokens.append(_Token(kind, match.group(), match.start(), match.end()))
    return tokens


def _matching_close(tokens: list[_Token], open_index: int) -> int:
    """Index of the bracket closing the one at ``open_index``."""
    depth = 0
    for index in range(open_index, len(tokens)):
        token = tokens[index]
        if token.kind == "punct" and token.text in _OPEN:
            depth += 1
        elif token.kind == "punct" and token.text in _CLOSE:
            depth -= 1
            if depth == 0:
                return index
    raise RepositoryError(f"unbalanced brackets after offset {tokens[open_index].start}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unquote(literal: str) -> str:
    """Decode one text-format string literal (C escapes, octal/hex bytes are UTF-8)."""
    body, out, index = literal[1:-1], bytearray(), 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out += char.encode()
            index += 1
            continue
        nxt = body[index + 1]
        if nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[index + 1 :]).group()  # type: ignore[union-attr]
            out.append(int(digits, 8) & 0xFF)
            index += 1 + len(digits)
        elif nxt == "x":
            digits = re.match(r"[0-9A-Fa-f]{1,2}", body[index + 2 :]).group()  # type: ignore[union-attr]
            out.append(int(digits, 16))
            index += 2 + len(digits)
        else:
            out += _ESCAPES.get(nxt, nxt).encode()
            index += 2
    return out.decode("utf-8", errors="replace")


def _quote(value: str) -> str:
    """A double-quoted text-format literal; UTF-8 stays as is, controls are escaped."""
    escaped = []
    for char in value:
        if char in '\\"':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\{ord(char):03o}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


# --- config parameters ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Parameter:
    key: str
    value: str | None  # None when the entry has no string_value
    value_span: tuple[int, int] | None  # text span of the string_value literal(s)
    entry_span: tuple[int, int]  # text span of the entry's braces


def _string_after(tokens: list[_Token], index: int) -> tuple[str, tuple[int, int]] | None:
    """The string following ``name`` (at ``index``) and an optional ``:``.

    Adjacent literals concatenate, as in protobuf text format.
    """
    index += 1
    if index < len(tokens) and tokens[index].text == ":":
        index += 1
    parts = []
    while index < len(tokens) and tokens[index].kind == "string":
        parts.append(tokens[index])
        index += 1
    if not parts:
        return None
    return "".join(_unquote(part.text) for part in parts), (parts[0].start, parts[-1].end)


def _fields(tokens: list[_Token], start: int, stop: int) -> Iterable[int]:
    """Indices of the identifiers at the top nesting level of ``tokens[start:stop]``."""
    depth = 0
    for index in range(start, stop):
        token = tokens[index]
        if token.kind == "punct" and token.text in _OPEN:
            depth += 1
        elif token.kind == "punct" and token.text in _CLOSE:
            depth -= 1
        elif depth == 0 and token.kind == "ident":
            yield index


def _parse_entry(tokens: list[_Token], open_index: int, close_index: int) -> _Parameter:
    key: str | None = None
    value: tuple[str, tuple[int, int]] | None = None
    for index in _fields(tokens, open_index + 1, close_index):
        name = tokens[index].text
        if name == "key":
            found = _string_after(tokens, index)
            key = found[0] if found else None
        elif name == "value":
            brace = index + 1 + (tokens[index + 1].text == ":")
            if tokens[brace].text not in ("{", "<"):
                raise RepositoryError(f"parameter 'value' must be a message (offset {tokens[index].start})")
            inner_close = _matching_close(tokens, brace)
            for inner in _fields(tokens, brace + 1, inner_close):
                if tokens[inner].text == "string_value":
                    value = _string_after(tokens, inner)
    if key is None:
        raise RepositoryError(f"a parameters entry has no string key (offset {tokens[open_index].start})")
    return _Parameter(
        key=key,
        value=value[0] if value else None,
        value_span=value[1] if value else None,
        entry_span=(tokens[open_index].start, tokens[close_index].end),
    )


def _parameters(text: str) -> list[_Parameter]:
    """Every top-level ``parameters`` entry, in both ``parameters { }`` and
    ``parameters [ { }, { } ]`` forms; nested ones (e.g. in ``optimization``) are not
    model parameters and are ignored."""
    tokens = _tokenize(text)
    entries = []
    for index in _fields(tokens, 0, len(tokens)):
        if tokens[index].text != "parameters":
            continue
        start = index + 1 + (index + 1 < len(tokens) and tokens[index + 1].text == ":")
        if start >= len(tokens) or tokens[start].text not in ("{", "<", "["):
            raise RepositoryError(f"'parameters' must be followed by a message (offset {tokens[index].start})")
        if tokens[start].text != "[":
            entries.append(_parse_entry(tokens, start, _matching_close(tokens, start)))
            continue
        element, end = start + 1, _matching_close(tokens, start)
        while element < end:
            if tokens[element].text in ("{", "<"):
                close = _matching_close(tokens, element)
                entries.append(_parse_entry(tokens, element, close))
                element = close
            element += 1
    return entries


def model_parameters(config_text: str) -> dict[str, str]:
    """The model's ``parameters`` as ``{key: string_value}`` (the last entry of a key wins)."""
    return {entry.key: entry.value or "" for entry in _parameters(config_text)}


def parameter_entry(key: str, value: str) -> str:
    return f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}"


def set_parameters(config_text: str, values: Mapping[str, str]) -> str:
    """Set string parameters: replace the value of existing keys, append missing ones.

    An existing entry keeps its layout; only its string literal changes (the whole
    entry is rewritten only when it has no ``string_value`` to replace).
    """
    edits: list[tuple[int, int, str]] = []
    present = set()
    for entry in _parameters(config_text):
        if entry.key not in values:
            continue
        present.add(entry.key)
        new_value = str(values[entry.key])
        if entry.value_span is not None:
            edits.append((*entry.value_span, _quote(new_value)))
        else:
            brace_free = parameter_entry(entry.key, new_value).removeprefix("parameters ")
            edits.append((*entry.entry_span, brace_free))
    text = config_text
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    missing = [key for key in values if key not in present]
    if missing:
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(parameter_entry(key, str(values[key])) + "\n" for key in missing)
    return text


# --- rendering --------------------------------------------------------------------------------


def list_models(src: Path) -> list[str]:
    """Names of the model directories (those holding a config.pbtxt) in ``src``."""
    return sorted(d.name for d in src.iterdir() if d.is_dir() and (d / CONFIG_NAME).is_file())


def _is_virtualenv(path: Path) -> bool:
    return (path / "pyvenv.cfg").exists() or (path / "bin" / "activate").exists() or (path / "conda-meta").is_dir()


def _check_tree(model_dir: Path) -> None:
    """Refuse symlinks and virtualenvs inside a model dir.

    Triton walks every model dir to compare mtimes; a symlinked venv made it loop
    and stall for ~30 s. A venv belongs outside the repository.
    """
    for path in [model_dir, *model_dir.rglob("*")]:
        if any(part in SKIPPED_DIRS for part in path.relative_to(model_dir).parts):
            continue
        if path.is_symlink():
            raise RepositoryError(f"{path} is a symlink; model dirs must hold plain files (Triton walks them)")
        if path.is_dir() and _is_virtualenv(path):
            raise RepositoryError(f"{path} is a Python environment; keep environments outside the model repository")


def _prepare_dest(dest: Path) -> None:
    if dest.exists():
        if not dest.is_dir():
            raise RepositoryError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()) and not (dest / MARKER_NAME).exists():
            raise RepositoryError(f"refusing to clean {dest}: it is not empty and was not rendered by tritonmm_server")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / MARKER_NAME).write_text("Rendered by tritonmm_server.ops.repository; deleted and rebuilt on each launch.\n")


def _select(available: list[str], include: list[str] | None, overrides: Mapping[str, object]) -> list[str]:
    selected = available if include is None else list(dict.fromkeys(include))
    unknown = [name for name in [*selected, *overrides] if name not in available]
    if unknown:
        raise RepositoryError(f"unknown model(s) {', '.join(sorted(set(unknown)))}; available: {', '.join(available)}")
    not_rendered = [name for name in overrides if name not in selected]
    if not_rendered:
        raise RepositoryError(f"parameters given for model(s) not rendered: {', '.join(not_rendered)}")
    return selected


def render_repository(
    src: Path,
    dest: Path,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
    include: list[str] | None = None,
) -> list[str]:
    """Copy the model dirs of ``src`` (all, or those named in ``include``) into a
    clean ``dest`` and set the string parameters in ``overrides[model]``.

    Returns the rendered model names. ``__pycache__`` dirs are skipped; symlinks and
    virtualenvs inside model dirs are refused (see ``_check_tree``).
    """
    src, dest = Path(src).resolve(), Path(dest).resolve()
    overrides = overrides or {}
    if not src.is_dir():
        raise RepositoryError(f"model repository {src} does not exist")
    if dest == src or dest.is_relative_to(src) or src.is_relative_to(dest):
        raise RepositoryError(f"the rendered repository {dest} must not overlap the source {src}")
    models = _select(list_models(src), include, overrides)
    for name in models:
        _check_tree(src / name)
    _prepare_dest(dest)
    for name in models:
        shutil.copytree(src / name, dest / name, ignore=shutil.ignore_patterns(*SKIPPED_DIRS))
        config = dest / name / CONFIG_NAME
        config.write_text(set_parameters(config.read_text(), overrides.get(name, {})))
    return models
