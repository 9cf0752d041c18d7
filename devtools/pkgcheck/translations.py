"""Checks that every text a Dify user reads is written in each of Dify's four UI languages.

The daemon's I18nObject keeps en_US, zh_Hans, ja_JP and pt_BR (§1.8) and the SDK fills a missing one
with the English text, so a forgotten translation shows English in a Chinese, Japanese or Portuguese
UI without any error. Every mapping that holds ``en_US`` in the package's YAML documents is such an
object, except icons and URLs (file names and links, not texts). Localised readmes must be named so
that the daemon finds them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from devtools.pkgcheck.common import R_I18N, R_README, PackageFileError, PackageView

LANGUAGES = ("en_US", "zh_Hans", "ja_JP", "pt_BR")
MAX_TEXT_CHARS = 1023  # I18nObject: validate:"lt=1024" on every language
NOT_TEXT_KEYS = frozenset(
    {"icon", "icon_dark", "icon_small", "icon_large", "icon_small_dark", "icon_large_dark", "url"}
)
README_RE = re.compile(r"README_([a-z]{2}_[A-Za-z]{2,})\.md")  # the daemon's readmeRegexp
SKIPPED_DIRS = ("wheels/",)


def check_translations(pkg: PackageView) -> Iterator[str]:
    for path in pkg.files:
        if path.endswith(".yaml") and not path.startswith(SKIPPED_DIRS):
            try:
                doc = pkg.load_yaml(path, R_I18N)
            except PackageFileError:
                continue  # a file the daemon reads reports its parse error in its own check
            yield from _check_node(doc, path, "")
    yield from _check_readmes(pkg)


def _check_node(node: Any, where: str, dotted: str) -> Iterator[str]:
    if isinstance(node, dict):
        key = dotted.rsplit(".", 1)[-1].split("[", 1)[0]
        if "en_US" in node and key not in NOT_TEXT_KEYS:
            yield from _check_i18n(node, where, dotted)
            return
        for child_key, child in node.items():
            yield from _check_node(child, where, f"{dotted}.{child_key}" if dotted else str(child_key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _check_node(child, where, f"{dotted}[{index}]")


def _check_i18n(node: dict[str, Any], where: str, dotted: str) -> Iterator[str]:
    missing = [lang for lang in LANGUAGES if not (isinstance(node.get(lang), str) and node[lang].strip())]
    if missing:
        yield f"{where}: {dotted} has no {', '.join(missing)} text [{R_I18N}]"
    too_long = [lang for lang in LANGUAGES if isinstance(node.get(lang), str) and len(node[lang]) > MAX_TEXT_CHARS]
    if too_long:
        yield f"{where}: {dotted} is longer than {MAX_TEXT_CHARS} characters in {', '.join(too_long)} [{R_I18N}]"
    unknown = sorted(str(lang) for lang in node if lang not in LANGUAGES)
    if unknown:
        yield f"{where}: {dotted} has {unknown}, which the daemon drops (it keeps {', '.join(LANGUAGES)}) [{R_I18N}]"


def _check_readmes(pkg: PackageView) -> Iterator[str]:
    for path in pkg.files:
        if not path.startswith("readme/"):
            continue
        match = README_RE.fullmatch(path[len("readme/") :])
        if not match:
            yield f"{path}: the daemon reads only readme/README_<lang>.md, e.g. readme/README_zh_Hans.md [{R_README}]"
        elif match.group(1) not in LANGUAGES[1:]:
            yield f"{path}: {match.group(1)} is not one of Dify's languages {', '.join(LANGUAGES[1:])} [{R_README}]"
