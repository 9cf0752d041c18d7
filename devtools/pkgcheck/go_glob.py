"""Go filepath.Match patterns as Python regexes, so predefined-model globs match what the daemon matches."""

from __future__ import annotations

import re


def go_glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go ``filepath.Match`` pattern: ``*``/``?`` never cross ``/``; no ``**``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            i += 1
            if i == len(pattern):
                raise ValueError("syntax error in pattern (trailing backslash)")
            out.append(re.escape(pattern[i]))
        elif char == "[":
            i, char_class = _go_char_class(pattern, i + 1)
            out.append(char_class)
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(f"syntax error in pattern ({exc})") from exc


def _go_char_class(pattern: str, i: int) -> tuple[int, str]:
    """Translate ``[...]`` starting after the ``[``; returns the index of ``]`` and a regex class."""
    negate = pattern.startswith("^", i)
    i += negate
    body: list[str] = []
    while i < len(pattern) and pattern[i] != "]":
        if pattern[i] == "\\":
            i += 1
            if i == len(pattern):
                break
            body.append(re.escape(pattern[i]))
        else:
            body.append("-" if pattern[i] == "-" else re.escape(pattern[i]))
        i += 1
    if i >= len(pattern) or not body:
        raise ValueError("syntax error in pattern (bad [ ] class)")
    return i, f"[{'^/' if negate else ''}{''.join(body)}]"
