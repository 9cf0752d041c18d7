"""Dify's four languages: the validator refuses a text without one, and the real packages have them all.

Dify's UI speaks en_US, zh_Hans, ja_JP and pt_BR; a missing translation silently shows English.
The fake plugin of tests/fake_plugins.py is fully translated, so each rule test takes away exactly
one thing and expects exactly one problem. The real packages are built and read back: every text
a user reads exists in all four languages, looks like its language, and each package carries the
translated readmes where the daemon looks for them.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.build_packages import build_plugin, discover_plugins
from devtools.pkgcheck import validate
from devtools.pkgcheck.translations import LANGUAGES, NOT_TEXT_KEYS
from tests.fake_plugins import edit, make_model_plugin, make_tool_plugin, problems_of, write_files

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")
KANA = re.compile(r"[\u3040-\u30ff]")


def test_a_text_without_one_language_is_refused(tmp_path: Path) -> None:
    plugin = make_model_plugin(tmp_path)
    edit(plugin / "models/llm/fake-chat.yaml", ", ja_JP: Seed（日本語）", "")
    problems = problems_of(plugin, tmp_path)
    assert len(problems) == 1, problems
    assert "models/llm/fake-chat.yaml: parameter_rules[1].label has no ja_JP text" in problems[0]


def test_a_tool_parameter_without_portuguese_is_refused(tmp_path: Path) -> None:
    plugin = make_tool_plugin(tmp_path)
    edit(plugin / "tools/echo.yaml", ", pt_BR: The text to echo (português)", "")
    problems = problems_of(plugin, tmp_path)
    assert len(problems) == 1, problems
    assert "tools/echo.yaml: parameters[0].human_description has no pt_BR text" in problems[0]


def test_an_empty_translation_is_refused(tmp_path: Path) -> None:
    plugin = make_model_plugin(tmp_path)
    edit(plugin / "manifest.yaml", "  zh_Hans: Fake Models（中文）", "  zh_Hans: ' '")
    problems = problems_of(plugin, tmp_path)
    assert len(problems) == 1 and "manifest.yaml: label has no zh_Hans text" in problems[0], problems


def test_a_text_over_1023_characters_is_refused(tmp_path: Path) -> None:
    plugin = make_tool_plugin(tmp_path)
    edit(plugin / "tools/echo.yaml", "zh_Hans: Echo（中文）", "zh_Hans: " + "回" * 1024)
    problems = problems_of(plugin, tmp_path)
    assert len(problems) == 1 and "identity.label is longer than 1023 characters in zh_Hans" in problems[0], problems


def test_a_language_the_daemon_drops_is_refused(tmp_path: Path) -> None:
    plugin = make_model_plugin(tmp_path)
    edit(plugin / "provider/fake.yaml", "label: {en_US: Fake,", "label: {de_DE: Falsch, en_US: Fake,")
    problems = problems_of(plugin, tmp_path)
    assert len(problems) == 1 and "label has ['de_DE'], which the daemon drops" in problems[0], problems


def test_icons_need_no_translation(tmp_path: Path) -> None:
    plugin = make_model_plugin(tmp_path)
    assert "icon_small: {en_US: icon.svg}\n" in (plugin / "provider/fake.yaml").read_text()
    assert problems_of(plugin, tmp_path) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("README.zh_Hans.md", "the daemon reads only readme/README_<lang>.md"),
        ("README_de_DE.md", "de_DE is not one of Dify's languages"),
    ],
)
def test_readmes_the_daemon_would_not_show_are_refused(tmp_path: Path, name: str, expected: str) -> None:
    plugin = make_model_plugin(tmp_path)
    write_files(plugin, {"readme/README_zh_Hans.md": "# 假插件\n", f"readme/{name}": "# x\n"})
    problems = problems_of(plugin, tmp_path)
    assert len(problems) == 1 and f"readme/{name}: {expected}" in problems[0], problems


# --------------------------------------------------------------------------------------------
# The real packages
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_packages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("dist")
    return [build_plugin(plugin, out).path for plugin in discover_plugins(ROOT / "plugins")]


def i18n_texts(node: Any, key: str = "") -> Iterator[dict[str, str]]:
    """Every translatable I18n object of a YAML document (what the validator checks)."""
    if isinstance(node, dict):
        if "en_US" in node and key not in NOT_TEXT_KEYS:
            yield node
            return
        for child_key, child in node.items():
            yield from i18n_texts(child, str(child_key))
    elif isinstance(node, list):
        for child in node:
            yield from i18n_texts(child, key)


def test_real_packages_are_written_in_four_languages(real_packages: list[Path]) -> None:
    assert len(real_packages) == 2
    for package in real_packages:
        assert validate(package) == []
        with zipfile.ZipFile(package) as archive:
            documents = [yaml.safe_load(archive.read(n)) for n in archive.namelist() if n.endswith(".yaml")]
        texts = [text for doc in documents for text in i18n_texts(doc)]
        assert len(texts) > 20, package.name
        for text in texts:
            assert set(text) == set(LANGUAGES), text
            if len(text["en_US"].split()) >= 3:  # a sentence, not a name like "MP3" or a URL
                assert CJK.search(text["zh_Hans"]), text
                assert KANA.search(text["ja_JP"]), text  # Japanese, not Chinese copied over
                assert text["pt_BR"] != text["en_US"], text


def test_real_packages_carry_translated_readmes(real_packages: list[Path]) -> None:
    for package in real_packages:
        with zipfile.ZipFile(package) as archive:
            english = archive.read("README.md").decode()
            sections = len(re.findall(r"^## ", english, flags=re.MULTILINE))
            for language in LANGUAGES[1:]:
                readme = archive.read(f"readme/README_{language}.md").decode()
                # Kept current: every English section has its translation.
                assert len(re.findall(r"^## ", readme, flags=re.MULTILINE)) == sections, (package.name, language)
                assert re.search(r"^# ", readme, flags=re.MULTILINE)
